"""Load test: concurrent streaming clients against one gateway on loopback; prints one JSON object.

    python -m bench.load                      # starts its own embedded-engine server
    python -m bench.load --url http://127.0.0.1:8000 --pid 1234 --clients 16 --requests 2000

HTTP clients stream POST /v1/audio/speech (pcm); WebSocket clients, when the server has
/api/v1/speak, send `speak` and read binary frames until `audio_end`. Every answer is checked:
a 200 body must hold exactly as many samples as a reference synthesis of the same text (the embedded
voice is deterministic in length), a 429 must carry Retry-After (clients wait it out, up to 2 s, as
the OpenAI SDK would), and nothing may be a 5xx. Stalls: a listener playing each answer from its
first audio would wait mid-stream (`stalled_streams`: answers where that adds up to 100 ms or more).
Bounded by --requests and --duration; it only ever talks to the loopback address it is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.gateway import gateway
from bench.playback import stall_seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXTS = (
    "Hello there.",
    "The quick brown fox jumps over the lazy dog, and then it runs away into the woods.",
    "Streaming speech starts playing before the whole text is done. This sentence is the second one. "
    "And here is a third, so the stream has a few chunks.",
)
MAX_BACKOFF = 2.0  # seconds: honour Retry-After, but never idle a bounded run for long
PCM_BYTES_PER_SECOND = 2 * 24000
STALL = 0.1  # seconds of waiting mid-stream that count an answer as stalled


@dataclass
class Tally:
    ttfa: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)
    audio_seconds: float = 0.0
    ok: int = 0
    rejected: int = 0
    rejected_without_retry_after: int = 0
    server_errors: int = 0
    other_errors: list[str] = field(default_factory=list)
    truncated: int = 0

    def summary(self, elapsed: float) -> dict:
        done = self.ok + self.rejected + self.server_errors + len(self.other_errors)
        return {
            "requests": done,
            "ok": self.ok,
            "requests_per_s": round(done / elapsed, 2) if elapsed else None,
            "audio_seconds_per_s": round(self.audio_seconds / elapsed, 2) if elapsed else None,
            "ttfa_ms": percentiles(self.ttfa),
            "stalled_streams": sum(s >= STALL for s in self.stalls),
            "stall_ms": percentiles(self.stalls),
            "rejected_429": self.rejected,
            "rejected_without_retry_after": self.rejected_without_retry_after,
            "server_errors_5xx": self.server_errors,
            "truncated_streams": self.truncated,
            "other_errors": self.other_errors[:5],
            "other_error_count": len(self.other_errors),
        }


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": round(ordered[-1] * 1000, 1),
            "mean": round(statistics.fmean(ordered) * 1000, 1)}


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


class Budget:
    """Hands out request numbers until the count or the time runs out."""

    def __init__(self, requests: int, duration: float):
        self.left = requests
        self.deadline = time.monotonic() + duration

    def take(self) -> bool:
        if self.left <= 0 or time.monotonic() > self.deadline:
            return False
        self.left -= 1
        return True


def speech_body(text: str) -> dict:
    return {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm", "seed": 1}


async def http_reference(client: httpx.AsyncClient, url: str) -> dict[str, int]:
    sizes = {}
    for text in TEXTS:
        response = await client.post(url + "/v1/audio/speech", json=speech_body(text))
        response.raise_for_status()
        sizes[text] = len(response.content)
    return sizes


async def http_worker(client: httpx.AsyncClient, url: str, n: int, budget: Budget, expected: dict[str, int],
                      tally: Tally) -> None:
    i = n
    while budget.take():
        text = TEXTS[i % len(TEXTS)]
        i += 1
        t0 = time.perf_counter()
        try:
            async with client.stream("POST", url + "/v1/audio/speech", json=speech_body(text)) as response:
                if response.status_code != 200:
                    await response.aread()
                    count_refusal(response.status_code, "retry-after" in response.headers, tally, response.text)
                    await back_off(response.headers.get("retry-after"), budget)
                    continue
                size, arrivals = 0, []
                async for chunk in response.aiter_bytes():
                    if chunk:
                        arrivals.append((time.perf_counter() - t0, len(chunk) / PCM_BYTES_PER_SECOND))
                    size += len(chunk)
        except httpx.RemoteProtocolError:
            tally.truncated += 1
            continue
        except httpx.HTTPError as e:
            tally.other_errors.append(f"{type(e).__name__}: {e}")
            continue
        record(size, expected[text], arrivals, tally)


async def back_off(retry_after: str | float | None, budget: Budget) -> None:
    """Wait as a well-behaved client (the OpenAI SDK) does before trying again, capped to keep the run short."""
    if retry_after is not None:
        await asyncio.sleep(max(0.0, min(float(retry_after), MAX_BACKOFF, budget.deadline - time.monotonic())))


def count_refusal(status: int, has_retry_after: bool, tally: Tally, detail: str) -> None:
    if status == 429:
        tally.rejected += 1
        tally.rejected_without_retry_after += not has_retry_after
    elif status >= 500:
        tally.server_errors += 1
    else:
        tally.other_errors.append(f"{status}: {detail[:200]}")


def record(size: int, expected: int, arrivals: list[tuple[float, float]], tally: Tally) -> None:
    """One answer: its size checked, its first audio and its stalls (arrivals: time, seconds of audio)."""
    if size != expected:
        tally.truncated += 1
        return
    tally.ok += 1
    tally.audio_seconds += size / PCM_BYTES_PER_SECOND
    if arrivals:
        tally.ttfa.append(arrivals[0][0])
        tally.stalls.append(stall_seconds(arrivals))


async def ws_utterance(ws, text: str) -> tuple[int, list[tuple[float, float]], dict | None]:  # noqa: ANN001
    """Speak one text on a websockets client; (PCM bytes, arrivals as in `record`, error event or None)."""
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "speak", "text": text}))
    size, arrivals = 0, []
    while True:
        message = await ws.recv()
        if isinstance(message, bytes):
            arrivals.append((time.perf_counter() - t0, len(message) / PCM_BYTES_PER_SECOND))
            size += len(message)
            continue
        event = json.loads(message)
        if event.get("type") == "audio_end":
            return size, arrivals, None
        if event.get("type") == "error":
            return size, arrivals, event


async def ws_worker(ws_url: str, n: int, budget: Budget, expected: dict[str, int], tally: Tally) -> None:
    import websockets

    i = n
    async with websockets.connect(ws_url + "/api/v1/speak", max_size=None) as ws:
        while budget.take():
            text = TEXTS[i % len(TEXTS)]
            i += 1
            size, arrivals, error = await ws_utterance(ws, text)
            if error is None:
                record(size, expected[text], arrivals, tally)
            elif error.get("code") == "RATE_LIMITED":
                tally.rejected += 1
                tally.rejected_without_retry_after += error.get("retryAfter") is None
                await back_off(error.get("retryAfter"), budget)
            elif error.get("code") in ("SYNTHESIS_ERROR", "MODEL_LOADING"):
                tally.server_errors += 1
            else:
                tally.other_errors.append(f"{error.get('code')}: {error.get('message')}")


async def ws_reference(ws_url: str) -> dict[str, int]:
    import websockets

    sizes = {}
    async with websockets.connect(ws_url + "/api/v1/speak", max_size=None) as ws:
        for text in TEXTS:
            size, _, error = await ws_utterance(ws, text)
            if error:
                raise RuntimeError(f"WebSocket reference synthesis failed: {error}")
            sizes[text] = size
    return sizes


async def run(url: str, clients: int, requests: int, duration: float, use_ws: bool, pid: int | None) -> dict:
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        expected = await http_reference(client, url)
        has_ws = use_ws
        ws_url = "ws" + url[len("http"):]
        if has_ws:
            try:
                ws_expected = await ws_reference(ws_url)
            except Exception as e:  # noqa: BLE001 - a server without the endpoint: HTTP only
                print(f"no WebSocket run: {type(e).__name__}: {e}", file=sys.stderr)
                has_ws = False
        rss_before = rss_mib(pid)
        results = {}
        for transport in ("http", "websocket") if has_ws else ("http",):
            tally, budget = Tally(), Budget(requests, duration)
            t0 = time.perf_counter()
            if transport == "http":
                await asyncio.gather(*(http_worker(client, url, n, budget, expected, tally) for n in range(clients)))
            else:
                await asyncio.gather(*(ws_worker(ws_url, n, budget, ws_expected, tally) for n in range(clients)))
            results[transport] = tally.summary(time.perf_counter() - t0)
        return {"clients": clients, "results": results, "server_rss_mib": {"before": rss_before,
                                                                            "after": rss_mib(pid)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running gateway on loopback (default: start one)")
    parser.add_argument("--pid", type=int, help="the --url server's process id, for its memory use")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000, help="per transport")
    parser.add_argument("--duration", type=float, default=120, help="seconds at most per transport")
    parser.add_argument("--no-ws", action="store_true", help="HTTP only")
    parser.add_argument("--server-args", default="--max-queue 64",
                        help="flags for the server this script starts")
    args = parser.parse_args(argv)
    with gateway(parser, args.url, *args.server_args.split(), prefix="bench-load-", pid=args.pid) as target:
        report = asyncio.run(run(target.url, args.clients, args.requests, args.duration, not args.no_ws,
                                 target.pid))
    report["requests_per_transport"] = args.requests
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
