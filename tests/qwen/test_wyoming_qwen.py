"""The Wyoming server on the Qwen3 engine (tiny random checkpoint): streamed audio per sentence."""

from __future__ import annotations

import pytest
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from tests.server import free_port, start_server
from tests.wyoming.test_wyoming import client, read, read_utterance


@pytest.fixture(scope="module")
def qwen_wyoming(tmp_path_factory, tiny_custom_voice_dir, tiny_voice_design_dir):
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("qwen_wyoming"), "--engine", "qwen", "--qwen-custom-voice",
                          str(tiny_custom_voice_dir), "--qwen-voice-design", str(tiny_voice_design_dir),
                          "--qwen-threads", "1", "--wyoming-port", str(port), "--wyoming-language", "de",
                          env={"OMP_NUM_THREADS": "1"})
    server.wyoming_port = port
    yield server
    server.stop()


async def test_qwen_speaker_over_wyoming(qwen_wyoming) -> None:
    async with client(qwen_wyoming) as c:
        await c.write_event(Synthesize(text="Hello from Qwen.", voice=SynthesizeVoice(name="ryan")).event())
        samples = await read_utterance(c)
        assert len(samples) > 0 and len(samples) % 1920 == 0  # whole 12.5 Hz codec frames at 24 kHz
        await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="vivian")).event())
        for piece in ("First sen", "tence. Second one", " here."):
            await c.write_event(SynthesizeChunk(text=piece).event())
        await c.write_event(SynthesizeStop().event())
        sentences = [await read_utterance(c), await read_utterance(c)]
        assert all(len(s) > 0 for s in sentences)
        assert SynthesizeStopped.is_type((await read(c)).type)


async def test_voices_of_any_language_are_listed_under_the_servers_one(qwen_wyoming) -> None:
    async with client(qwen_wyoming) as c:
        await c.write_event(Describe().event())
        [program] = Info.from_event(await read(c)).tts
    languages = {v.name: v.languages for v in program.voices}
    # The shipped designed voices speak any language ("auto"): listed under --wyoming-language only, so
    # the default language Home Assistant derives from the list is that one, not an arbitrary one.
    assert languages["narrator-design"] == ["de"] and languages["bright-design"] == ["de"]
    assert all(len(codes) == 1 for codes in languages.values())
    assert languages["ryan"] == ["en"]  # a speaker keeps its own language
