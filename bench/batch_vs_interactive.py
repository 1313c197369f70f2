"""Does a big batch hurt the people talking to the server? Interactive time to first audio, with and without it.

    python -m bench.batch_vs_interactive                      # embedded engine, starts its own server
    python -m bench.batch_vs_interactive --items 64 --probes 30
    python -m bench.batch_vs_interactive --engine qwen --qwen-base /path/to/checkpoint --items 32

A probe is one short interactive request (POST /v1/audio/speech, pcm, streamed), timed to its first
body byte. Probes run one after another in three phases:

- idle: nothing else running;
- during_batch: while one POST /v1/audio/speech/batch of `--items` items (bulk priority) runs;
- during_flood (the control): while the same items are sent as plain concurrent requests at
  interactive priority — the load without the batch endpoint's priority.

Each phase probes until its load ends, --probes probes are done or --budget seconds pass; a load
still running at the budget is abandoned (reported as unfinished), and the next phase starts once
/metrics shows the server idle (at most --drain seconds). So a run takes at most about
3 x budget + 2 x drain, plus the warm-up. A random-weight Qwen checkpoint never says "stop" on its own, so with --engine qwen
every request carries `max_new_tokens` (--max-new-tokens, default 12 frames, about a second): each
item then costs the same, and the run stays bounded. Prints one JSON object. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

from bench.gateway import gateway

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROBE = "Hello! How can I help you today?"
ITEM = ("This paragraph belongs to a long batch job, the kind that renders a whole chapter at once. "
        "It has a few sentences, so every item keeps a worker busy for a while. "
        "Nobody is waiting for it in real time, and that is the point of bulk priority.")


def percentiles(values: list[float]) -> dict:
    """p50/p95 (nearest rank) in milliseconds, and how many values there were."""
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered) * 1000, 1),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 1), "n": len(ordered)}


EXTRA: dict = {}  # fields added to every request (max_new_tokens), set once in main()


async def probe(client: httpx.AsyncClient, voice: str, deadline: float) -> float | None:
    """Seconds from sending a short interactive request to its first audio byte; None if none came by
    `deadline` (then the request is dropped). The body is read to the end, as a listener would."""
    body = {"model": "tts-1", "voice": voice, "input": PROBE, "response_format": "pcm", **EXTRA}
    t0 = time.perf_counter()
    async with client.stream("POST", "/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        pieces = response.aiter_bytes()
        try:
            await asyncio.wait_for(anext(pieces), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return None
        first = time.perf_counter() - t0
        async for _ in pieces:
            pass
    return first


async def probes_while(client: httpx.AsyncClient, voice: str, load: asyncio.Task | None, count: int,
                       deadline: float) -> tuple[list[float], int]:
    """Probe one after another until `count` probes, the end of `load`, or `deadline`. Returns the
    times to first audio, and how many probes were still waiting for theirs at the deadline."""
    out: list[float] = []
    while len(out) < count and time.monotonic() < deadline and (load is None or not load.done()):
        first = await probe(client, voice, deadline)
        if first is None:
            return out, 1
        out.append(first)
        await asyncio.sleep(0.05)  # a person does not fire requests back to back
    return out, 0


async def run_batch(client: httpx.AsyncClient, voice: str, items: int) -> dict:
    t0 = time.perf_counter()
    body = {"items": [{"model": "tts-1", "voice": voice, "input": ITEM, "response_format": "mp3", **EXTRA}] * items}
    response = await client.post("/v1/audio/speech/batch", json=body)
    response.raise_for_status()
    results = response.json()["data"]
    return {"seconds": round(time.perf_counter() - t0, 2), "ok": sum(r["status"] == "ok" for r in results),
            "audio_seconds": round(sum(r.get("duration_s") or 0 for r in results), 1)}


async def run_flood(client: httpx.AsyncClient, voice: str, items: int) -> dict:
    t0 = time.perf_counter()
    body = {"model": "tts-1", "voice": voice, "input": ITEM, "response_format": "mp3", **EXTRA}
    responses = await asyncio.gather(*(client.post("/v1/audio/speech", json=body) for _ in range(items)))
    return {"seconds": round(time.perf_counter() - t0, 2), "ok": sum(r.status_code == 200 for r in responses),
            "statuses": sorted({r.status_code for r in responses})}


async def wait_idle(client: httpx.AsyncClient, timeout: float) -> bool:
    """Wait until the server runs and queues nothing (from /metrics), so phases do not overlap."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (await client.get("/metrics")).text
        busy = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(("speech_gateway_active_slots{", "speech_gateway_queue_depth{"))]
        if not any(busy):
            return True
        await asyncio.sleep(0.5)
    return False


