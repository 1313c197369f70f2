"""CPU float32: a batched frame step's linears as one batch of weight-block GEMMs.

A frame step multiplies a few rows (one per stream) by each weight matrix, so on a CPU it should
cost what reading the weights costs. MKL's sgemm does that for 1 to 3 rows, but from 4 rows on its
kernel streams the weight badly: on this 2-core Xeon (random 0.6B shapes, weights out of cache) a
3072x1024 weight takes 0.57 ms for 1 row, 1.03 ms for 4 and 1.33 ms for 8 on 2 threads (1.0 / 2.2
/ 2.7 ms on 1 thread), twice the 1-row cost where the rows share every weight read.

The same product as `torch.bmm` over the weight viewed as blocks of 16 output rows (a view, no
copy: each small GEMM reads one contiguous 64 KB block while it is in cache) takes 0.75 ms for 4
rows and 0.86 ms for 8 (1.4 / 1.5 ms on 1 thread), about 1.3x one row. From ~24 rows the plain
kernel catches up (the step becomes compute-bound), and below 4 it is faster, so only batched
decode steps of 4 to 24 rows take the blocked path. MKL's packed GEMM (`torch.ops.mkl`), tried
first, reached 0.90 ms for 4 rows and needed a 1.7x copy of every packed weight.

The forward is swapped on the talker's and the code predictor's `nn.Linear`s, and each decoder
layer's q/k/v and gate/up weights are moved into one tensor per group (same values; the modules
hold views), so `FrameBatch` multiplies a group in one call. The official `generate` on the same
modules still runs the plain kernel (one sequence at a time).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

BLOCK = 16  # output rows per small GEMM: 8, 16 and 32 measured within noise of each other
MIN_ROWS, MAX_ROWS = 4, 24  # rows (batch x positions) for which the blocked product is faster
# Weights smaller than this (4 MB) stay in cache between uses, where the plain kernel does well and
# the blocked one's extra ops cost more than they save (the tiny test model: 8 streams 3.8x one
# stream blocked, 4.4x plain).
MIN_WEIGHT = 1 << 20


def block_linears(module: torch.nn.Module, min_weight: int = MIN_WEIGHT) -> int:
    """Route batched 4..24-row inputs of each float32 CPU `nn.Linear` under `module` (with whole
    16-row weight blocks, at least `min_weight` elements) through `blocked_linear`, and join each
    decoder layer's q/k/v and gate/up weights into one tensor (`fuse_layer`); returns how many
    linears were switched."""
    switched = 0
    for linear in module.modules():
        if (not isinstance(linear, torch.nn.Linear) or linear.weight.dtype != torch.float32
                or linear.weight.device.type != "cpu" or linear.out_features % BLOCK
                or linear.weight.numel() < min_weight or getattr(linear, "blocked", False)):
            continue
        linear.blocked = True
        linear.forward = types.MethodType(_blocked_forward, linear)
        switched += 1
    for layer in module.modules():
        if hasattr(layer, "self_attn") and hasattr(layer, "mlp"):
            fuse_layer(layer)
    return switched


def fuse_layer(layer: torch.nn.Module) -> None:
    """Store a decoder layer's q/k/v weights in one tensor, and its gate/up weights in another; the
    modules' weights become row slices (views) of them, so nothing is held twice and single-row
    steps run as before, while `grouped` multiplies a batch by each group in one blocked GEMM
    (the same blocks, so the same numbers, with 3 and 2 times fewer calls)."""
    attn, mlp = layer.self_attn, layer.mlp
    for owner, linears in ((attn, (attn.q_proj, attn.k_proj, attn.v_proj)), (mlp, (mlp.gate_proj, mlp.up_proj))):
        if getattr(owner, "fused", None) is not None or not all(
                getattr(lin, "blocked", False) and lin.bias is None for lin in linears):
            continue
        with torch.no_grad():
            joined = torch.cat([lin.weight.detach() for lin in linears])
            start = 0
            for lin in linears:
                lin.weight = torch.nn.Parameter(joined[start : start + lin.out_features], requires_grad=False)
                start += lin.out_features
        owner.fused = (joined, [lin.out_features for lin in linears])


def grouped(owner: torch.nn.Module, linears: tuple[torch.nn.Linear, ...], x: torch.Tensor) -> list[torch.Tensor]:
    """`[linear(x) for linear in linears]`, as one blocked GEMM when `owner` holds their weights
    joined (`fuse_layer`) and `x` is a batch that takes the blocked path."""
    fused = getattr(owner, "fused", None)
    n = _blocked_rows(x)
    if fused is None or not n:
        return [linear(x) for linear in linears]
    out = blocked_linear(x.reshape(n, x.shape[-1]), fused[0])
    return list(out.view(*x.shape[:-1], -1).split(fused[1], dim=-1))


def blocked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for a 2-D `x`, as one GEMM per 16-row block of `weight`."""
    n, width = x.shape
    blocks = weight.shape[0] // BLOCK
    y = torch.bmm(x.expand(blocks, n, width), weight.view(blocks, BLOCK, width).transpose(1, 2))
    out = y.transpose(0, 1).reshape(n, weight.shape[0])
    return out if bias is None else out.add_(bias)


def _blocked_rows(x: torch.Tensor) -> int:
    # A batch of several sequences only: one sequence (a solo step, or the official generate's
    # prefill) keeps the plain kernel, so solo runs stay bit-identical to the official code.
    if x.dim() != 3 or x.shape[0] < 2:
        return 0
    n = x.shape[0] * x.shape[1]
    return n if MIN_ROWS <= n <= MAX_ROWS else 0


def _blocked_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    n = _blocked_rows(x)
    if not n:
        return F.linear(x, self.weight, self.bias)
    out = blocked_linear(x.reshape(n, x.shape[-1]), self.weight, self.bias)
    return out.view(*x.shape[:-1], out.shape[-1])
