"""Benchmark: N concurrent streams through the Qwen engine (continuous batching), one JSON object.

For each concurrency level c, c requests for the shipped `default` clone voice start together, each
making exactly --frames frames (min_new_tokens = max_new_tokens, so EOS cannot end one early), and
each is read by a client that starts playing at its first chunk and plays chunks back to back.
Per level: time to first audio p50/p95/max, seconds of audio per wall second over all streams,
per-stream RTF (wall / audio), how many streams played without stalls (total stall < 100 ms), the
median stall, the scheduler's mean rows per decode step, and its prompt prefills (seconds, positions,
rows joined from the voice's cached prefix). `voice_prefix` measures that cache on the loaded model:
the voice's prefix length and memory, and one prompt's prefill whole vs after the cached prefix.
`--no-prefix-cache` and `--prefill-tokens` run the same with the cache off or another join budget;
`--cold` empties the prefix cache before each level, so each burst is the voice's first.

Checkpoint: a random-weight copy of the real 0.6B Base architecture (built once into a cache
folder, ~20 s, ~2.5 GB), --size tiny for the tiny test model, or any folder with --checkpoint.

CPU (here):  python -m bench.qwen_concurrency --levels 1,4 --frames 24
GPU:         python -m bench.qwen_concurrency --device cuda:0 --levels 1,2,4,8,16,32,64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # allow `python bench/qwen_concurrency.py`

from bench.playback import stall_seconds  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog while the evening sun sets slowly behind the quiet "
        "hills of the old town.")


def checkpoint(a: argparse.Namespace, out: dict) -> str:
    if a.checkpoint:
        return a.checkpoint
    from engine.qwen.random_model import is_complete, write_random_checkpoint

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qwen-speech-gateway"
    folder = cache / f"random-{a.size}-base"
    if not is_complete(folder):
        t0 = time.perf_counter()
        write_random_checkpoint(folder, "base", a.size, seed=0)
        out["build_seconds"] = round(time.perf_counter() - t0, 2)
    return str(folder)


async def run(a: argparse.Namespace) -> dict:
    from engine.base import SamplingParams, SynthesisRequest
    from engine.qwen.engine import QwenConfig, QwenEngine
    from engine.voice_store import SHIPPED_VOICES_DIR

    out: dict = {"device": a.device, "frames": a.frames, "first_chunk_frames": a.first_chunk_frames, "cold": a.cold,
                 "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    ckpt = checkpoint(a, out)
    levels = [int(x) for x in a.levels.split(",")]
    cfg = QwenConfig(base=ckpt, device=a.device, dtype=a.dtype, preload=True, instances=a.instances,
                     torch_threads=a.threads, max_batch=a.max_batch or max(levels), cuda_graphs=not a.no_cuda_graphs,
                     blocked_gemm=not a.no_blocked_gemm, prefill_tokens=a.prefill_tokens,
                     prefix_cache=0 if a.no_prefix_cache else 16,
                     first_chunk_frames=a.first_chunk_frames, chunk_frames=a.chunk_frames,
                     voices_dirs=(SHIPPED_VOICES_DIR, Path(tempfile.mkdtemp())))
    engine = QwenEngine(cfg)
    t0 = time.perf_counter()
    await engine.start()
    out.update(checkpoint=ckpt, start_seconds=round(time.perf_counter() - t0, 2),
               batching=engine.status().details["batching"])
    voice = next(v for v in engine.voices() if v.id == "default")
    caps = SamplingParams(max_new_tokens=a.frames + 1, min_new_tokens=a.frames + 1)

    async def one(i: int) -> dict:
        request = SynthesisRequest(text=TEXT, voice=voice, seed=i, sampling=caps)
        t0 = time.perf_counter()
        arrivals = []
        async for chunk in engine.synthesize(request):
            arrivals.append((time.perf_counter() - t0, chunk.duration))
        return {"first": arrivals[0][0], "wall": time.perf_counter() - t0, "audio": sum(d for _, d in arrivals),
                "stall": stall_seconds(arrivals)}

    await one(0)  # warm: first-call allocations, the voice's primed decoder state and prefix
    out["voice_prefix"] = await prefix_probe(engine, voice)
    out["levels"] = {}
    counted = ("decode_steps", "rows_sum", "decode_seconds", "codec_seconds", "prefill_seconds", "prefill_tokens",
               "prefix_hits", "prefills")
    for c in levels:
        schedulers = [s for p in engine.pools.values() for s in p.schedulers]
        if a.cold:  # forget the voice's prefix: this level is its first burst
            for pool in engine.pools.values():
                for worker, scheduler in zip(pool.workers, pool.schedulers, strict=True):
                    await worker.call(scheduler.prefixes.clear)
        before = [dict(vars(s.stats)) for s in schedulers]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(c)))
        wall = time.perf_counter() - t0
        d = {k: sum(getattr(s.stats, k) - b[k] for s, b in zip(schedulers, before, strict=True)) for k in counted}
        steps, rows, stepping, decoding = d["decode_steps"], d["rows_sum"], d["decode_seconds"], d["codec_seconds"]
        firsts = np.array([r["first"] for r in results])
        level = {
            "ttfa_p50": round(float(np.percentile(firsts, 50)), 4),
            "ttfa_p95": round(float(np.percentile(firsts, 95)), 4),
            "ttfa_max": round(float(firsts.max()), 4),
            "audio_per_wall_second": round(sum(r["audio"] for r in results) / wall, 3),
            "per_stream_rtf_median": round(float(np.median([r["wall"] / r["audio"] for r in results])), 4),
            "real_time_streams": int(sum(r["stall"] < 0.1 for r in results)),
            "stall_seconds_median": round(float(np.median([r["stall"] for r in results])), 3),
            "rows_per_decode_step": round(rows / max(steps, 1), 2),
            "loop_seconds": round(stepping, 2),  # of the wall time, in the frame loop's iterations
            "codec_decode_seconds": round(decoding, 2),  # ... of which turning codes into audio
            "prefills": d["prefills"],  # ... forwards that joined rows, of
            "prefill_seconds_per_request": round(d["prefill_seconds"] / c, 3),
            "prefill_positions_per_request": round(d["prefill_tokens"] / c, 1),
            "rows_from_voice_prefix": d["prefix_hits"],
            "wall_seconds": round(wall, 2),
        }
        out["levels"][str(c)] = level
        print(json.dumps({"level": c, **level}), file=sys.stderr, flush=True)
    one_stream = out["levels"].get("1", {}).get("audio_per_wall_second")
    if one_stream:
        out["throughput_vs_one_stream"] = {k: round(v["audio_per_wall_second"] / one_stream, 2)
                                           for k, v in out["levels"].items()}
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    await engine.close()
    return out


async def prefix_probe(engine, voice) -> dict:  # noqa: ANN001 - a QwenEngine and one of its voices
    """The voice's cached prefix: its positions and memory, and the bench prompt's prefill on the model's
    thread, whole and from the prefix (best of 3 each)."""
    from engine.qwen.frame_batch import FrameBatch
    from engine.qwen.streaming import GenerationParams, prepare_inputs, row_settings

    pool = engine.pools["base"]
    worker, loaded, scheduler = pool.workers[0], pool.models[0], pool.schedulers[0]
    clone = await engine._clone_prompt(voice, loaded, worker)

    def measure() -> dict:
        prepared = prepare_inputs(loaded, text=TEXT, language="auto", voice_clone_prompt=clone)
        prefix = scheduler.prefixes.get(prepared.prefix_key)
        settings = row_settings(GenerationParams.for_model(loaded))
        batch = FrameBatch(loaded, 1, context=prepared.prefill.shape[1] + 8, text=prepared.trailing_text.shape[1] + 1,
                           grow=False)
        seconds = {}
        for name, cached in (("whole", None), ("after_prefix", prefix)):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                batch.join(0, prepared.prefill, prepared.trailing_text, settings, cached)
                times.append(time.perf_counter() - t0)
                batch.leave(0)
            seconds[name] = min(times)
        return {"prompt_positions": prepared.prefill.shape[1], "prefix_positions": prepared.prefix_len,
                "cached": prefix is not None, "entries": len(scheduler.prefixes), "bytes": scheduler.prefix_bytes,
                "prefill_whole_seconds": round(seconds["whole"], 4),
                "prefill_after_prefix_seconds": round(seconds["after_prefix"], 4),
                "saved_seconds_per_prompt": round(seconds["whole"] - seconds["after_prefix"], 4)}

    return await worker.call(measure)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="a checkpoint folder (default: random Base of --size)")
    p.add_argument("--size", default="0.6b", choices=("0.6b", "1.7b", "tiny"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--levels", default="1,2,4,8,16,32,64")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--first-chunk-frames", type=int, default=1)
    p.add_argument("--chunk-frames", type=int, default=8)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=None, help="default: the largest level")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--no-blocked-gemm", action="store_true", help="CPU: batched steps on the plain GEMM kernel")
    p.add_argument("--prefill-tokens", type=int, default=None, help="join budget (default: the engine's)")
    p.add_argument("--no-prefix-cache", action="store_true", help="prefill every prompt whole")
    p.add_argument("--cold", action="store_true",
                   help="each level starts with the voice's prefix uncached (a new voice's first burst)")
    a = p.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # qwen_tts prints banners when the model loads: keep stdout JSON
        out = asyncio.run(run(a))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
