"""CPU float32: the code predictor's small GEMMs on MKL-packed weights.

A frame step multiplies a few rows (one per stream) by each weight matrix, so on a CPU it is bound
by reading the weights from memory. MKL's sgemm keeps 1 to 3 rows at that cost, but from 4 rows on
it repacks the weight on every call (random 0.6B shapes, 3072x1024, weights out of cache, 2 threads:
0.47 ms for 1 row, 0.86 ms for 4, 1.12 ms for 8). Packed once ahead (`torch.ops.mkl`, the kernel
PyTorch's inductor uses for frozen CPU linears), 8 rows take 0.73 ms, whether 4 or 8 of them are real
(the packed copy is 1.7x the weight, so it cannot reach the 1-row cost).

The packed kernel takes exactly the row count it was packed for: inputs of 4 to `rows` rows are
padded up to it; fewer rows (already read-bound) and more (a prefill: compute-bound, or a batch past
one block, where two packed calls cost more than the plain one) keep the plain path.

Only the code predictor is packed: it runs 15 of the 16 codebooks per frame, about three quarters of
the step's GEMM time, with a seventh of the weights (its packed copy: ~0.7 GB for the 0.6B and 1.7B
models, which share its size). The talker's 28 layers run once per frame and would cost 2.9 GB more
for a small gain.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

MIN_ROWS = 4  # fewer rows: MKL's plain sgemm is already read-bound
ROWS = 8  # the packed block: 4..8 rows cost about the same


def available() -> bool:
    mkl = getattr(torch.ops, "mkl", None)
    return torch.backends.mkl.is_available() and hasattr(mkl, "_mkl_linear")


def pack_linears(module: torch.nn.Module, rows: int = ROWS) -> int:
    """Give each float32 CPU `nn.Linear` under `module` a weight packed for `rows`-row inputs and a forward
    that uses it; returns how many were packed (0 when MKL's packed GEMM is not available)."""
    if rows < MIN_ROWS or not available():
        return 0
    packed = 0
    with torch.inference_mode():
        for linear in module.modules():
            if (not isinstance(linear, torch.nn.Linear) or linear.weight.dtype != torch.float32
                    or linear.weight.device.type != "cpu" or hasattr(linear, "mkl_packed")):
                continue
            linear.mkl_packed = torch.ops.mkl._mkl_reorder_linear_weight(linear.weight.detach(), rows)
            linear.mkl_rows = rows
            linear.forward = types.MethodType(_packed_forward, linear)
            packed += 1
    return packed


def _packed_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    width = x.shape[-1]
    n = x.numel() // width if width else 0
    block = self.mkl_rows
    if not MIN_ROWS <= n <= block:
        return F.linear(x, self.weight, self.bias)
    flat = x.reshape(n, width)
    if n < block:
        flat = F.pad(flat, (0, 0, 0, block - n))
    out = torch.ops.mkl._mkl_linear(flat, self.mkl_packed, self.weight, self.bias, block)[:n]
    return out.view(*x.shape[:-1], out.shape[-1])
