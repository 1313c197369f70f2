"""Word timestamps on both speech sockets, embedded voice, live gateway: `audio.timestamps` per sentence on
/v1/audio/speech/stream, `words` before `audio_end` on /api/v1/speak."""

from __future__ import annotations

from tests.server import Server
from tests.word_timestamps import (
    SHORT,
    SHORT_WORDS,
    check_words,
    speak_socket_words,
    stream_socket_sentences,
    words_before_next_sentence,
)


async def test_stream_socket_sends_each_sentence_words_before_its_audio_done(embedded_server: Server) -> None:
    sentences = await stream_socket_sentences(embedded_server.ws_url, SHORT, voice="alloy", speed=1.5)
    assert [s["sentence_text"] for s in sentences] == ["Hello there, Dr. Smith!",
                                                       "Captions—karaoke style—help everyone follow along."]
    for sentence, expected in zip(sentences, SHORT_WORDS, strict=True):
        # Times from the sentence's own first audio (stretched by speed 1.5), offsets into its sentence_text.
        check_words([sentence["words"]], sentence["sentence_text"], expected, len(sentence["audio"]) / 2 / 24000)
    plain = await stream_socket_sentences(embedded_server.ws_url, SHORT, voice="alloy")
    for fast, normal in zip(sentences[1]["words"], plain[1]["words"], strict=True):
        assert abs(fast["start"] - normal["start"] / 1.5) <= 0.002


async def test_speak_socket_sends_words_before_audio_end(embedded_server: Server) -> None:
    text = "  " + SHORT  # offsets index the text as sent, leading spaces and all
    batches, audio = await speak_socket_words(embedded_server.ws_url, text, sampleRate=16000)
    check_words([words for _, words in batches], text, [w for s in SHORT_WORDS for w in s], len(audio) / 2 / 16000,
                [len(s) for s in SHORT_WORDS])
    words_before_next_sentence([(received / 2 / 16000, words) for received, words in batches])


async def test_sockets_without_timestamps_send_no_words(embedded_server: Server) -> None:
    import json

    import websockets

    async with websockets.connect(embedded_server.ws_url + "/api/v1/speak") as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "speak", "text": "Just audio."}))
        while not isinstance(raw := await ws.recv(), str) or json.loads(raw)["type"] != "audio_end":
            assert isinstance(raw, bytes) or json.loads(raw)["type"] != "words"
