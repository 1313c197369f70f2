"""Batched sampling: the eager CPU shortcuts (top-k by `topk`, top-p skipped when unused) give the
same scores as the graph-safe path, and both match HF's warpers row by row."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from engine.qwen.sampling import Knobs, warp

ROWS = [dict(temperature=0.9, top_k=50, top_p=1.0), dict(temperature=1.3, top_k=0, top_p=0.8),
        dict(temperature=0.7, top_k=5, top_p=0.9), dict(temperature=1.0, top_k=0, top_p=1.0)]


def _hf(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores


@pytest.mark.parametrize("rows", [ROWS, ROWS[:1], [ROWS[3]], ROWS[1:3]])
def test_host_shortcuts_give_the_same_scores(rows) -> None:
    torch.manual_seed(0)
    knobs = Knobs.empty(len(rows), torch.device("cpu"))
    for i, row in enumerate(rows):
        knobs.set_row(i, do_sample=True, **row)
    scores = torch.randn(len(rows), 3072) * 4
    scores[:, 7] = scores[:, 9]  # a tie at the k-th place must not matter
    graph_safe = warp(scores, knobs, len(rows))
    eager = warp(scores, knobs, len(rows), host=True)
    assert torch.equal(graph_safe, eager)
    for i, row in enumerate(rows):
        assert torch.equal(eager[i : i + 1], _hf(scores[i : i + 1], **row))
