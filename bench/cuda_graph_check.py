"""Check: CUDA-graph replay of the batched frame steps equals eager steps (one JSON object).

Runs the same rows (greedy, so no randomness is involved) through two `FrameBatch`es built alike
(static, fixed size): one replays captured graphs (padded to their bucket), the other calls the
same device steps eagerly. Reports per row the largest codebook-0 logit difference over the frames
both made the same codes for, and the first frame whose codes differ (bf16 rounding can flip a
close argmax after a while; the logits must agree within bf16 tolerance before that).

GPU:  python -m bench.cuda_graph_check --device cuda:0 [--checkpoint DIR | --size 0.6b]
CPU:  python -m bench.cuda_graph_check --size tiny   (no graphs: static padded steps vs dynamic ones)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # allow `python bench/cuda_graph_check.py`

TEXTS = ["The first row speaks a long sentence that keeps it busy for a while.", "Short.",
         "A third row joins with a different prompt length.", "Four."]


def run(a: argparse.Namespace) -> dict:
    import torch

    from bench.qwen_concurrency import checkpoint
    from engine.qwen.frame_batch import FrameBatch
    from engine.qwen.loader import load_model
    from engine.qwen.streaming import GenerationParams, prepare_inputs, row_settings

    out: dict = {"device": a.device, "frames": a.frames}
    loaded = load_model(checkpoint(a, out), device=a.device, dtype=a.dtype)
    prompt = loaded.model.create_voice_clone_prompt(
        (torch.sin(torch.arange(72000) / 24000 * 2 * torch.pi * 140).numpy() * 0.3, 24000), x_vector_only_mode=True)
    rows = [prepare_inputs(loaded, text=t, voice_clone_prompt=prompt) for t in TEXTS[: a.rows]]
    settings = row_settings(GenerationParams(do_sample=False, subtalker_dosample=False, max_frames=a.frames,
                                             min_frames=a.frames))
    cuda = loaded.device.startswith("cuda")

    def batch() -> FrameBatch:
        return FrameBatch(loaded, a.slots, context=a.context, text=256, grow=False, static=True)

    graphed, eager = batch(), batch()
    runner = None
    if cuda:
        from engine.qwen.cuda_graphs import CudaGraphs

        t0 = time.perf_counter()
        graphs = CudaGraphs(graphed)
        out.update(capture_seconds=round(time.perf_counter() - t0, 2), buckets=list(graphs.buckets))
    else:  # the same padded shapes, eagerly: what the graphs would replay
        from engine.qwen.cuda_graphs import buckets_for

        sizes = buckets_for(a.slots)
        out["buckets"] = list(sizes)

        def runner_fn(step: str):
            def run_padded(fn, n: int) -> None:
                fn(next(b for b in sizes if n <= b))

            return run_padded

        graphs = None
        runner = runner_fn
    joins = [(i, p.prefill, p.trailing_text, settings) for i, p in enumerate(rows)]
    graphed.join_many(joins)
    eager.join_many(joins)
    n = len(rows)
    diffs = [0.0] * n
    first_split: list[int | None] = [None] * n
    for frame in range(a.frames):
        if frame:
            graphed.talker_step(n, graphs.runner("talker") if graphs else runner("talker"))
            eager.talker_step(n)
        g_codes = graphed.sample_and_predict(n, graphs.runner("sample") if graphs else runner("sample")).cpu()
        e_codes = eager.sample_and_predict(n).cpu()
        g_logits, e_logits = graphed.logits[:n].float().cpu(), eager.logits[:n].float().cpu()
        for r in range(n):
            if first_split[r] is None:
                diffs[r] = max(diffs[r], float((g_logits[r] - e_logits[r]).abs().max()))
                if not torch.equal(g_codes[r], e_codes[r]):
                    first_split[r] = frame
    out["rows"] = [{"prompt_tokens": int(p.prefill.shape[1]), "max_logit_diff": round(d, 6),
                    "first_frame_with_other_codes": s} for p, d, s in zip(rows, diffs, first_split, strict=True)]
    scale = float(eager.logits[:n].float().abs().max())
    out["logit_scale"] = round(scale, 3)
    out["ok"] = all(d <= a.tolerance * max(scale, 1.0) for d in diffs)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--size", default="0.6b", choices=("0.6b", "1.7b", "tiny"))
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--dtype", default=None)
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--tolerance", type=float, default=0.05, help="relative to the largest logit (bf16: ~1e-2)")
    a = p.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):
        out = run(a)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
