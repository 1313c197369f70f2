"""Check: CUDA-graph replay of the batched frame steps equals eager steps (one JSON object).

Runs the same rows (greedy, so no randomness is involved) through two `FrameBatch`es built alike
(static, fixed size): one replays captured graphs (padded to their bucket), the other calls the
same device steps eagerly. Reports per row the largest codebook-0 logit difference over the frames
both made the same codes for, and the first frame whose codes differ (bf16 rounding can flip a
close argmax after a while; the logits must agree within bf16 tolerance before that). A third
batch, eager too, joins every row from its voice's cached prefix (taken from the eager batch) and
prefills only the rest: `prefix_ok` compares it with the eager batch the same way.

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
    from engine.qwen.frame_batch import FrameBatch, Join
    from engine.qwen.loader import load_model
    from engine.qwen.streaming import GenerationParams, prepare_inputs, row_settings

    out: dict = {"device": a.device, "frames": a.frames}
    loaded = load_model(checkpoint(a, out), device=a.device, dtype=a.dtype)
    clip = (torch.sin(torch.arange(72000) / 24000 * 2 * torch.pi * 140).numpy() * 0.3, 24000)
    xvec = loaded.model.create_voice_clone_prompt(clip, x_vector_only_mode=True)
    icl = loaded.model.create_voice_clone_prompt(clip, ref_text="Hi there.")  # short: text over the codes
    rows = [prepare_inputs(loaded, text=t, voice_clone_prompt=icl if i % 2 else xvec)
            for i, t in enumerate(TEXTS[: a.rows])]
    settings = row_settings(GenerationParams(do_sample=False, subtalker_dosample=False, max_frames=a.frames,
                                             min_frames=a.frames))
    cuda = loaded.device.startswith("cuda")

    def batch() -> FrameBatch:
        return FrameBatch(loaded, a.slots, context=a.context, text=256, grow=False, static=True)

    graphed, eager, prefixed = batch(), batch(), batch()
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
    joins = [Join(i, p.prefill, p.trailing_text, settings) for i, p in enumerate(rows)]
    graphed.join_many(joins)
    eager.join_many(joins)
    prefixed.join_many([j._replace(prefix=eager.prefix(j.slot, p.prefix_len)) for j, p in zip(joins, rows, strict=True)])
    n = len(rows)
    compared = {"graphs": ([0.0] * n, [None] * n), "prefix": ([0.0] * n, [None] * n)}
    for frame in range(a.frames):
        if frame:
            graphed.talker_step(n, graphs.runner("talker") if graphs else runner("talker"))
            eager.talker_step(n)
            prefixed.talker_step(n)
        e_codes = eager.sample_and_predict(n).cpu()
        e_logits = eager.logits[:n].float().cpu()
        for name, other, run_as in (("graphs", graphed, graphs.runner("sample") if graphs else runner("sample")),
                                    ("prefix", prefixed, None)):
            codes = other.sample_and_predict(n, run_as).cpu()
            logits = other.logits[:n].float().cpu()
            diffs, first_split = compared[name]
            for r in range(n):
                if first_split[r] is None:
                    diffs[r] = max(diffs[r], float((logits[r] - e_logits[r]).abs().max()))
                    if not torch.equal(codes[r], e_codes[r]):
                        first_split[r] = frame
    scale = float(eager.logits[:n].float().abs().max())
    out["logit_scale"] = round(scale, 3)
    for name, key in (("graphs", "rows"), ("prefix", "prefix_rows")):
        diffs, first_split = compared[name]
        out[key] = [{"prompt_tokens": int(p.prefill.shape[1]), "prefix_tokens": p.prefix_len,
                     "max_logit_diff": round(d, 6), "first_frame_with_other_codes": s}
                    for p, d, s in zip(rows, diffs, first_split, strict=True)]
        out["ok" if name == "graphs" else "prefix_ok"] = all(d <= a.tolerance * max(scale, 1.0) for d in diffs)
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
