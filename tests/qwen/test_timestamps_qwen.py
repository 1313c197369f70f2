"""Word timestamps for Qwen3 voices, which do not time their words: a speech recognizer (real tiny.en weights)
hears each sentence beside the audio path. The tiny random checkpoints speak noise, so what is checked is the
plumbing every client relies on: every word of the input, in order, exact offsets, times inside the audio,
each sentence's words before the next sentence's audio, on SSE and both sockets. (Recognition accuracy is
checked on the embedded voice's real speech: tests/engine/test_embedded_timing.py.)"""

from __future__ import annotations

import pytest

from tests.server import start_server
from tests.word_timestamps import (
    SENTENCE_WORDS,
    TEXT,
    WORDS,
    check_words,
    speak_socket_words,
    sse_batches,
    sse_events,
    stream_socket_sentences,
    words_before_next_sentence,
)

FRAME = 1920  # samples per 12.5 Hz codec frame
SHORT = "Hello there. Follow along, please!"
SHORT_WORDS = [["Hello", "there"], ["Follow", "along", "please"]]


@pytest.fixture(scope="module")
def qwen_hearing_server(tmp_path_factory, tiny_custom_voice_dir):
    from tests.asr_model import tiny_en

    server = start_server(tmp_path_factory.mktemp("qwen_words"), "--engine", "qwen", "--qwen-custom-voice",
                          str(tiny_custom_voice_dir), "--qwen-threads", "1", "--asr-model", str(tiny_en()),
                          "--asr-threads", "1", "--ws-speak-lead", "0", env={"OMP_NUM_THREADS": "1"})
    yield server
    server.stop()


def test_sse_words_for_a_qwen_voice(qwen_hearing_server):
    """Each sentence exactly 30 frames (2.4 s): every sentence's words lie inside its own 2.4 s, the sentence
    boundaries being the engine's, exact."""
    events = sse_events(qwen_hearing_server.v1 + "/audio/speech", {
        "model": "qwen3-tts", "voice": "ryan", "input": TEXT, "stream_format": "sse", "response_format": "pcm",
        "timestamp_granularities": ["word"], "seed": 1, "max_new_tokens": 31, "min_new_tokens": 31})
    audio = b"".join(payload for kind, payload in events if kind == "audio")
    assert len(audio) == 3 * 30 * FRAME * 2
    batches = [p for kind, p in events if kind == "words"]
    check_words(batches, TEXT, WORDS, len(audio) / 48000, SENTENCE_WORDS)
    words_before_next_sentence(sse_batches(events, 48000))
    for k, batch in enumerate(batches):
        assert all(2.4 * k - 1e-3 <= w["start"] <= w["end"] <= 2.4 * (k + 1) + 1e-3 for w in batch), (k, batch)


async def test_stream_socket_words_for_a_qwen_voice(qwen_hearing_server):
    sentences = await stream_socket_sentences(qwen_hearing_server.ws_url, SHORT, model="qwen3-tts", voice="ryan",
                                              seed=2)
    assert [s["sentence_text"] for s in sentences] == ["Hello there.", "Follow along, please!"]
    for sentence, expected in zip(sentences, SHORT_WORDS, strict=True):
        check_words([sentence["words"]], sentence["sentence_text"], expected, len(sentence["audio"]) / 48000)


async def test_speak_socket_words_for_a_qwen_voice(qwen_hearing_server):
    batches, audio = await speak_socket_words(qwen_hearing_server.ws_url, SHORT, voice="ryan")
    check_words([words for _, words in batches], SHORT, [w for s in SHORT_WORDS for w in s], len(audio) / 48000,
                [len(s) for s in SHORT_WORDS])
    words_before_next_sentence([(received / 48000, words) for received, words in batches])
