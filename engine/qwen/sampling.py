"""HF's logits processing and multinomial sampling for a batch of rows with their own settings.

Each row of a batch carries its own knobs (temperature, top-k, top-p, repetition penalty, greedy or
sampled, how many frames before EOS is allowed) as tensors, so one set of ops serves every row and a
CUDA graph can replay them. The ops are HF's own, row for row, in HF's order (repetition penalty,
min new tokens, suppression, temperature, top-k, top-p), and give the same floats:

- HF compares and divides float32 scores by Python floats; those become float32 scalars, so a
  float32 tensor holding the same values gives identical results (`1 - top_p` is computed in
  Python first, as HF does, before it is stored).
- `torch.multinomial(probs, 1, generator=g)` is, in torch, `argmax(probs / q)` with
  `q = empty_like(probs).exponential_(generator=g)`. Drawing `q` from the row's own generator
  into a buffer before the step (`draw_noise`) gives the same token as the official call, keeps
  each row's randomness its own whatever else is in the batch, and keeps the draw out of a graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class Knobs:
    """Per-row sampling settings for one distribution (codebook 0, or the code predictor's)."""

    temperature: torch.Tensor  # (S,) float32
    top_k: torch.Tensor  # (S,) long, 0 = off
    top_p_cut: torch.Tensor  # (S,) float32: 1 - top_p, as HF computes it
    use_top_p: torch.Tensor  # (S,) bool
    do_sample: torch.Tensor  # (S,) bool

    @classmethod
    def empty(cls, slots: int, device: torch.device) -> Knobs:
        return cls(temperature=torch.ones(slots, device=device), top_k=torch.zeros(slots, dtype=torch.long, device=device),
                   top_p_cut=torch.zeros(slots, device=device),
                   use_top_p=torch.zeros(slots, dtype=torch.bool, device=device),
                   do_sample=torch.zeros(slots, dtype=torch.bool, device=device))

    def set_row(self, slot: int, *, temperature: float, top_k: int, top_p: float, do_sample: bool) -> None:
        self.temperature[slot] = temperature
        self.top_k[slot] = top_k
        self.top_p_cut[slot] = 1 - top_p
        self.use_top_p[slot] = top_p < 1.0
        self.do_sample[slot] = do_sample

    def tensors(self) -> list[torch.Tensor]:
        return [self.temperature, self.top_k, self.top_p_cut, self.use_top_p, self.do_sample]


def warp(scores: torch.Tensor, knobs: Knobs, b: int, host: bool = False) -> torch.Tensor:
    """HF's TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper (min_tokens_to_keep=1).

    `host`: the knobs may be read on the host (an eager CPU step, not a graph): the k-th score comes
    from `topk` over the largest k asked for instead of a full sort, and top-p is skipped when no
    row uses it; the same values either way."""
    scores = scores / knobs.temperature[:b, None]
    vocab = scores.shape[-1]
    k = knobs.top_k[:b].clamp(min=1, max=vocab)
    if host:
        widest = int(k.max())
        kth = torch.topk(scores, widest, dim=-1).values.gather(1, (k - 1)[:, None])
    else:
        kth = torch.sort(scores, dim=-1, descending=True).values.gather(1, (k - 1)[:, None])
    remove = (scores < kth) & (knobs.top_k[:b] > 0)[:, None]
    scores = scores.masked_fill(remove, NEG_INF)
    if host and not bool(knobs.use_top_p[:b].any()):
        return scores
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    cut = cumulative <= knobs.top_p_cut[:b, None]
    cut[..., -1:] = False
    cut = cut & knobs.use_top_p[:b, None]
    return scores.masked_fill(cut.scatter(1, sorted_indices, cut), NEG_INF)


def pick(scores: torch.Tensor, knobs: Knobs, noise: torch.Tensor, b: int, host: bool = False) -> torch.Tensor:
    """Sampled rows: the multinomial draw over the warped scores with the row's noise; greedy rows: argmax."""
    probs = torch.softmax(warp(scores, knobs, b, host), dim=-1)
    sampled = torch.argmax(probs / noise, dim=-1)
    return torch.where(knobs.do_sample[:b], sampled, torch.argmax(scores, dim=-1))


def penalize(scores: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor, b: int) -> torch.Tensor:
    """HF's RepetitionPenaltyLogitsProcessor over each row's own history (`seen`: ids it produced)."""
    p = penalty[:b, None]
    penalized = torch.where(scores < 0, scores * p, scores / p)
    return torch.where(seen[:b] & (p != 1.0), penalized, scores)


__all__ = ["Knobs", "penalize", "pick", "warp"]
