"""Benchmark: streaming Qwen3-TTS (engine.qwen.streaming) against the official generate, one run.

Runs on a random-weight checkpoint of the real published 0.6B Base architecture (built into a cache
folder on first use: ~20 s, ~2.5 GB) or on any checkpoint given with --checkpoint. EOS is
suppressed so every run makes exactly the frames asked for. Prints one JSON object:

- time to first audio (prepare + prefill + frames + first decode, ICL clone prompt) for first
  chunks of 1, 2 and 4 frames;
- per-frame step time split into talker forward / code predictor / the rest (sampling etc.), and
  the streaming decoder's cost per frame;
- RTF (seconds of compute per second of audio) of the streaming loop over --frames frames versus
  the official `generate_voice_clone` making the same frames, and whether their codes are equal.

CPU (here):  python -m bench.qwen_streaming
GPU:         python -m bench.qwen_streaming --device cuda:0 --dtype bfloat16
             (flash-attn is used when installed; pass --attn sdpa to compare)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # allow `python bench/qwen_streaming.py`

with contextlib.redirect_stdout(sys.stderr):  # qwen_tts prints a flash-attn banner on import: keep stdout JSON
    import qwen_tts  # noqa: E402, F401

from engine.qwen import codec_stream  # noqa: E402
from engine.qwen.frame_batch import FrameBatch  # noqa: E402
from engine.qwen.loader import load_model  # noqa: E402
from engine.qwen.random_model import is_complete, write_random_checkpoint  # noqa: E402
from engine.qwen.streaming import GenerationParams, make_generator, prepare_inputs, stream_audio  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog while the evening sun sets slowly behind the quiet "
        "hills of the old town.")
REF_TEXT = "This is the reference recording that the cloned voice should sound like."
FRAME_SECONDS = 1920 / 24000


class Timer:
    """Accumulates wall time spent inside a module's forward (pre/post forward hooks)."""

    def __init__(self, module: torch.nn.Module, sync: bool):
        self.durations: list[float] = []
        self._t0, self.sync = 0.0, sync
        self._handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _pre(self, *_: object) -> None:
        if self.sync:
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def _post(self, *_: object) -> None:
        if self.sync:
            torch.cuda.synchronize()
        self.durations.append(time.perf_counter() - self._t0)

    def reset(self) -> None:
        self.durations.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class MethodTimer:
    """Accumulates wall time spent in one method of a class (patched for the bench, restored by remove())."""

    def __init__(self, cls: type, name: str, sync: bool):
        self.durations: list[float] = []
        self.cls, self.name, self.plain = cls, name, getattr(cls, name)

        def timed(obj, *args, **kwargs):
            if sync:
                torch.cuda.synchronize()
            t = time.perf_counter()
            result = self.plain(obj, *args, **kwargs)
            if sync:
                torch.cuda.synchronize()
            self.durations.append(time.perf_counter() - t)
            return result

        setattr(cls, name, timed)

    def reset(self) -> None:
        self.durations.clear()

    def remove(self) -> None:
        setattr(self.cls, self.name, self.plain)