async def loaded_phase(client: httpx.AsyncClient, voice: str, load, items: int, count: int, budget: float,
                       drain: float) -> dict:
    deadline = time.monotonic() + budget
    task = asyncio.create_task(load(client, voice, items))
    await asyncio.sleep(0.3)  # let the load take its slots first: the probes must compete with it
    ttfa, waiting = await probes_while(client, voice, task, count, deadline)
    try:
        result = await asyncio.wait_for(task, max(0.0, deadline - time.monotonic()))
    except TimeoutError:  # wait_for cancelled it: the client goes away, the server is left to drain
        result = {"finished": False, "after_seconds": budget}
    return {"ttfa_ms": percentiles(ttfa), "probes_without_audio_at_deadline": waiting, "load": result,
            "server_idle_after": await wait_idle(client, drain)}


async def measure(url: str, voice: str, items: int, count: int, budget: float, drain: float) -> dict:
    limits = httpx.Limits(max_connections=items + 8, max_keepalive_connections=items + 8)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0, read=None), limits=limits) as client:
        # Warm-up (model load, first-request costs), not counted.
        await probe(client, voice, time.monotonic() + max(budget, 300.0))
        idle, _ = await probes_while(client, voice, None, count, time.monotonic() + budget)
        batch = await loaded_phase(client, voice, run_batch, items, count, budget, drain)
        flood = await loaded_phase(client, voice, run_flood, items, count, budget, drain)
    idle_p50 = percentiles(idle)["p50"]

    def slowdown(phase: dict) -> float | None:
        p50 = phase["ttfa_ms"]["p50"]
        return round(p50 / idle_p50, 2) if p50 and idle_p50 else None

    return {"idle": {"ttfa_ms": percentiles(idle)}, "during_batch": batch, "during_flood": flood,
            "p50_slowdown": {"during_batch": slowdown(batch), "during_flood": slowdown(flood)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running gateway on loopback (default: start one)")
    parser.add_argument("--engine", choices=["embedded", "qwen"], default="embedded")
    parser.add_argument("--qwen-base", help="Qwen3-TTS Base checkpoint folder (with --engine qwen)")
    parser.add_argument("--voice", default="default")
    parser.add_argument("--items", type=int, default=48, help="batch size, 1-64")
    parser.add_argument("--probes", type=int, default=20, help="interactive requests per phase (at most)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds per phase: probing stops and an unfinished load is abandoned")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="seconds to wait for the server to go idle after a phase (at most)")
    parser.add_argument("--max-concurrent", type=int, default=4, help="engine slots of the started server")
    parser.add_argument("--max-new-tokens", type=int, help="frame cap per request (default: 12 with qwen, none else)")
    args = parser.parse_args(argv)
    max_new_tokens = args.max_new_tokens or (12 if args.engine == "qwen" else None)
    if max_new_tokens:
        EXTRA["max_new_tokens"] = max_new_tokens
    if not 1 <= args.items <= 64:
        parser.error("--items must be 1-64 (the batch endpoint's limit)")
    if args.engine == "qwen" and not (args.qwen_base or args.url):
        parser.error("--engine qwen needs --qwen-base DIR (e.g. from `speech-gateway random-model DIR`)")
    flags = ["--max-queue", "256", "--max-concurrent", str(args.max_concurrent), "--queue-timeout", "600",
             "--log-level", "warning"]
    if args.engine == "qwen":
        flags += ["--engine", "qwen", "--qwen-base", args.qwen_base, "--preload"]
    started = time.perf_counter()
    with gateway(parser, args.url, *flags, prefix="bench-batch-", timeout=600) as target:
        result = asyncio.run(measure(target.url, args.voice, args.items, args.probes, args.budget, args.drain))
    print(json.dumps({"engine": args.engine, "items": args.items, "max_concurrent": args.max_concurrent,
                      "probe_chars": len(PROBE), "item_chars": len(ITEM), "max_new_tokens": max_new_tokens, **result,
                      "wall_seconds": round(time.perf_counter() - started, 1)}, indent=2))


if __name__ == "__main__":
    main()
