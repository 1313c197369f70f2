"""The one Qwen3-TTS frame loop: every running stream of a model instance in one batched step.

A `FrameBatch` holds up to `slots` rows, each a sentence being generated, in preallocated tensors:
a talker KV cache with a slot per row (its own length, positions and multimodal-RoPE offset), the
row's last talker hidden state, its codebook-0 history, its trailing text and its sampling knobs.
Rows occupy slots 0..n-1; a leaving row's slot is filled with the last row (`leave`), so every
step works on the first n slots and shapes depend on n only (a CUDA graph per batch size).

One frame for all rows is two steps, the same maths as the official `generate`, row by row:

  sample_and_predict  codebook 0 from each row's last logits with HF's processors (penalty over
                      its own history, EOS refused before its `min_frames`, top-1024 suppression,
                      its temperature / top-k / top-p) and its own noise (`sampling`), then the
                      code predictor's 15 small steps for all rows at once, and each row's next
                      talker input (sum of its 16 code embeddings + its next trailing text vector)
  talker_step         one talker token for every row over the slot cache: each row writes its key
                      and value at its own length and attends to its own prefix only

A joining row is prefilled on its own (`join`, the official prefill: same call, same shapes) and
its cache copied into its slot; a row alone in the batch therefore computes exactly what the
official generate computes. Rows in a batch with others compute the same values up to float
rounding of differently shaped matrix products (~1e-6 on logits here), which can in rare cases flip
a sampled code. A row may join with its prompt's first positions already computed (`PrefixKV`,
the talker cache of a voice's prefix, taken from an earlier row with `prefix`): only the rest of its
prompt is prefilled, attending to that cache; the same values again, up to float rounding.

The decode steps bypass HF's module forwards (mask building and cache classes are neither
batch-per-row nor graph-friendly) but call the same submodules in the same order, and use torch's
SDPA for attention whatever the prefill uses. Everything here runs on the thread owning the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from qwen_tts.core.models.modeling_qwen3_tts import apply_multimodal_rotary_pos_emb, apply_rotary_pos_emb
from transformers.cache_utils import DynamicCache
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .cpu_gemm import grouped
from .loader import LoadedModel
from .sampling import NEG_INF, Knobs, penalize, pick

SUPPRESSED_TOP_IDS = 1024  # the official generate suppresses the top 1024 codebook-0 ids except EOS


@dataclass(frozen=True)
class RowSettings:
    """What a row needs besides its prompt: the official generation knobs, the row's frame cap."""

    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    do_sample: bool
    subtalker_dosample: bool
    subtalker_temperature: float
    subtalker_top_k: int
    subtalker_top_p: float
    max_frames: int
    min_frames: int


@dataclass(frozen=True, eq=False)
class PrefixKV:
    """The talker cache of one prompt's first `length` positions: per layer (kv heads, length, head dim)."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @property
    def length(self) -> int:
        return self.keys[0].shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


class Join(NamedTuple):
    """A row joining the batch: its slot, prompt (1, L, H), trailing text (1, T, H) and settings, and
    optionally the cache of its prompt's first positions (then only the rest is prefilled)."""

    slot: int
    prefill: torch.Tensor
    trailing: torch.Tensor
    settings: RowSettings
    prefix: PrefixKV | None = None

    @property
    def new_tokens(self) -> int:
        """Positions the prefill computes (the prompt less its cached prefix)."""
        return self.prefill.shape[1] - (self.prefix.length if self.prefix is not None else 0)


def _grow(t: torch.Tensor, dim: int, size: int, fill: float = 0.0) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] = size - shape[dim]
    return torch.cat([t, t.new_full(shape, fill)], dim=dim)


