"""What every door's word timestamps must satisfy, checked from the client's side; and an SSE reader.

    from tests.word_timestamps import TEXT, WORDS, check_words, sse_events
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import websockets

# Three sentences; words that are read differently from how they are written; punctuation around words.
TEXT = ("Hello there, Dr. Smith! On the 3rd of March, 1,250 people paid $9.99 each. "
        "Captions—karaoke style—help everyone follow along.")
WORDS = ["Hello", "there", "Dr", "Smith", "On", "the", "3rd", "of", "March", "1,250", "people", "paid", "$9.99",
         "each", "Captions", "karaoke", "style", "help", "everyone", "follow", "along"]
SENTENCE_WORDS = [4, 10, 7]  # words per sentence of TEXT


def check_words(batches: list[list[dict]], text: str, expected: list[str], seconds: float,
                per_sentence: list[int] | None = None) -> list[dict]:
    """Every expected word, once, in order, its offsets slicing `text` exactly; times in order, never
    overlapping, inside the audio's `seconds`. Returns the words, all batches joined."""
    words = [w for batch in batches for w in batch]
    assert [w["word"] for w in words] == expected
    assert all(text[w["char_start"]:w["char_end"]] == w["word"] for w in words)
    if per_sentence is not None:
        assert [len(b) for b in batches] == per_sentence
    previous_end = 0.0
    for w in words:
        assert previous_end <= w["start"] <= w["end"] <= seconds + 1e-3, (w, seconds)
        previous_end = w["end"]
    return words


def sse_events(url: str, body: dict[str, Any], **kwargs: Any) -> list[tuple[str, Any]]:
    """POST an SSE speech request: [("audio", bytes) | ("words", [...]) | ("done", usage)] in arrival order."""
    out: list[tuple[str, Any]] = []
    with httpx.stream("POST", url, json=body, timeout=120, **kwargs) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            kind = event["type"]
            if kind == "speech.audio.delta":
                out.append(("audio", base64.b64decode(event["audio"])))
            elif kind == "speech.timestamps.delta":
                assert set(event) == {"type", "words"}
                out.append(("words", event["words"]))
            elif kind == "speech.audio.done":
                out.append(("done", event["usage"]))
            else:
                raise AssertionError(f"unexpected event {event}")
    assert out[-1][0] == "done"
    return out


def words_before_next_sentence(batches: list[tuple[float, list[dict]]]) -> None:
    """Each sentence's words arrive before any audio of the next sentence: `batches` are (seconds of audio
    received before the words came, the words); when sentence k's words come, the audio received so far
    ends before sentence k+1's first word starts (its audio starts earlier still)."""
    for (heard, _), (_, after) in zip(batches, batches[1:], strict=False):
        assert heard <= after[0]["start"], (heard, after[0])


def sse_batches(events: list[tuple[str, Any]], bytes_per_second: float) -> list[tuple[float, list[dict]]]:
    """`sse_events` as `words_before_next_sentence` reads them."""
    received, batches = 0, []
    for kind, payload in events:
        if kind == "audio":
            received += len(payload)
        elif kind == "words":
            batches.append((received / bytes_per_second, payload))
    return batches


# -- the sockets -------------------------------------------------------------------------------------------
SHORT = "Hello there, Dr. Smith! Captions—karaoke style—help everyone follow along."
SHORT_WORDS = [["Hello", "there", "Dr", "Smith"], ["Captions", "karaoke", "style", "help", "everyone", "follow", "along"]]


async def _receive(ws: Any, timeout: float = 60) -> Any:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    return raw if isinstance(raw, bytes) else json.loads(raw)


async def stream_socket_sentences(ws_url: str, text: str, **config: Any) -> list[dict]:
    """`/v1/audio/speech/stream` with `timestamps: true`: each sentence's audio.start (with its audio and its
    words attached), checking that its audio.timestamps came between its audio.start and its audio.done."""
    async with websockets.connect(ws_url + "/v1/audio/speech/stream") as ws:
        await ws.send(json.dumps({"type": "session.config", "timestamps": True, **config}))
        for i in range(0, len(text), 9):  # LLM-like pieces, split anywhere
            await ws.send(json.dumps({"type": "input.text", "text": text[i:i + 9]}))
        await ws.send(json.dumps({"type": "input.done"}))
        out: list[dict] = []
        current: dict | None = None
        while True:
            message = await _receive(ws)
            if isinstance(message, bytes):
                assert current is not None, "audio outside audio.start … audio.done"
                current["audio"] += message
                continue
            kind = message["type"]
            if kind == "audio.start":
                assert current is None
                current = {**message, "audio": b"", "words": None}
            elif kind == "audio.timestamps":
                assert current is not None and message["sentence_index"] == current["sentence_index"]
                assert current["words"] is None, "one audio.timestamps per sentence"
                current["words"] = message["words"]
            elif kind == "audio.done":
                assert current is not None and current["words"] is not None, "words before audio.done"
                assert message["error"] is False
                out.append(current)
                current = None
            elif kind == "session.done":
                return out
            else:
                raise AssertionError(f"unexpected {message}")


async def speak_socket_words(ws_url: str, text: str, **start: Any) -> tuple[list[tuple[int, list[dict]]], bytes]:
    """`/api/v1/speak` with `timestamps: true`: the `words` events (with the audio bytes received before each)
    and all the audio, up to `audio_end`, which must come after every `words` event."""
    async with websockets.connect(ws_url + "/api/v1/speak") as ws:
        assert (await _receive(ws))["type"] == "ready"
        await ws.send(json.dumps({"type": "start", "timestamps": True, **start}))
        assert (await _receive(ws))["type"] == "started"
        await ws.send(json.dumps({"type": "speak", "text": text}))
        audio = b""
        batches: list[tuple[int, list[dict]]] = []
        while True:
            message = await _receive(ws)
            if isinstance(message, bytes):
                audio += message
            elif message["type"] == "words":
                batches.append((len(audio), message["words"]))
            elif message["type"] == "audio_end":
                return batches, audio
            else:
                raise AssertionError(f"unexpected {message}")
