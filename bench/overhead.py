"""The gateway's own overhead: first audio and real-time factor over HTTP versus the engine in-process.

    python -m bench.overhead                          # embedded engine, starts its own server
    python -m bench.overhead --concurrency 1 4 8 --rounds 12

In-process means `SpeechService.open()` and iterating the stream in this process: the engine, its step
worker and admission, but no HTTP, no encoding, no second process. Over HTTP means a streaming POST
/v1/audio/speech (pcm) to a gateway on loopback, timed to the first body byte and the last. For each
concurrency level both run the same texts with that many clients at once; the difference is what the
gateway adds.

`first_audio_alternating` isolates the edge's cost on first audio alone: one client, the same text,
and the four paths taken in turn --alternations times (so load drifts hit all of them alike): the
first chunk in-process, the first body byte of a pcm POST and of an mp3 POST over a kept-alive
connection, and the first binary frame of `/api/v1/speak` on an open socket. Prints one JSON object.
Bounded by --rounds and --alternations; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

from bench.gateway import gateway

# The gateway it starts runs with one OpenMP thread (tests/server.py); the in-process engine must too,
# or the comparison measures thread counts instead of the edge.
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = ("Streaming speech starts playing before the whole text is done. This is the second sentence of the "
        "benchmark, a little longer than the first. And a third one closes it.")
SAMPLE_RATE = 24000
SETTLE_S = 0.3


def summarize(first: list[float], total: list[float], audio: list[float], wall: float) -> dict:
    """Per-request first-audio and RTF medians/p95, and the aggregate audio seconds per wall second."""
    rtf = [t / a for t, a in zip(total, audio, strict=True) if a]
    ordered = sorted(first)
    return {
        "first_audio_ms": {"p50": round(statistics.median(first) * 1000, 1),
                           "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 1),
                           "mean": round(statistics.fmean(first) * 1000, 1)},
        "rtf": {"p50": round(statistics.median(rtf), 4), "max": round(max(rtf), 4)},
        "audio_seconds_per_s": round(sum(audio) / wall, 2),
        "requests": len(first),
    }


async def in_process(concurrency: int, rounds: int) -> dict:
    from engine.embedded import EmbeddedEngine
    from engine.service import SpeechParams, SpeechService

    service = SpeechService([EmbeddedEngine()], max_concurrent=4, max_queue=256)
    await service.start()
    first, total, audio = [], [], []

    async def one() -> None:
        t0 = time.perf_counter()
        stream = await service.open(SpeechParams(text=TEXT, voice="alloy", seed=1))
        seconds, got_first = 0.0, None
        async for chunk in stream:
            got_first = got_first if got_first is not None else time.perf_counter() - t0
            seconds += chunk.duration
        first.append(got_first or 0.0)
        total.append(time.perf_counter() - t0)
        audio.append(seconds)

    try:
        await one()  # warm-up, not counted
        first.clear(), total.clear(), audio.clear()
        t0 = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(one() for _ in range(concurrency)))
        return summarize(first, total, audio, time.perf_counter() - t0)
    finally:
        await service.close()


async def first_audio_alternating(url: str, alternations: int) -> dict:
    """Median first-audio times (ms) of in-process, HTTP and WebSocket, taken in turn; and their differences."""
    import websockets

    from engine.embedded import EmbeddedEngine
    from engine.service import SpeechParams, SpeechService

    service = SpeechService([EmbeddedEngine()], max_concurrent=4, max_queue=256)
    await service.start()
    load_before = os.getloadavg()[0]
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "seed": 1}
    ws_url = url.replace("http://", "ws://", 1) + "/api/v1/speak"
    times: dict[str, list[float]] = {"in_process": [], "http": [], "http_mp3": [], "websocket": []}

    async def direct() -> float:
        t0 = time.perf_counter()
        stream = await service.open(SpeechParams(text=TEXT, voice="alloy", seed=1))
        try:
            async for _chunk in stream:
                return time.perf_counter() - t0
            return 0.0
        finally:
            await stream.aclose()

    async def http(client: httpx.AsyncClient, response_format: str) -> float:
        t0 = time.perf_counter()
        first = 0.0
        async with client.stream("POST", url + "/v1/audio/speech",
                                 json={**body, "response_format": response_format}) as response:
            response.raise_for_status()
            # Read to the end: a response left unread closes its connection, and every request would
            # then time a new connection's setup too, which a client that plays what it asked for never pays.
            async for _chunk in response.aiter_raw():
                first = first or time.perf_counter() - t0
        return first

    async def socket(ws) -> float:
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "speak", "text": TEXT}))
        while not isinstance(await ws.recv(), bytes):
            pass
        first = time.perf_counter() - t0
        await ws.send(json.dumps({"type": "cancel"}))  # only the first frame is measured
        while json.loads(m).get("type") != "cancelled" if isinstance(m := await ws.recv(), str) else True:
            pass
        return first

    try:
        async with httpx.AsyncClient(timeout=120) as client, websockets.connect(ws_url) as ws:
            await ws.recv()  # ready
            for i in range(alternations + 1):  # the first round warms up every path, not counted
                got = {}
                for name, path in (("in_process", direct), ("http", lambda: http(client, "pcm")),
                                   ("http_mp3", lambda: http(client, "mp3")), ("websocket", lambda: socket(ws))):
                    got[name] = await path()
                    # The in-process and socket paths stop after their first audio, but the engine finishes
                    # the step it is in (the next sentence): let it, or the next path waits for it or shares
                    # the cores with it.
                    await asyncio.sleep(SETTLE_S)
                if i:
                    for key, value in got.items():
                        times[key].append(value)
    finally:
        await service.close()
    medians = {k: round(statistics.median(v) * 1000, 1) for k, v in times.items()}
    return {
        "alternations": alternations,
        "first_audio_ms_p50": medians,
        "http_adds_ms": round(medians["http"] - medians["in_process"], 1),
        "http_mp3_adds_ms": round(medians["http_mp3"] - medians["in_process"], 1),
        "websocket_adds_ms": round(medians["websocket"] - medians["in_process"], 1),
        # Other processes on the machine skew every path; the 1-minute load before and after says how much.
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


async def over_http(url: str, concurrency: int, rounds: int) -> dict:
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm", "seed": 1}
    first, total, audio = [], [], []
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> None:
            t0 = time.perf_counter()
            size, got_first = 0, None
            async with client.stream("POST", url + "/v1/audio/speech", json=body) as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    got_first = got_first if got_first is not None else time.perf_counter() - t0
                    size += len(chunk)
            first.append(got_first or 0.0)
            total.append(time.perf_counter() - t0)
            audio.append(size / 2 / SAMPLE_RATE)

        await one()
        first.clear(), total.clear(), audio.clear()
        t0 = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(one() for _ in range(concurrency)))
        return summarize(first, total, audio, time.perf_counter() - t0)


def server_ttfa(url: str) -> tuple[float, float]:
    """(sum, count) of the server's own time-to-first-audio histogram: it starts at the request's arrival."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "speech_gateway_time_to_first_audio_seconds_sum":
                total += sample.value
            elif sample.name == "speech_gateway_time_to_first_audio_seconds_count":
                count += sample.value
    return total, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running embedded-engine gateway on loopback (default: start one)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=10, help="batches of `concurrency` requests per level")
    parser.add_argument("--alternations", type=int, default=15, help="rounds of the alternating first-audio check")
    parser.add_argument("--only-alternating", action="store_true", help="skip the concurrency levels")
    args = parser.parse_args(argv)
    levels = {}
    with gateway(parser, args.url, "--max-queue", "256", prefix="bench-overhead-") as target:
        url = target.url
        alternating = asyncio.run(first_audio_alternating(url, args.alternations))
        if args.only_alternating:
            args.concurrency = []
        for c in args.concurrency:
            direct = asyncio.run(in_process(c, args.rounds))
            before = server_ttfa(url)
            http = asyncio.run(over_http(url, c, args.rounds))
            after = server_ttfa(url)
            # Measured inside the server (warm-up included): client minus this is HTTP and the wire.
            http["server_measured_first_audio_ms_mean"] = round(
                (after[0] - before[0]) / max(1.0, after[1] - before[1]) * 1000, 1)
            levels[str(c)] = {
                "in_process": direct,
                "http": http,
                "overhead_first_audio_ms_p50": round(http["first_audio_ms"]["p50"] - direct["first_audio_ms"]["p50"], 1),
                "overhead_rtf_p50": round(http["rtf"]["p50"] - direct["rtf"]["p50"], 4),
            }
    print(json.dumps({"engine": "embedded", "text_chars": len(TEXT), "first_audio_alternating": alternating,
                      "rounds": args.rounds, "concurrency": levels}, indent=2))


if __name__ == "__main__":
    main()
