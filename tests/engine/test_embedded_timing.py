"""The embedded engine times its own words (phoneme durations from its model), and word timestamps from a
speech recognizer hearing its real speech agree with them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import numpy as np

from engine.base import AudioChunk, SegmentEnd, SynthesisRequest
from engine.embedded import VOICE, EmbeddedEngine
from engine.embedded_timing import DURATIONS, with_output
from engine.text import split_sentences
from engine.words import SentenceWords, WordTimer
from engine.words.split import split_words

TEXT = ("The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, every single morning. "
        "On the 3rd of March, 1,250 people paid $9.99 each. Captions help people follow along.")


async def items_of(engine: EmbeddedEngine, text: str, marks: bool, seed: int = 5) -> list[AudioChunk | SegmentEnd]:
    return [item async for item in engine.synthesize(SynthesisRequest(text=text, voice=VOICE, seed=seed,
                                                                      segment_marks=marks))]


def test_the_duration_output_is_added_to_the_graph_bytes():
    import onnxruntime as ort
    from hibari.voices import voice_path

    with open(voice_path("heart", download_missing=False), "rb") as f:
        model = f.read()
    outputs = [o.name for o in ort.InferenceSession(with_output(model, DURATIONS)).get_outputs()]
    assert outputs == ["lh", "theta", "ln", "lr", "phi", "f0", DURATIONS]


async def test_marks_change_nothing_in_the_audio_and_end_each_segment(engine):
    assert engine.times_words
    plain = await items_of(engine, TEXT, marks=False)
    marked = await items_of(engine, TEXT, marks=True)
    assert all(isinstance(i, AudioChunk) for i in plain)
    audio = [i for i in marked if isinstance(i, AudioChunk)]
    assert len(audio) == len(plain) and all(np.array_equal(a.samples, b.samples) for a, b in zip(audio, plain, strict=True))
    marks = [i for i in marked if isinstance(i, SegmentEnd)]
    assert [m.text for m in marks] == split_sentences(TEXT) and [m.index for m in marks] == [0, 1, 2, 3]
    assert isinstance(marked[-1], SegmentEnd)
    # Each segment's words lie inside that segment's audio, in order.
    samples = 0
    for item in marked:
        if isinstance(item, AudioChunk):
            samples += len(item.samples)
            continue
        spoken = [w.text for w in item.words]
        assert spoken[:3] == split_sentences(TEXT)[item.index].split()[:3]
        starts = [w.start for w in item.words]
        assert starts == sorted(starts) and all(w.start < w.end for w in item.words)
        assert item.words[-1].end <= samples / 24000 + 1e-6


async def test_a_sentence_hibari_splits_at_its_clauses_is_timed_across_the_pieces():
    """Over 400 phonemes, hibari synthesizes a sentence in pieces: the tokens still line up with them."""
    text = ", ".join(["the quick brown fox jumps over the lazy dog"] * 12) + "."
    engine = EmbeddedEngine(max_segment_chars=1000)
    await engine.start()
    try:
        marked = await items_of(engine, text, marks=True)
    finally:
        await engine.close()
    assert sum(isinstance(i, AudioChunk) for i in marked) > 1  # several pieces, one segment
    (mark,) = [i for i in marked if isinstance(i, SegmentEnd)]
    assert [w.text for w in mark.words] == text.replace(",", "").replace(".", "").split()
    ends = [w.end for w in mark.words]
    assert ends == sorted(ends) and ends[-1] <= sum(len(i.samples) for i in marked if isinstance(i, AudioChunk)) / 24000


async def timed(engine: EmbeddedEngine, text: str, hear=None) -> tuple[list[SentenceWords], float]:
    """Words from WordTimer over the engine's stream; with `hear`, the engine's own timing is withheld so the
    recognizer times them from the audio instead."""

    async def items() -> AsyncIterator[AudioChunk | SegmentEnd]:
        async for item in engine.synthesize(SynthesisRequest(text=text, voice=VOICE, seed=5, segment_marks=True)):
            yield dataclasses.replace(item, words=None) if hear and isinstance(item, SegmentEnd) else item

    sentences, samples = [], 0
    async for item in WordTimer(text, hear).timed(items()):
        if isinstance(item, SentenceWords):
            sentences.append(item)
        else:
            samples += len(item.samples)
    return sentences, samples / 24000


async def test_every_word_of_the_input_is_timed_with_exact_offsets(engine):
    sentences, seconds = await timed(engine, TEXT)
    assert [s.index for s in sentences] == [0, 1, 2, 3]
    words = [w for s in sentences for w in s.words]
    assert [(w.char_start, w.char_end) for w in words] == [(w.start, w.end) for w in split_words(TEXT)]
    assert all(TEXT[w.char_start:w.char_end] == w.word for w in words)
    assert all(0 <= a.start <= a.end <= b.start for a, b in zip(words, words[1:], strict=False))
    assert words[-1].end <= seconds
    money = next(w for w in words if w.word == "$9.99")  # read as "nine dollars and ninety-nine cents"
    assert money.end - money.start > 1.0


async def test_recognized_word_times_agree_with_the_engine_own(engine):
    """The recognizer (real tiny.en weights) hearing the embedded voice's real speech, aligned onto the
    input: its word starts are within 80 ms of the model's own durations (median)."""
    from engine.asr import TranscriptionService
    from engine.words.hearing import hearing
    from tests.asr_model import recognizer

    text = ("The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, every single "
            "morning. Captions help people follow along.")
    native, _ = await timed(engine, text)
    heard, _ = await timed(engine, text, hearing(TranscriptionService(recognizer())))
    a = [w for s in native for w in s.words]
    b = [w for s in heard for w in s.words]
    assert [(w.char_start, w.char_end) for w in a] == [(w.char_start, w.char_end) for w in b]
    errors = [abs(x.start - y.start) for x, y in zip(a, b, strict=True)]
    assert np.median(errors) <= 0.08, errors


