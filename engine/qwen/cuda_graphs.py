"""CUDA graphs for the two device steps of a `FrameBatch` frame, one per batch-size bucket.

A frame is thousands of small kernels issued from Python; on a GPU that launch cost, not the maths,
sets the speed. Each step (`sample`: codebook 0 + the 15 predictor steps + next input; `talker`:
one talker token over the slot cache) is captured once per bucket (1, 2, 4, 8, ... up to the batch
size) and replayed; n running rows use the smallest bucket >= n, the extra rows being free slots
whose results nobody reads. Graphs need fixed addresses and shapes, so the batch is built with
`static=True, grow=False` (the whole cache read under a mask) and captured while it is empty, at
warm-up. The random numbers are drawn per row into the batch's noise buffers before each replay,
from each row's own generator, so sampling stays reproducible per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .frame_batch import FrameBatch


def buckets_for(max_batch: int) -> tuple[int, ...]:
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return (*sizes, max_batch)


class CudaGraphs:
    """Captured steps of one batch; `runner(step)` gives the `run(fn, n)` the batch's steps accept."""

    def __init__(self, batch: FrameBatch, warmups: int = 2):
        if batch.device.type != "cuda" or not batch.static or batch.grow:
            raise ValueError("CUDA graphs need a static, fixed-size batch on a CUDA device")
        self.batch = batch
        self.buckets = buckets_for(batch.slots)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple[str, int], torch.cuda.CUDAGraph] = {}
        steps: dict[str, Callable[[int], None]] = {"sample": batch._sample_device, "talker": batch._talker_device}
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in reversed(self.buckets):  # largest first: smaller graphs reuse its pool memory
                for name, fn in steps.items():
                    self.graphs[(name, b)] = self._capture(fn, b, warmups)
        torch.cuda.synchronize(batch.device)
        self.capture_seconds = time.perf_counter() - t0

    def _capture(self, fn: Callable[[int], None], b: int, warmups: int) -> torch.cuda.CUDAGraph:
        side = torch.cuda.Stream(device=self.batch.device)
        side.wait_stream(torch.cuda.current_stream(self.batch.device))
        with torch.cuda.stream(side):
            for _ in range(warmups):  # kernel selection and lazy allocations happen outside the graph
                fn(b)
        torch.cuda.current_stream(self.batch.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            fn(b)
        return graph

    def bucket(self, n: int) -> int:
        for b in self.buckets:
            if n <= b:
                return b
        raise ValueError(f"{n} rows exceed the largest captured batch ({self.buckets[-1]})")

    def runner(self, step: str) -> Callable[[Callable, int], None]:
        def run(_fn: Callable, n: int) -> None:
            self.graphs[(step, self.bucket(n))].replay()

        return run


__all__ = ["CudaGraphs", "buckets_for"]
