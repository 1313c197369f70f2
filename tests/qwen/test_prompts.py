"""ClonePromptCache on a tiny random Base model: computed once, then memory, then disk after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.qwen.prompts import SILENCE_PAD_SECONDS, ClonePromptCache, ReferenceClip, compute_prompt
from engine.worker import StepWorker

TRANSCRIPT = "Hello, this is a reference clip."


@pytest.fixture
def worker():
    w = StepWorker("prompts-test")
    yield w
    w.close()


@pytest.fixture
def clip(reference_audio) -> ReferenceClip:
    audio, sr = reference_audio
    return ReferenceClip(audio, sr, TRANSCRIPT)


def _same(a, b) -> bool:
    codes_equal = (a.ref_code is None and b.ref_code is None) or torch.equal(a.ref_code, b.ref_code)
    return (
        codes_equal
        and torch.equal(a.ref_spk_embedding, b.ref_spk_embedding)
        and (a.x_vector_only_mode, a.icl_mode, a.ref_text) == (b.x_vector_only_mode, b.icl_mode, b.ref_text)
    )


async def test_second_request_and_restart_compute_nothing(tiny_base_model, clip, worker, tmp_path: Path) -> None:
    cache = ClonePromptCache(tmp_path, max_entries=4)
    first = await cache.get(tiny_base_model, clip, worker.call)
    assert (cache.computed, cache.memory_hits, cache.disk_hits) == (1, 0, 0)
    assert first.icl_mode and first.ref_text == TRANSCRIPT and first.ref_code.shape[1] == 16
    # 0.5 s of silence is appended before encoding: 2 s + 0.5 s at 12.5 frames/s, last frame partial.
    assert first.ref_code.shape[0] == math.ceil((2.0 + SILENCE_PAD_SECONDS) * 12.5)

    again = await cache.get(tiny_base_model, clip, worker.call)
    assert again is first and (cache.computed, cache.memory_hits) == (1, 1)

    restarted = ClonePromptCache(tmp_path, max_entries=4)
    reloaded = await restarted.get(tiny_base_model, clip, worker.call)
    assert (restarted.computed, restarted.disk_hits) == (0, 1)
    assert _same(reloaded, first)
    assert [p.suffix for p in tmp_path.rglob("*") if p.is_file()] == [".safetensors"]  # no temp files left


async def test_key_covers_transcript_mode_and_model(tiny_base_model, clip, worker, tmp_path: Path) -> None:
    cache = ClonePromptCache(tmp_path)
    await cache.get(tiny_base_model, clip, worker.call)
    await cache.get(tiny_base_model, dataclasses.replace(clip, ref_text="Another transcript."), worker.call)
    xvec = await cache.get(tiny_base_model, dataclasses.replace(clip, x_vector_only=True), worker.call)
    assert xvec.ref_code is None and xvec.x_vector_only_mode and not xvec.icl_mode
    # In x-vector mode the transcript is ignored, so it does not split the cache.
    await cache.get(tiny_base_model, dataclasses.replace(clip, x_vector_only=True, ref_text="whatever"), worker.call)
    other_model = dataclasses.replace(tiny_base_model, identity="another-checkpoint")
    await cache.get(other_model, clip, worker.call)
    assert (cache.computed, cache.memory_hits) == (4, 1)


async def test_concurrent_first_requests_compute_once(tiny_base_model, clip, worker, tmp_path: Path) -> None:
    cache = ClonePromptCache(tmp_path)
    calls: list[str] = []
    lock = threading.Lock()

    def counting_run(fn):
        with lock:
            calls.append(threading.current_thread().name)
        return worker.call(fn)

    results = await asyncio.gather(*(cache.get(tiny_base_model, clip, counting_run) for _ in range(5)))
    assert cache.computed == 1 and len(calls) == 1 and cache.stats.joined == 4
    assert all(r is results[0] for r in results)


async def test_a_cancelled_waiter_does_not_cancel_the_others(tiny_base_model, clip, worker) -> None:
    cache = ClonePromptCache(None)
    first = asyncio.ensure_future(cache.get(tiny_base_model, clip, worker.call))
    second = asyncio.ensure_future(cache.get(tiny_base_model, clip, worker.call))
    await asyncio.sleep(0)
    first.cancel()
    item = await second
    assert item.icl_mode and cache.computed == 1


async def test_memory_is_bounded_lru(tiny_base_model, clip, worker) -> None:
    cache = ClonePromptCache(None, max_entries=2)  # memory only: every miss is a computation
    clips = [dataclasses.replace(clip, ref_text=f"Transcript {i}.") for i in range(3)]
    for c in clips:
        await cache.get(tiny_base_model, c, worker.call)
    assert len(cache) == 2 and cache.computed == 3
    await cache.get(tiny_base_model, clips[2], worker.call)  # newest: still cached
    assert cache.memory_hits == 1
    await cache.get(tiny_base_model, clips[0], worker.call)  # oldest: evicted, computed again
    assert cache.computed == 4 and len(cache) == 2


async def test_corrupt_disk_entry_is_recomputed(tiny_base_model, clip, worker, tmp_path: Path) -> None:
    first = await ClonePromptCache(tmp_path).get(tiny_base_model, clip, worker.call)
    [stored] = list(tmp_path.rglob("*.safetensors"))
    stored.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    cache = ClonePromptCache(tmp_path)
    again = await cache.get(tiny_base_model, clip, worker.call)
    assert (cache.computed, cache.disk_hits) == (1, 0) and _same(again, first)
    assert ClonePromptCache(tmp_path)._read(stored, tiny_base_model.identity, "cpu") is not None  # rewritten


def test_only_arrays_reach_qwen_tts(tiny_base_model, reference_audio) -> None:
    seen = []
    model = tiny_base_model.model
    original = model.create_voice_clone_prompt

    def spy(ref_audio, ref_text=None, x_vector_only_mode=False):
        seen.append(ref_audio)
        return original(ref_audio=ref_audio, ref_text=ref_text, x_vector_only_mode=x_vector_only_mode)

    audio, sr = reference_audio
    model.create_voice_clone_prompt = spy
    try:
        compute_prompt(model, ReferenceClip(audio, sr, TRANSCRIPT))
    finally:
        del model.create_voice_clone_prompt
    [(array, rate)] = seen
    assert isinstance(array, np.ndarray) and array.dtype == np.float32 and array.ndim == 1 and rate == sr
    pad = int(SILENCE_PAD_SECONDS * sr)
    assert len(array) == len(audio) + pad and not array[-pad:].any()
