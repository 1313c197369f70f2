"""The peer on the same card and checkpoint: faster-qwen3-tts (CUDA graphs, one stream), one JSON object.

Time to first audio per first-chunk size (median of 3) and, per chunk size, the wall time of
--frames frames (EOS suppressed with min_new_tokens) as a real-time factor, for an ICL clone of the
same synthetic reference the project's benches use. faster-qwen3-tts runs one stream at a time, so
it has no concurrency figures of its own: N streams take N times as long.

GPU only (after `pip install faster-qwen3-tts`, 0.3.2 is the last release on transformers 4.x):
    python -m bench.peer_faster_qwen3 --checkpoint DIR   (or --size 0.6b | 1.7b: the random checkpoint)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # allow `python bench/peer_faster_qwen3.py`

from bench.qwen_concurrency import TEXT, checkpoint  # noqa: E402
from bench.qwen_streaming import reference_clip  # noqa: E402

REF_TEXT = "Hello, this is the default voice of the speech gateway, speaking clearly and calmly."


def main(argv: list[str] | None = None) -> None:
    import torch
    from faster_qwen3_tts import FasterQwen3TTS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--size", default="0.6b", choices=("0.6b", "1.7b"))
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--first-chunks", default="1,2,4")
    p.add_argument("--total-chunks", default="1,8")
    a = p.parse_args(argv)
    from importlib.metadata import version

    out: dict = {"peer": f"faster-qwen3-tts {version('faster-qwen3-tts')}", "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(0)}
    ckpt = checkpoint(a, out)
    t0 = time.perf_counter()
    model = FasterQwen3TTS.from_pretrained(ckpt, device="cuda", dtype=torch.bfloat16, attn_implementation="sdpa")
    out["load_seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    model.warmup(prefill_len=100)
    out["graph_capture_seconds"] = round(time.perf_counter() - t0, 2)
    prompt = model.model.create_voice_clone_prompt(ref_audio=reference_clip(4.6), ref_text=REF_TEXT)

    def run(chunk: int, frames: int, first_only: bool) -> tuple[float, float, int]:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        first, samples = None, 0
        gen = model.generate_voice_clone_streaming(text=TEXT, language="English", ref_text=REF_TEXT,
                                                   voice_clone_prompt=prompt, max_new_tokens=frames,
                                                   min_new_tokens=frames, chunk_size=chunk)
        for audio, _sr, _timing in gen:
            if first is None:
                first = time.perf_counter() - t0
                if first_only:
                    gen.close()
                    break
            samples += len(audio)
        return first, time.perf_counter() - t0, samples

    run(4, 12, False)  # warm-up of the whole path
    out["first_audio_seconds_by_chunk"] = {
        str(n): round(float(np.median([run(n, n + 4, True)[0] for _ in range(3)])), 4)
        for n in (int(x) for x in a.first_chunks.split(","))}
    out["total_by_chunk"] = {}
    for n in (int(x) for x in a.total_chunks.split(",")):
        first, total, samples = run(n, a.frames, False)
        out["total_by_chunk"][str(n)] = {"seconds": round(total, 3), "first": round(first, 4),
                                         "audio_seconds": round(samples / 24000, 2),
                                         "rtf": round(total / (a.frames * 0.08), 4)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
