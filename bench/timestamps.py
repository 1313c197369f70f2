"""Word timestamps for synthesized speech: what they cost, and how right they are. Prints one JSON object.

    python -m bench.timestamps                  # starts an embedded gateway (with the packaged tiny.en)
    python -m bench.timestamps --runs 20

cost: POST /v1/audio/speech with stream_format "sse" on the embedded voice, from the client's side, with
and without `timestamp_granularities: ["word"]` (runs alternate; medians): time to the first audio event
and to `speech.audio.done`. With --qwen, the same for a Qwen3 CustomVoice speaker on a random checkpoint
of --qwen-size (noise, but the real amount of work), whose words the recognizer times.

accuracy: the speech endpoint's word start times (the embedded engine's own, from its phoneme durations)
against two references:
- words_alone: input "Morning. Garden. ..." speaks each word as a sentence of its own. Each word is also
  synthesized alone (its own request): the clips' lengths add up to the joined audio (checked), so each
  word's true start is its clip's offset plus where the clip's sound starts (energy onset).
- recognizer: multi-word sentences; the same audio sent to POST /v1/audio/transcriptions (verbose_json,
  word granularity), words matched in order.
recognizer_path: how Qwen voices are timed (a recognizer hears each sentence, words aligned onto the input),
run in this process on the embedded voice's real speech with the engine's own timing withheld, against
that timing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import difflib
import io
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway import gateway  # noqa: E402

RATE = 24_000
TEXT = ("The morning train left the station a little after seven. Most of the passengers were still half asleep. "
        "Outside the windows, the fields were covered with a thin layer of frost. A conductor walked slowly "
        "through the carriages, checking tickets. Nobody seemed to be in any hurry at all.")
WORDS = ("morning garden silver window yellow people number basket river orange paper music "
         "table winter doctor mountain pencil kitchen animal button forest letter camera summer").split()


def sse(client, body: dict) -> tuple[float, float, bytes, list[dict]]:
    """(seconds to the first audio event, seconds to speech.audio.done, pcm audio, words)."""
    t0 = time.perf_counter()
    first = None
    audio, words = b"", []
    with client.stream("POST", "/v1/audio/speech", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "speech.audio.delta":
                first = first or time.perf_counter() - t0
                audio += base64.b64decode(event["audio"])
            elif event["type"] == "speech.timestamps.delta":
                words += event["words"]
            elif event["type"] == "speech.audio.done":
                return first or 0.0, time.perf_counter() - t0, audio, words
    raise RuntimeError("stream ended without speech.audio.done")


def body(text: str, timestamps: bool, seed: int = 0) -> dict:
    return {"model": "tts-1", "voice": "alloy", "input": text, "seed": seed, "stream_format": "sse",
            "response_format": "pcm", **({"timestamp_granularities": ["word"]} if timestamps else {})}


def pcm(audio: bytes) -> np.ndarray:
    return np.frombuffer(audio, "<i2").astype(np.float32) / 32768.0


def cost(client, runs: int, **extra) -> dict:
    for timestamps in (False, True):  # warm-up
        sse(client, {**body(TEXT, timestamps), **extra})
    samples: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    audio_s = 0.0
    for i in range(runs):
        for timestamps in ((False, True) if i % 2 == 0 else (True, False)):
            first, total, audio, _ = sse(client, {**body(TEXT, timestamps, seed=i), **extra})
            samples[timestamps].append((first, total))
            audio_s = len(audio) / 2 / RATE
    out: dict = {"runs": runs, "audio_s": round(audio_s, 2), "sentences": 5}
    for timestamps, key in ((False, "without"), (True, "with")):
        firsts, totals = zip(*samples[timestamps], strict=True)
        out[key] = {"first_audio_ms": round(statistics.median(firsts) * 1000, 1),
                    "total_ms": round(statistics.median(totals) * 1000, 1)}
    out["first_audio_change_ms"] = round(out["with"]["first_audio_ms"] - out["without"]["first_audio_ms"], 1)
    out["total_change_pct"] = round(100 * (out["with"]["total_ms"] / out["without"]["total_ms"] - 1), 1)
    return out


def summary(errors: list[float], expected: int) -> dict:
    ms = sorted(abs(e) * 1000 for e in errors)
    return {"words_matched": len(ms), "words": expected, "median_ms": round(statistics.median(ms), 1),
            "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1), "max_ms": round(ms[-1], 1),
            "within_80ms": round(sum(e <= 80 for e in ms) / len(ms), 3)}


def words_alone(client, trials: int) -> dict:
    from tests.asr_model import sound_bounds

    errors: list[float] = []
    total, lengths_match = 0, True
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        words = [str(w).capitalize() for w in rng.choice(WORDS, size=8, replace=False)]
        _, _, audio, timed = sse(client, body(" ".join(f"{w}." for w in words), True, seed=trial))
        truth, at = [], 0
        for word in words:
            _, _, clip_bytes, _ = sse(client, body(f"{word}.", False, seed=trial))
            clip = pcm(clip_bytes)
            truth.append((at + sound_bounds(clip, RATE)[0]) / RATE)
            at += len(clip)
        lengths_match &= at == len(audio) // 2
        assert [w["word"] for w in timed] == words
        errors += [w["start"] - t for w, t in zip(timed, truth, strict=True)]
        total += len(words)
    return {**summary(errors, total), "clip_lengths_add_up": lengths_match,
            "mean_signed_ms": round(1000 * float(np.mean(errors)), 1)}


def _norm(word: str) -> str:
    return re.sub(r"[^a-z0-9]", "", word.lower())


def against_recognizer(client, http) -> dict:
    from engine.voice_store import encode_wav

    _, _, audio, timed = sse(http, body(TEXT, True, seed=3))
    verbose = client.audio.transcriptions.create(
        file=("speech.wav", io.BytesIO(encode_wav(pcm(audio), RATE))), model="whisper-1", language="en",
        response_format="verbose_json", timestamp_granularities=["word"])
    heard = [(w.word, w.start) for w in verbose.words or []]
    matcher = difflib.SequenceMatcher(a=[_norm(w["word"]) for w in timed], b=[_norm(w) for w, _ in heard],
                                      autojunk=False)
    errors = [timed[b.a + k]["start"] - heard[b.b + k][1] for b in matcher.get_matching_blocks() for k in range(b.size)]
    return {**summary(errors, len(timed)), "mean_signed_ms": round(1000 * float(np.mean(errors)), 1)}


async def recognizer_path(model: str) -> dict:
    from engine.asr import Recognizer, RecognizerConfig, TranscriptionService
    from engine.base import SegmentEnd, SynthesisRequest
    from engine.embedded import VOICE, EmbeddedEngine
    from engine.words import SentenceWords, WordTimer
    from engine.words.hearing import hearing

    engine = EmbeddedEngine()
    await engine.start()
    hear = hearing(TranscriptionService(Recognizer(RecognizerConfig(model=model))))

    async def words(withheld: bool) -> list:
        async def items():
            async for item in engine.synthesize(SynthesisRequest(text=TEXT, voice=VOICE, seed=3, segment_marks=True)):
                yield dataclasses.replace(item, words=None) if withheld and isinstance(item, SegmentEnd) else item

        timer = WordTimer(TEXT, hear if withheld else None)
        return [w async for item in timer.timed(items()) if isinstance(item, SentenceWords) for w in item.words]

    try:
        native, heard = await words(False), await words(True)
    finally:
        await engine.close()
    errors = [h.start - n.start for n, h in zip(native, heard, strict=True)]
    return {**summary(errors, len(native)), "mean_signed_ms": round(1000 * float(np.mean(errors)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running embedded gateway on loopback (with --asr-model)")
    parser.add_argument("--asr-model", help="default: the packaged tiny.en (tests/asr_model.py)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=3, help="sequences of 8 words spoken alone")
    parser.add_argument("--qwen", action="store_true", help="also the cost for a Qwen3 voice (random weights)")
    parser.add_argument("--qwen-size", default="tiny", help="random checkpoint size (see random-model)")
    parser.add_argument("--asr-threads", type=int, help="the Qwen gateway's --asr-threads (default: its own)")
    args = parser.parse_args()
    import httpx
    import openai

    from tests.asr_model import tiny_en

    model = args.asr_model or str(tiny_en())
    result: dict = {"engine": "embedded (hibari heart)", "asr_model": args.asr_model or "tiny.en", "cpu_count":
                    os.cpu_count()}
    with gateway(parser, args.url, "--asr-model", model, prefix="bench-timestamps-") as target, \
            httpx.Client(base_url=target.url) as http:
        result["cost"] = cost(http, args.runs)
        client = openai.OpenAI(base_url=target.url + "/v1", api_key="unused", max_retries=0)
        result["accuracy"] = {"words_alone": words_alone(http, args.trials),
                              "recognizer": against_recognizer(client, http)}
    result["accuracy"]["recognizer_path"] = asyncio.run(recognizer_path(model))
    if args.qwen:
        result["qwen_cost"] = qwen_cost(parser, model, args.qwen_size, args.runs, args.asr_threads)
    print(json.dumps(result, indent=2))


def qwen_cost(parser: argparse.ArgumentParser, model: str, size: str, runs: int, asr_threads: int | None) -> dict:
    import tempfile

    import httpx

    from engine.qwen.random_model import write_random_checkpoint

    folder = write_random_checkpoint(Path(tempfile.mkdtemp(prefix="bench-timestamps-qwen-")) / "cv", "custom_voice",
                                     size, seed=0)
    flags = ("--engine", "qwen", "--qwen-custom-voice", str(folder), "--asr-model", model, "--preload",
             *(("--asr-threads", str(asr_threads)) if asr_threads else ()))
    with gateway(parser, None, *flags, prefix="bench-timestamps-qwen-", timeout=600) as target, \
            httpx.Client(base_url=target.url) as http:
        # Each sentence 40 frames (3.2 s): random weights never choose to stop.
        return {"model": f"random {size} CustomVoice", "asr_threads": asr_threads, **cost(http, runs, model="qwen3-tts", voice="ryan",
                                                                max_new_tokens=41, min_new_tokens=41)}


if __name__ == "__main__":
    main()