async def test_word_starts_are_where_their_sound_starts(engine):
    """Words spoken one to a sentence: each word's start is within 50 ms of where its sound starts, found
    from the same word synthesized alone (durations do not depend on the seed, so the clips line up)."""
    from tests.asr_model import sound_bounds

    words = ["Morning", "Garden", "Silver", "Table", "Paper", "Kitchen", "Window", "Yellow"]
    sentences, _ = await timed(engine, " ".join(f"{w}." for w in words))
    timed_words = [w for s in sentences for w in s.words]
    offset, errors = 0, []
    for word, timed_word in zip(words, timed_words, strict=True):
        clip = np.concatenate([i.samples for i in await items_of(engine, f"{word}.", marks=False, seed=1)])
        errors.append(abs(timed_word.start - (offset + sound_bounds(clip, 24000)[0]) / 24000))
        offset += len(clip)
    assert max(errors) <= 0.05 and np.median(errors) <= 0.03, errors


async def test_a_stream_closed_while_its_words_are_being_heard_stops_cleanly(monkeypatch):
    """The recognizer's path through SpeechService, on an embedded engine whose model gives no durations
    (as another hibari build's graph might not: its synthesis is then hibari's own): words arrive while the
    next sentence is being made; closing the stream then (a client gone) raises nothing, stops the engine
    and gives the slots back."""
    import asyncio

    from engine import embedded_timing
    from engine.asr import TranscriptionService
    from engine.service import SpeechParams, SpeechService
    from tests.asr_model import recognizer

    monkeypatch.setattr(embedded_timing, "DURATIONS", "/no/such/tensor")
    engine = EmbeddedEngine()
    transcriber = TranscriptionService(recognizer())
    service = SpeechService([engine], transcriber=transcriber)
    await service.start()
    try:
        assert not engine.times_words
        stream = await service.open(SpeechParams(text=TEXT + " " + TEXT, timestamps="timestamps"))
        first_words = None
        async for item in stream:
            if isinstance(item, SentenceWords):
                first_words = item
                break
        assert first_words is not None and [w.word for w in first_words.words][:3] == ["The", "quick", "brown"]
        timed = stream._timed
        await stream.aclose()
        assert timed is not None and timed.ag_frame is None  # the timer's generator is done, not left to the GC
        for _ in range(100):
            if engine.workers[0].load == 0 and transcriber.admission.active == 0:
                break
            await asyncio.sleep(0.05)
        assert engine.workers[0].load == 0 and transcriber.admission.active == 0
        assert service.admission["embedded"].active == 0
    finally:
        await service.close()
