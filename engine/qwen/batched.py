"""Frame-level generation for a list of requests at once, reproducing the official batched `generate`.

The official `generate_*([...])` builds each request's prompt embeddings on its own, left-pads them
into one (B, L, H) batch with an attention mask, and runs HF `generate` on the talker: one talker
forward per frame for all B rows, and inside it one batched code-predictor `generate` (15 small
steps). This loop drives the same modules the same way, one frame per `next()`:

  prefill   the left-padded prompts with the padding mask; positions from the talker's own
            `get_rope_index`, so each row counts from 0 at its first real token, and its decode
            positions continue from its own length (`rope_delta` = -padding of the row)
  frame k   codebook 0 for all rows from the last logits with the official processors (the
            repetition penalty over each row's own codebook-0 history), the code predictor for all
            rows together, the next talker input per row = sum of its 16 code embeddings + its k-th
            trailing text embedding (tts_pad past its end), one talker step with the mask grown by 1.

Finished rows (EOS or their own `max_frames`) stay in the batch until every row is done, fed EOS as
their codebook 0 exactly like HF's generate feeds `pad_token_id` (= EOS) to finished sequences. That
keeps every tensor shape, and so every float of the live rows, identical to the official batched
run (dropping rows would change GEMM shapes and could flip a greedy argmax); the cost is that a
long item keeps paying for the short ones' rows, the same as the official path.

What matches the official batched codes exactly (tests/qwen/test_batched.py):
- greedy (do_sample / subtalker_dosample False): always;
- seeded sampling when the whole batch shares ONE random stream, i.e. `generators` None (global
  RNG after `torch.manual_seed(s)`) or the same generator for every row (`make_generator(loaded, s)`):
  then each draw is one `torch.multinomial` over all B rows, as HF's generate does. A batched draw
  consumes the stream jointly, so row i's samples depend on B and on the other rows.
- distinct per-row generators draw each row on its own (row i depends only on its generator and its
  inputs); no official batched call produces that, so it matches nothing official byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
)

from .codec_stream import StreamingCodecDecoder
from .loader import LoadedModel
from .streaming import GenerationParams, PreparedInput, _sample, build_processors


class _BatchLoop:
    """State of B requests generated together; `step()` makes one frame for every live row."""

    def __init__(self, loaded: LoadedModel, prepared: Sequence[PreparedInput], params: GenerationParams,
                 generators: Sequence[torch.Generator | None] | None, max_frames: Sequence[int] | None):
        if not prepared:
            raise ValueError("need at least one prepared input")
        tts = loaded.model.model
        self.talker, self.predictor = tts.talker, tts.talker.code_predictor
        self.params, self.prepared = params, list(prepared)
        b = self.batch = len(self.prepared)
        if generators is not None and len(generators) != b:
            raise ValueError(f"{len(generators)} generators for {b} inputs")
        if max_frames is not None and len(max_frames) != b:
            raise ValueError(f"{len(max_frames)} max_frames for {b} inputs")
        gens = list(generators) if generators is not None else [None] * b
        # One shared stream (None = global RNG) -> joint draws like HF; distinct ones -> per-row draws.
        self.shared = all(g is gens[0] for g in gens)
        self.generators = gens
        self.max_frames = [min(int(m), params.max_frames) for m in max_frames] if max_frames else [params.max_frames] * b
        tc = tts.config.talker_config
        self.eos = int(tc.codec_eos_token_id)
        self.groups = int(tc.num_code_groups)
        self.device = self.prepared[0].prefill.device
        self.processors, self.sub_processors = build_processors(params, self.eos, int(tc.vocab_size), self.device)

        # Left padding exactly as the official generate (zeros, mask 0 on the left).
        lengths = [p.prefill.shape[1] for p in self.prepared]
        width = max(lengths)
        hidden = self.prepared[0].prefill.shape[-1]
        self.prefill = self.prepared[0].prefill.new_zeros((b, width, hidden))
        self.mask = torch.zeros((b, width), dtype=torch.long, device=self.device)
        for i, (p, n) in enumerate(zip(self.prepared, lengths, strict=True)):
            self.prefill[i, width - n:] = p.prefill[0]
            self.mask[i, width - n:] = 1
        tts_pad = self.prepared[-1].tts_pad  # identical for every row (same model, same ids)
        longest = max(p.trailing_text.shape[1] for p in self.prepared)
        self.trailing = tts_pad.expand(b, longest, -1).clone()
        for i, p in enumerate(self.prepared):
            self.trailing[i, : p.trailing_text.shape[1]] = p.trailing_text[0]
        self.tts_pad = tts_pad

        self.cache, self.length = DynamicCache(), 0
        self.rope_delta: torch.Tensor | None = None
        self.history = torch.zeros((b, 0), dtype=torch.long, device=self.device)
        self.next_embed: torch.Tensor | None = None
        self.finished = [False] * b
        self.frames = [0] * b
        self.step_index = 0  # frames made so far by the batch (the official generation_step)

    @property
    def done(self) -> bool:
        return all(self.finished)

    @torch.inference_mode()
    def step(self) -> list[torch.Tensor | None] | None:
        """One frame for all rows: each row's (16,) codes, or None for a finished row; None at the end."""
        for i in range(self.batch):
            self.finished[i] = self.finished[i] or self.frames[i] >= self.max_frames[i]
        if self.done:
            return None
        hidden = self._talker_forward()
        scores = self.talker.codec_head(hidden)[:, -1, :].to(copy=True, dtype=torch.float32)
        token = self._draw(scores, self.processors, self.history, self.params.do_sample)
        live = torch.tensor([not f for f in self.finished], device=self.device)
        token = torch.where(live, token, torch.full_like(token, self.eos))  # HF: finished rows get pad (= EOS)
        self.history = torch.cat([self.history, token[:, None]], dim=-1)
        for i in range(self.batch):
            if not self.finished[i] and int(token[i]) == self.eos:
                self.finished[i] = True
        if self.done:
            return None
        codes, self.next_embed = self._predict(hidden[:, -1:, :], token[:, None])
        self.step_index += 1
        out: list[torch.Tensor | None] = []
        for i in range(self.batch):
            if self.finished[i]:
                out.append(None)
            else:
                self.frames[i] += 1
                out.append(codes[i])
        return out

    def _draw(self, scores: torch.Tensor, processors: LogitsProcessorList, history: torch.Tensor,
              do_sample: bool) -> torch.Tensor:
        if self.shared or not do_sample:
            return _sample(scores, processors, history, do_sample, self.generators[0])
        return torch.cat([_sample(scores[i : i + 1], processors, history[i : i + 1], do_sample, g)
                          for i, g in enumerate(self.generators)])

    def _talker_forward(self) -> torch.Tensor:
        if self.next_embed is None:  # prefill; positions as the official get_rope_index gives them
            embeds, mask = self.prefill, self.mask
            position_ids, delta = self.talker.get_rope_index(mask)
            self.rope_delta = delta - (1 - mask).sum(dim=-1).unsqueeze(1)
        else:
            embeds = self.next_embed
            self.mask = torch.cat([self.mask, self.mask.new_ones((self.batch, 1))], dim=-1)
            mask = self.mask
            pos = torch.arange(1, device=self.device).view(1, -1).expand(self.batch, -1)
            position_ids = pos.add(self.length + self.rope_delta).unsqueeze(0).expand(3, -1, -1)
        n = embeds.shape[1]
        cache_position = torch.arange(self.length, self.length + n, device=self.device)
        out = self.talker.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                past_key_values=self.cache, cache_position=cache_position, use_cache=True)
        self.length += n
        return out.last_hidden_state

    def _predict(self, past_hidden: torch.Tensor, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codebooks 1..15 of this frame for all rows, and the embeddings feeding the next talker step."""
        pred, b = self.predictor, self.batch
        token_embed = self.talker.get_input_embeddings()(token)  # (B, 1, H)
        embeds = pred.small_to_mtp_projection(torch.cat((past_hidden, token_embed), dim=1))
        cache = DynamicCache()
        no_history = self.history[:, :0]
        codes = [token]
        for j in range(self.groups - 1):
            n, start = embeds.shape[1], cache.get_seq_length()
            mask = torch.ones((b, start + n), dtype=torch.long, device=self.device)
            positions = torch.arange(start, start + n, device=self.device)
            out = pred.model(inputs_embeds=embeds, attention_mask=mask,
                             position_ids=positions.unsqueeze(0).expand(b, -1),
                             past_key_values=cache, cache_position=positions, use_cache=True)
            scores = pred.lm_head[j](out.last_hidden_state)[:, -1, :].to(copy=True, dtype=torch.float32)
            code = self._draw(scores, self.sub_processors, no_history, self.params.subtalker_dosample)[:, None]
            codes.append(code)
            if j < self.groups - 2:
                embeds = pred.small_to_mtp_projection(pred.model.get_input_embeddings()[j](code))
        table = pred.get_input_embeddings()
        hiddens = torch.cat([token_embed] + [table[i](codes[i + 1]) for i in range(self.groups - 1)], dim=1)
        next_embed = hiddens.sum(1, keepdim=True)
        k = self.step_index
        next_embed = next_embed + (self.trailing[:, k].unsqueeze(1) if k < self.trailing.shape[1] else self.tts_pad)
        return torch.cat(codes, dim=-1).cpu(), next_embed


def iter_frames_batched(loaded: LoadedModel, prepared: list[PreparedInput], params: GenerationParams,
                        generators: list[torch.Generator | None] | None = None, *,
                        max_frames: list[int] | None = None) -> Iterator[list[torch.Tensor | None]]:
    """Yield, per frame, a list of B items: row i's (16,) long CPU codes, or None once it has finished.

    Each `next()` runs one talker forward for all rows (the prefill for the first frame) and one
    batched code predictor. A row finishes at EOS or at its cap (`max_frames[i]`, at most
    `params.max_frames`); iteration ends when every row has finished. See the module docstring for
    `generators` (one shared stream reproduces the official seeded batched output).
    """
    loop = _BatchLoop(loaded, prepared, params, generators, max_frames)
    while (codes := loop.step()) is not None:
        yield codes


def stream_audio_batched(loaded: LoadedModel, prepared: list[PreparedInput], params: GenerationParams, *,
                         generators: list[torch.Generator | None] | None = None, max_frames: list[int] | None = None,
                         first_chunk_frames: int = 2, chunk_frames: int = 8) -> Iterator[list[np.ndarray | None]]:
    """Yield, per step, a list of B items: float32 24 kHz audio for a row whose chunk is ready, else None.

    Each row has its own `StreamingCodecDecoder` and the `stream_audio` schedule: its first chunk
    after `first_chunk_frames` of its frames, then every `chunk_frames`, and its remainder (plus the
    decoder's flush) in the step where the row finishes. ICL rows prime their decoder with their
    `ref_code` at their first decode. A row's chunks concatenated equal the one-shot decode of its
    codes. After the last frame step, one more list carries the remainders of rows ending then.
    """
    if first_chunk_frames < 1 or chunk_frames < 1:
        raise ValueError("chunk sizes must be >= 1 frame")
    loop = _BatchLoop(loaded, prepared, params, generators, max_frames)
    b = loop.batch
    decoders = [StreamingCodecDecoder(loaded) for _ in range(b)]
    refs = [p.ref_code for p in prepared]
    pending: list[list[torch.Tensor]] = [[] for _ in range(b)]
    due = [first_chunk_frames] * b
    closed = [False] * b

    def emit(i: int, final: bool) -> np.ndarray | None:
        parts = []
        if pending[i]:
            if refs[i] is not None:
                decoders[i].prime(refs[i])
                refs[i] = None
            parts.append(decoders[i].decode(torch.stack(pending[i])))
            pending[i], due[i] = [], chunk_frames
        if final:
            closed[i] = True
            tail = decoders[i].flush()
            if tail.size:
                parts.append(tail)
        return np.concatenate(parts) if parts else None

    while True:
        codes = loop.step()
        out: list[np.ndarray | None] = [None] * b
        for i in range(b):
            if closed[i]:
                continue
            c = None if codes is None else codes[i]
            if c is not None:
                pending[i].append(c)
                if len(pending[i]) >= due[i]:
                    out[i] = emit(i, final=False)
            else:
                out[i] = emit(i, final=True)
        if codes is None:
            if any(x is not None for x in out):
                yield out
            break
        yield out


__all__ = ["iter_frames_batched", "stream_audio_batched"]