class FrameBatch:
    """Batched state of up to `slots` rows on one loaded model; see the module docstring."""

    def __init__(self, loaded: LoadedModel, slots: int, *, context: int = 256, text: int = 64,
                 grow: bool = True, static: bool = False):
        tts = loaded.model.model
        self.loaded = loaded
        self.talker, self.predictor = tts.talker, tts.talker.code_predictor
        tc = tts.config.talker_config
        self.eos = int(tc.codec_eos_token_id)
        self.groups = int(tc.num_code_groups)
        # grow: buffers grow with the longest row (CPU); else fixed, as captured CUDA graphs need.
        # static: device steps read the whole cache with a mask and never branch on host state.
        self.slots, self.grow, self.static = int(slots), grow, static
        dev = self.device = self.talker.device
        dtype = self.dtype = self.talker.dtype
        hidden = int(tc.hidden_size)
        vocab = int(tc.vocab_size)
        t_attn = self.talker.model.layers[0].self_attn
        self.t_heads = (int(tc.num_key_value_heads), int(t_attn.head_dim))
        p_cfg = self.predictor.model.config
        p_attn = self.predictor.model.layers[0].self_attn
        p_vocab = int(self.predictor.config.vocab_size)
        s = self.slots
        # Talker cache per layer: (slots, kv heads, context, head dim); grown on demand unless fixed.
        self.k = [torch.zeros(s, *self._kv(context), dtype=dtype, device=dev) for _ in self.talker.model.layers]
        self.v = [torch.zeros_like(k) for k in self.k]
        # Predictor cache: 17 positions (2 for the first step, then one per code), rebuilt every frame.
        p_shape = (s, int(p_cfg.num_key_value_heads), self.groups + 1, int(p_attn.head_dim))
        self.pk = [torch.zeros(p_shape, dtype=dtype, device=dev) for _ in self.predictor.model.layers]
        self.pv = [torch.zeros_like(k) for k in self.pk]
        self.length = torch.zeros(s, dtype=torch.long, device=dev)  # tokens in the row's cache
        self.rope_delta = torch.zeros(s, dtype=torch.long, device=dev)
        self.frames = torch.zeros(s, dtype=torch.long, device=dev)  # frames made in this sentence
        self.min_frames = torch.zeros(s, dtype=torch.long, device=dev)
        self.hidden = torch.zeros(s, hidden, dtype=dtype, device=dev)  # last talker output per row
        self.first_logits = torch.zeros(s, vocab, dtype=torch.float32, device=dev)  # the prefill's
        self.fresh = torch.zeros(s, dtype=torch.bool, device=dev)  # next logits come from the prefill
        self.logits = torch.zeros(s, vocab, dtype=torch.float32, device=dev)  # last codebook-0 logits, as computed
        self.next_embed = torch.zeros(s, 1, hidden, dtype=dtype, device=dev)
        self.seen = torch.zeros(s, vocab, dtype=torch.bool, device=dev)  # codebook-0 ids produced
        self.penalty = torch.ones(s, device=dev)
        self.trailing = torch.zeros(s, text, hidden, dtype=dtype, device=dev)
        self.trailing_len = torch.zeros(s, dtype=torch.long, device=dev)
        self.knobs, self.sub_knobs = Knobs.empty(s, dev), Knobs.empty(s, dev)
        self.noise = torch.ones(s, vocab, device=dev)
        self.sub_noise = torch.ones(s, self.groups - 1, p_vocab, device=dev)
        self.codes = torch.zeros(s, self.groups, dtype=torch.long, device=dev)
        self.suppress = torch.zeros(vocab, dtype=torch.bool, device=dev)
        self.suppress[vocab - SUPPRESSED_TOP_IDS:] = True
        self.suppress[self.eos] = False
        ids = torch.tensor([[tts.config.tts_pad_token_id]], device=dev)
        with torch.inference_mode():
            self.tts_pad = self.talker.text_projection(self.talker.get_text_embeddings()(ids))[0, 0]
        self.trailing[:] = self.tts_pad
        self.rows = torch.arange(s, device=dev)
        self.yes = torch.ones(s, dtype=torch.bool, device=dev)
        self.count = 0  # rows in slots 0..count-1
        # Host copies of what the host needs to plan a step without reading the device.
        self.host_length = [0] * s
        self.host_fresh = [False] * s
        self._attn = ALL_ATTENTION_FUNCTIONS["sdpa"]
        # Sampling may read knobs on the host only where that costs nothing: an eager CPU step (on a
        # GPU each read would wait for the device; in a graph it cannot happen at all).
        self.host_sampling = not static and torch.device(dev).type == "cpu"

    def _kv(self, context: int) -> tuple[int, int, int]:
        return self.t_heads[0], context, self.t_heads[1]

    @property
    def context(self) -> int:
        return self.k[0].shape[2]

    # -- rows in and out -----------------------------------------------------------------------
    def join(self, slot: int, prefill: torch.Tensor, trailing: torch.Tensor, settings: RowSettings,
             prefix: PrefixKV | None = None) -> None:
        """Prefill a row (1, L, H) into `slot` (slot == count adds a row; a lower slot restarts one)."""
        self.join_many([Join(slot, prefill, trailing, settings, prefix)])

    def fits(self, prefill_len: int, text_len: int) -> bool:
        """Whether a row with this prompt and trailing text fits a fixed-size batch (always when it grows)."""
        return self.grow or (prefill_len + 1 <= self.context and text_len + 1 <= self.trailing.shape[1])

    @torch.inference_mode()
    def join_many(self, rows: list[Join | tuple]) -> None:
        """Prefill several rows with one talker forward (left-padded like the official batched generate).

        One row without a prefix is prefilled exactly as the official generate does; several rows'
        caches and logits, or a row's rest after its cached prefix, equal their own whole prefill up to
        float rounding. With prefixes the cache holds each row's prefix right-aligned at the same end
        and the new positions after it, left-padded; the mask hides the gaps.
        """
        rows = [Join(*row) for row in rows]
        for row in rows:
            if row.slot > self.count + len(rows) - 1 or row.slot >= self.slots:
                raise ValueError(f"slot {row.slot} with {self.count} rows in {self.slots} slots")
        lengths = [row.prefill.shape[1] for row in rows]
        new = [row.new_tokens for row in rows]
        past = [n - m for n, m in zip(lengths, new, strict=True)]
        past_width, width = max(past), max(new)
        self._reserve(max(lengths) + 1, max(row.trailing.shape[1] for row in rows) + 1)
        talker = self.talker
        if len(rows) == 1 and not past_width:
            embeds = rows[0].prefill
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
        else:
            embeds = rows[0].prefill.new_zeros((len(rows), width, rows[0].prefill.shape[-1]))
            mask = torch.zeros((len(rows), past_width + width), dtype=torch.long, device=self.device)
            for i, row in enumerate(rows):
                embeds[i, width - new[i]:] = row.prefill[0, past[i]:]
                mask[i, past_width - past[i]:past_width] = 1
                mask[i, past_width + width - new[i]:] = 1
        position_ids = talker.get_rope_index(mask)[0][:, :, past_width:]
        cache = DynamicCache()
        if past_width:
            for j in range(len(self.k)):
                keys = self.k[j].new_zeros((len(rows), self.t_heads[0], past_width, self.t_heads[1]))
                values = torch.zeros_like(keys)
                for i, row in enumerate(rows):
                    if row.prefix is not None:
                        keys[i, :, past_width - past[i]:] = row.prefix.keys[j]
                        values[i, :, past_width - past[i]:] = row.prefix.values[j]
                cache.update(keys, values, j)
        out = talker.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                           past_key_values=cache, use_cache=True,
                           cache_position=torch.arange(past_width, past_width + width, device=self.device))
        hidden = out.last_hidden_state
        # The official generate takes the logits of the whole prefill and keeps the last: same GEMM shape.
        logits = talker.codec_head(hidden)[:, -1].float()
        for i, row in enumerate(rows):
            slot, n, p = row.slot, lengths[i], past[i]
            self.first_logits[slot] = logits[i]
            self.hidden[slot] = hidden[i, -1]
            for j, layer in enumerate(cache.layers):
                if p:
                    self.k[j][slot, :, :p] = row.prefix.keys[j]
                    self.v[j][slot, :, :p] = row.prefix.values[j]
                self.k[j][slot, :, p:n] = layer.keys[i, :, past_width + width - new[i]:]
                self.v[j][slot, :, p:n] = layer.values[i, :, past_width + width - new[i]:]
            self._reset_row(slot, n, int(position_ids[0, i, -1]) + 1 - n, row.trailing, row.settings)
        self.count = max(self.count, *(row.slot + 1 for row in rows))

    def prefix(self, slot: int, length: int) -> PrefixKV:
        """A copy of the first `length` cache positions of the row in `slot` (its prompt's prefix)."""
        if length > self.host_length[slot] or length < 1:
            raise ValueError(f"slot {slot} holds {self.host_length[slot]} positions, not {length}")
        with torch.inference_mode():
            return PrefixKV(tuple(k[slot, :, :length].clone() for k in self.k),
                            tuple(v[slot, :, :length].clone() for v in self.v))

    def _reset_row(self, slot: int, length: int, rope_delta: int, trailing: torch.Tensor,
                   settings: RowSettings) -> None:
        # Decode positions continue after the row's last prompt position.
        self.length[slot] = length
        self.host_length[slot] = length
        self.rope_delta[slot] = rope_delta
        self.frames[slot] = 0
        self.min_frames[slot] = settings.min_frames
        self.fresh[slot] = True
        self.host_fresh[slot] = True
        self.seen[slot] = False
        self.penalty[slot] = settings.repetition_penalty
        t = trailing.shape[1]
        self.trailing[slot] = self.tts_pad
        self.trailing[slot, :t] = trailing[0]
        self.trailing_len[slot] = t
        self.knobs.set_row(slot, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
                           do_sample=settings.do_sample)
        self.sub_knobs.set_row(slot, temperature=settings.subtalker_temperature, top_k=settings.subtalker_top_k,
                               top_p=settings.subtalker_top_p, do_sample=settings.subtalker_dosample)

    def leave(self, slot: int) -> int | None:
        """Remove the row in `slot`; the last row moves into it. Returns the slot that moved, if any."""
        last = self.count - 1
        self.count = last
        n = self.host_length[last]
        with torch.inference_mode():
            if slot == last:
                self.length[last] = 0
                self.host_length[last] = 0
                return None
            for k, v in zip(self.k, self.v, strict=True):
                k[slot, :, :n] = k[last, :, :n]
                v[slot, :, :n] = v[last, :, :n]
            for t in self._row_tensors():
                t[slot] = t[last]
            self.length[last] = 0  # a free slot padding a graph step writes at position 0
        self.host_length[slot], self.host_length[last] = n, 0
        self.host_fresh[slot] = self.host_fresh[last]
        return last

    def _row_tensors(self) -> list[torch.Tensor]:
        return [self.length, self.rope_delta, self.frames, self.min_frames, self.hidden, self.first_logits,
                self.fresh, self.next_embed, self.seen, self.penalty, self.trailing, self.trailing_len,
                self.noise, self.sub_noise, *self.knobs.tensors(), *self.sub_knobs.tensors()]

    def _reserve(self, context: int, text: int) -> None:
        """Room for `context` cache positions and `text` trailing vectors in every slot."""
        if context <= self.context and text <= self.trailing.shape[1]:
            return
        if not self.grow:
            raise ValueError(f"a row needs {context} positions and {text} text vectors; this batch has "
                             f"{self.context} and {self.trailing.shape[1]}")
        if context > self.context:
            size = max(context, 2 * self.context)
            self.k = [_grow(k, 2, size) for k in self.k]
            self.v = [_grow(v, 2, size) for v in self.v]
        if text > self.trailing.shape[1]:
            self.trailing = torch.cat([self.trailing, self.tts_pad.expand(
                self.slots, max(text, 2 * self.trailing.shape[1]) - self.trailing.shape[1], -1)], dim=1)

    def draw_noise(self, slot: int, generator: torch.Generator, sample: bool, sub_sample: bool) -> None:
        """This frame's random numbers for one row, from its own generator, in the official order."""
        if sample:
            self.noise[slot : slot + 1].exponential_(generator=generator)
        if sub_sample:
            for j in range(self.groups - 1):
                self.sub_noise[slot, j : j + 1].exponential_(generator=generator)

    # -- the two steps of a frame ----------------------------------------------------------------
    # Each is a host part (what to run, bookkeeping) around a device part that a CUDA graph can
    # capture: with `static` the device part's control flow and shapes depend on `b` only.
    @torch.inference_mode()
    def sample_and_predict(self, b: int, run: Callable[[Callable, int], None] | None = None) -> torch.Tensor:
        """Codes (b, 16) of the next frame of rows 0..b-1, on the device; prepares their next talker input.

        `run(fn, b)` runs the device part (default: call it; a graph runner replays it padded)."""
        fresh_only = not self.static and all(self.host_fresh[:b])
        if run is None:
            self._sample_device(b, fresh_only)
        else:
            run(self._sample_device, b)
        self.host_fresh[:b] = [False] * b
        return self.codes[:b]

    @torch.inference_mode()
    def talker_step(self, b: int, run: Callable[[Callable, int], None] | None = None) -> None:
        """One talker token for rows 0..b-1 from their `next_embed`."""
        if self.grow:  # room for this token; fixed batches cap rows' frames at join instead
            self._reserve(max(self.host_length[:b]) + 1, 0)
        if run is None:
            span = max(self.host_length[:b]) + 1
            self._talker_device(b, span, all(n == span - 1 for n in self.host_length[:b]))
        else:
            run(self._talker_device, b)
        for r in range(b):
            self.host_length[r] += 1

    def _sample_device(self, b: int, fresh_only: bool = False) -> None:
        talker, pred = self.talker, self.predictor
        hidden = self.hidden[:b]
        if fresh_only:  # only just prefilled: no codec head call (EosForcer counts them)
            logits = self.first_logits[:b].clone()
        else:
            logits = talker.codec_head(hidden.unsqueeze(1))[:, -1].float()
            logits = torch.where(self.fresh[:b, None], self.first_logits[:b], logits)
        self.logits[:b] = logits
        scores = penalize(logits, self.seen, self.penalty, b)
        early = self.frames[:b] < self.min_frames[:b]
        scores[:, self.eos] = torch.where(early, NEG_INF, scores[:, self.eos])
        scores = scores.masked_fill(self.suppress, NEG_INF)
        token = pick(scores, self.knobs, self.noise[:b], b, host=self.host_sampling)
        self.seen.index_put_((self.rows[:b], token), self.yes[:b])  # a device value: no host scalar in a graph
        self.fresh[:b] = False

        token_embed = talker.get_input_embeddings()(token[:, None])  # (b, 1, H)
        embeds = pred.small_to_mtp_projection(torch.cat((hidden.unsqueeze(1), token_embed), dim=1))
        codes = [token[:, None]]
        for j in range(self.groups - 1):
            start = 0 if j == 0 else j + 1
            out = self._predictor_forward(embeds, start, b)
            scores = pred.lm_head[j](out)[:, -1, :].float()
            code = pick(scores, self.sub_knobs, self.sub_noise[:b, j], b, host=self.host_sampling)[:, None]
            codes.append(code)
            if j < self.groups - 2:
                embeds = pred.small_to_mtp_projection(pred.model.get_input_embeddings()[j](code))
        table = pred.get_input_embeddings()
        parts = torch.cat([token_embed] + [table[i](codes[i + 1]) for i in range(self.groups - 1)], dim=1)
        k = torch.minimum(self.frames[:b], self.trailing_len[:b])  # past the text: tts_pad (filled there)
        text = self.trailing[self.rows[:b], k]
        self.next_embed[:b] = parts.sum(1, keepdim=True) + text.unsqueeze(1)
        self.frames[:b] += 1
        self.codes[:b] = torch.cat(codes, dim=-1)

    def _talker_device(self, b: int, span: int | None = None, uniform: bool = False) -> None:
        model = self.talker.model
        span = self.context if span is None else span
        pos = self.length[:b]
        x = self.next_embed[:b]
        position_ids = (pos + self.rope_delta[:b]).view(1, b, 1).expand(3, -1, -1)
        cos, sin = model.rotary_emb(x, position_ids)
        # Equal lengths read every position: no mask, exactly the official single-row attention.
        mask = None if uniform else (torch.arange(span, device=self.device)[None, :] <= pos[:, None])[:, None, None, :]
        rows = self.rows[:b]

        def write(i: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.k[i][rows, :, pos] = key[:, :, 0]
            self.v[i][rows, :, pos] = value[:, :, 0]
            return self.k[i][:b, :, :span], self.v[i][:b, :, :span]

        scaling = model.layers[0].self_attn.rope_scaling  # one talker config: the same for every layer

        def rope(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return apply_multimodal_rotary_pos_emb(q, k, cos, sin, scaling["mrope_section"], scaling["interleaved"])

        for i, layer in enumerate(model.layers):
            x = self._layer(layer, x, rope, lambda key, value, i=i: write(i, key, value), mask)
        self.hidden[:b] = model.norm(x)[:, 0]
        # Padding rows of a static step advance too: never past the cache (live rows stop well before).
        self.length[:b] = (pos + 1).clamp(max=self.context - 1) if self.static else pos + 1

    def _predictor_forward(self, embeds: torch.Tensor, start: int, b: int) -> torch.Tensor:
        model = self.predictor.model
        n = embeds.shape[1]
        positions = torch.arange(start, start + n, device=self.device).unsqueeze(0)
        cos, sin = model.rotary_emb(embeds, positions)
        x = embeds

        def write(i: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.pk[i][:b, :, start : start + n] = key
            self.pv[i][:b, :, start : start + n] = value
            return self.pk[i][:b, :, : start + n], self.pv[i][:b, :, : start + n]

        for i, layer in enumerate(model.layers[: model.config.num_hidden_layers]):
            x = self._layer(layer, x, lambda q, k: apply_rotary_pos_emb(q, k, cos, sin),
                            lambda key, value, i=i: write(i, key, value), None)
        return model.norm(x)

    def _layer(self, layer: torch.nn.Module, x: torch.Tensor, rope: Callable, write: Callable,
               mask: torch.Tensor | None) -> torch.Tensor:
        # The decoder layer's forward, with the cache write and attention span chosen here.
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        shape = (*h.shape[:-1], -1, attn.head_dim)
        q, k, v = grouped(attn, (attn.q_proj, attn.k_proj, attn.v_proj), h)
        q = attn.q_norm(q.view(shape)).transpose(1, 2)
        k = attn.k_norm(k.view(shape)).transpose(1, 2)
        v = v.view(shape).transpose(1, 2)
        q, k = rope(q, k)
        keys, values = write(k, v)
        out, _ = self._attn(attn, q, keys, values, mask, dropout=0.0, scaling=attn.scaling,
                            sliding_window=getattr(attn, "sliding_window", None))
        x = x + attn.o_proj(out.reshape(*h.shape[:-1], -1).contiguous())
        mlp = layer.mlp
        gate, up = grouped(mlp, (mlp.gate_proj, mlp.up_proj), layer.post_attention_layernorm(x))
        return x + mlp.down_proj(mlp.act_fn(gate) * up)


__all__ = ["FrameBatch", "Join", "PrefixKV", "RowSettings"]