def suppress_eos(loaded) -> torch.utils.hooks.RemovableHandle:
    model = loaded.model.model
    eos = model.config.talker_config.codec_eos_token_id

    def hook(_m: torch.nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[..., eos] = float("-inf")
        return out

    return model.talker.codec_head.register_forward_hook(hook)


def reference_clip(seconds: float) -> tuple[np.ndarray, int]:
    sr = 24000
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    wav = sum(0.2 / k * np.sin(2 * np.pi * 130 * k * t) for k in range(1, 8)) + 0.02 * rng.standard_normal(t.size)
    return wav.astype(np.float32), sr


def main(argv: list[str] | None = None) -> None:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qwen-speech-gateway"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="a checkpoint folder or hub id (default: random 0.6B Base)")
    p.add_argument("--size", default="0.6b", choices=("0.6b", "1.7b", "tiny"), help="random checkpoint size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--attn", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--first-chunks", default="1,2,4")
    p.add_argument("--chunk-frames", type=int, default=8)
    p.add_argument("--ref-seconds", type=float, default=3.0)
    p.add_argument("--skip-official", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out: dict = {"device": a.device, "threads": torch.get_num_threads(), "frames": a.frames,
                 "load_average": os.getloadavg()}

    ckpt = a.checkpoint
    if ckpt is None:
        folder = cache / f"random-{a.size}-base"
        if not is_complete(folder):
            t0 = time.perf_counter()
            write_random_checkpoint(folder, "base", a.size, seed=0)
            out["build_seconds"] = round(time.perf_counter() - t0, 2)
        ckpt = str(folder)
    loaded = load_model(ckpt, device=a.device, dtype=a.dtype, attn=a.attn)
    out.update(checkpoint=ckpt, dtype=loaded.dtype, attn=loaded.attn, load_seconds=round(loaded.load_seconds, 2))
    sync = loaded.device.startswith("cuda")
    tts = loaded.model

    t0 = time.perf_counter()
    prompt = tts.create_voice_clone_prompt(reference_clip(a.ref_seconds), ref_text=REF_TEXT)
    out["clone_prompt_seconds"] = round(time.perf_counter() - t0, 3)
    out["ref_frames"] = int(prompt[0].ref_code.shape[0])

    def request(frames: int):
        return prepare_inputs(loaded, text=TEXT, language="english", voice_clone_prompt=prompt), \
            GenerationParams(max_frames=frames)

    eos_hook = suppress_eos(loaded)
    prefill = Timer(tts.model.talker.model, sync)  # the HF forward now runs for prefills only
    talker = MethodTimer(FrameBatch, "_talker_device", sync)
    predictor = MethodTimer(FrameBatch, "_predictor_forward", sync)
    decode_time = [0.0, 0]  # seconds, frames
    decoded: list[torch.Tensor] = []  # the codes the streaming decoder received, to compare
    plain_decode = codec_stream.StreamingCodecDecoder.decode

    def timed_decode(self, codes):  # bench-only instrumentation of the streaming decoder
        t = time.perf_counter()
        wav = plain_decode(self, codes)
        decode_time[0] += time.perf_counter() - t
        decode_time[1] += len(codes)
        decoded.append(torch.as_tensor(codes).cpu())
        return wav

    codec_stream.StreamingCodecDecoder.decode = timed_decode
    try:
        for _ in stream_audio(loaded, *request(3), generator=make_generator(loaded, 0), first_chunk_frames=1):
            pass  # warm-up: first-call allocations and kernel selection
        ttfa = {}
        for n in [int(x) for x in a.first_chunks.split(",")]:
            t0 = time.perf_counter()
            gen = stream_audio(loaded, *request(n + 4), generator=make_generator(loaded, 0), first_chunk_frames=n)
            while (chunk := next(gen)) is None:
                pass
            ttfa[str(n)] = round(time.perf_counter() - t0, 3)
            gen.close()
        out["first_audio_seconds_by_first_chunk_frames"] = ttfa

        for timer in (prefill, talker, predictor):
            timer.reset()
        decode_time[:] = [0.0, 0]
        decoded.clear()
        steps: list[float] = []
        t_start = time.perf_counter()
        prepared, params = request(a.frames)
        gen = stream_audio(loaded, prepared, params, generator=make_generator(loaded, 0),
                           first_chunk_frames=2, chunk_frames=a.chunk_frames)
        codes_audio = 0
        while True:
            t = time.perf_counter()
            try:
                chunk = next(gen)
            except StopIteration:
                break
            steps.append(time.perf_counter() - t)
            codes_audio += 0 if chunk is None else len(chunk)
        stream_seconds = time.perf_counter() - t_start
        assert codes_audio == a.frames * 1920, codes_audio
        frames = a.frames
        out["streaming"] = {
            "total_seconds": round(stream_seconds, 2),
            "rtf": round(stream_seconds / (frames * FRAME_SECONDS), 3),
            "prefill_plus_first_frame_seconds": round(steps[0], 3),
            "talker_prefill_seconds": round(prefill.durations[0], 3),
            "per_frame_ms": {
                "talker_step": round(1000 * float(np.mean(talker.durations)), 1),
                "code_predictor_15_codes": round(1000 * sum(predictor.durations) / frames, 1),
                "decode": round(1000 * decode_time[0] / max(decode_time[1], 1), 1),
                "step_median": round(1000 * float(np.median(steps)), 1),
            },
            "chunk_frames": a.chunk_frames,
        }

        if not a.skip_official:
            seen = {}
            inner = tts.model.generate

            def recording(*args, **kwargs):
                seen["codes"], hidden = inner(*args, **kwargs)
                return seen["codes"], hidden

            tts.model.generate = recording
            try:
                torch.manual_seed(0)
                t0 = time.perf_counter()
                wavs, _ = tts.generate_voice_clone(TEXT, language="english", voice_clone_prompt=prompt,
                                                   **params.official_kwargs())
                official = time.perf_counter() - t0
            finally:
                del tts.model.generate
            mine = torch.cat(decoded)
            out["official_generate_voice_clone"] = {
                "total_seconds": round(official, 2),
                "rtf": round(official / (frames * FRAME_SECONDS), 3),
                "first_audio_seconds": round(official, 2),  # non-streaming: all audio at the end
                "samples": int(len(wavs[0])),
                "codes_equal_to_streaming": bool(torch.equal(seen["codes"][0].cpu(), mine)),
            }
    finally:
        codec_stream.StreamingCodecDecoder.decode = plain_decode
        eos_hook.remove()
        prefill.remove()
        talker.remove()
        predictor.remove()
    if sync:
        out["cuda_max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        import resource

        out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
