"""Incremental decoding of 12 Hz codec frames to 24 kHz audio, keeping the decoder's state.

The Qwen3-TTS 12 Hz decoder (`Qwen3TTSTokenizerV2Decoder`) is causal end to end:

    codes -> quantizer (per frame) -> causal conv k3 -> transformer (causal, sliding window 72)
          -> 2x [transposed conv k=s=2, ConvNeXt (causal depthwise conv k7)]
          -> causal conv k7 -> 4x [SnakeBeta, causal transposed conv k=2s, 3 residual units
             (causal convs k7, dilation 1/3/9)] -> SnakeBeta -> causal conv k7 -> clamp

so it can run frame by frame with per-stream state and no re-decoding:
- each causal conv keeps its last (effective kernel - 1) input samples (zeros at the start stand
  for the one-shot decode's left zero padding);
- each causal transposed conv keeps ceil(k/s) - 1 input frames: output sample p depends only on
  inputs floor(p/s) - 1 and floor(p/s), and the one-shot decode trims the incomplete tail;
- the transformer keeps a sliding-window KV cache (HF `DynamicCache` built from the decoder config).

The result equals the one-shot `speech_tokenizer.decode` up to float rounding (≤5e-7 here) for
outputs up to 300 frames. Longer outputs are decoded by the official code in 300-frame chunks with
only 25 frames of context, which itself deviates (~5e-5) from this exact causal decode.

`left_context_frames` selects the simpler fallback instead (`stateful=False`): re-decode each new
chunk with that many previous frames of context and drop their samples, like the official
`chunked_decode` does.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .loader import LoadedModel

# Frames of conv-stack warm-up when priming with a long reference: the conv upsampler's receptive
# field is about 10 frames, so its state after 16 frames no longer depends on anything earlier.
CONV_WARMUP_FRAMES = 16
# Convolutions over at most this many columns (streams x samples) run as one GEMM: few columns
# leave oneDNN's convolution bound by handling its weight (the first 1024->1536 k7 conv: 18 ms for
# 4 streams' single frame, ~3 ms as a GEMM), many make its own kernel the faster one.
GEMM_COLUMNS = 256


class _State:
    """Everything one stream's decoder remembers: conv tails per module and the transformer cache."""

    def __init__(self, cache: object):
        self.tails: dict[int, torch.Tensor] = {}
        self.cache = cache
        self.position = 0  # frames seen by the transformer


class StreamingCodecDecoder:
    """Decode codes chunk by chunk to exactly 1920 samples per frame, for one stream.

    Not thread-safe and bound to one stream; create one per request (cheap: no tensors until used).
    """

    def __init__(self, loaded: LoadedModel, left_context_frames: int = 25, *, stateful: bool = True):
        tokenizer = loaded.model.model.speech_tokenizer
        self._codec = tokenizer.model
        self._dec = self._codec.decoder
        self.device = tokenizer.device
        self.upsample = int(self._dec.total_upsample)
        self.num_quantizers = int(self._dec.config.num_quantizers)
        self.left_context_frames = int(left_context_frames)
        self.stateful = stateful
        self._history: torch.Tensor | None = None  # fallback mode: previous frames for context
        self._state: _State | None = None
        self.frames = 0

    # -- public API ------------------------------------------------------------------------
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """Decode `codes` (n, 16) new frames; returns exactly n * 1920 float32 samples."""
        codes = self._check(codes)
        if codes.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            wav = self._decode_stateful(codes, conv_from=0) if self.stateful else self._decode_context(codes)
        self.frames += codes.shape[0]
        return wav.float().cpu().numpy().reshape(-1)

    def prime(self, codes: torch.Tensor) -> None:
        """Feed context frames (an ICL reference) without producing audio.

        The transformer sees every frame; the conv stack only the last CONV_WARMUP_FRAMES, which
        is enough for its state to be exact and saves most of the cost of a long reference.
        """
        codes = self._check(codes)
        if codes.shape[0] == 0:
            return
        with torch.inference_mode():
            if self.stateful:
                self._decode_stateful(codes, conv_from=max(0, codes.shape[0] - CONV_WARMUP_FRAMES))
            else:
                self._remember(codes)

    def save_state(self) -> object:
        """A copy of everything decoded so far (e.g. after priming), for `load_state` on another decoder."""
        with torch.inference_mode():
            return copy.deepcopy((self._state, self._history))

    def load_state(self, saved: object) -> None:
        """Continue from a `save_state` copy; the copy stays untouched (it is copied again)."""
        with torch.inference_mode():
            self._state, self._history = copy.deepcopy(saved)

    def flush(self) -> np.ndarray:
        """Audio still owed at the end of the stream: none, the decoder is causal without lookahead."""
        return np.zeros(0, dtype=np.float32)

    # -- helpers -----------------------------------------------------------------------------
    def _check(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if codes.ndim == 1:
            codes = codes.unsqueeze(0)
        if codes.ndim != 2 or codes.shape[1] != self.num_quantizers:
            raise ValueError(f"codes must be (n, {self.num_quantizers}), got {tuple(codes.shape)}")
        # The official decode clamps negative (padding) ids to 0.
        return codes.to(device=self.device, dtype=torch.long).clamp(min=0)

    def _remember(self, codes: torch.Tensor) -> None:
        hist = codes if self._history is None else torch.cat([self._history, codes], dim=0)
        self._history = hist[-self.left_context_frames :] if self.left_context_frames > 0 else hist[:0]

    def _decode_context(self, codes: torch.Tensor) -> torch.Tensor:
        ctx = self._history if self._history is not None else codes[:0]
        full = torch.cat([ctx, codes], dim=0).transpose(0, 1).unsqueeze(0)  # (1, 16, T)
        wav = self._dec(full)[0, 0]
        self._remember(codes)
        return wav[ctx.shape[0] * self.upsample :]

    def _new_state(self) -> _State:
        from transformers.cache_utils import DynamicCache

        return _State(DynamicCache(config=self._dec.pre_transformer.config))

    def _decode_stateful(self, codes: torch.Tensor, conv_from: int) -> torch.Tensor:
        return self._upsample(self._transform(codes.unsqueeze(0))[..., conv_from:])[0, 0]

    def _transform(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantizer, first conv and the sliding-window transformer: (B, n, 16) codes -> (B, C, n), B
        streams at the same position in one call (the state holds their stacked caches and tails)."""
        if self._state is None:
            self._state = self._new_state()
        st = self._state
        dec = self._dec
        n = codes.shape[1]
        hidden = dec.quantizer.decode(codes.transpose(1, 2))  # (B, C, n)
        hidden = self._conv(dec.pre_conv, hidden).transpose(1, 2)
        positions = torch.arange(st.position, st.position + n, device=hidden.device)
        hidden = dec.pre_transformer(
            inputs_embeds=hidden, past_key_values=st.cache, use_cache=True, cache_position=positions
        ).last_hidden_state
        st.position += n
        return hidden.permute(0, 2, 1)

    def _upsample(self, hidden: torch.Tensor) -> torch.Tensor:
        """The conv stack from (B, C, n) to (B, 1, n * 1920) samples, continuing the state's tails."""
        for trans, convnext in self._dec.upsample:
            hidden = self._trans_conv(trans, hidden)
            hidden = self._convnext(convnext, hidden)
        wav = hidden
        for block in self._dec.decoder:
            wav = self._block(block, wav)
        return wav.clamp(min=-1, max=1)

    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        name = type(block).__name__
        if name.endswith("CausalConvNet"):
            return self._conv(block, x)
        if name.endswith("DecoderDecoderBlock"):
            for sub in block.block:
                x = self._block(sub, x)
            return x
        if name.endswith("CausalTransConvNet"):
            return self._trans_conv(block, x)
        if name.endswith("ResidualUnit"):
            y = self._conv(block.conv1, _activate(block.act1, x))
            return self._conv(block.conv2, _activate(block.act2, y)).add_(x)
        return _activate(block, x)  # SnakeBeta and other pointwise modules need no state

    def _conv(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A causal conv (stride 1) continuing from its remembered left context."""
        keep = module.padding  # the one-shot decode's left zero padding (kernel - stride, stride 1)
        tail = self._tail(module, x, keep)
        full = torch.cat([tail, x], dim=-1) if keep > 0 else x
        if keep > 0:
            self._state.tails[id(module)] = full[..., -keep:]
        conv = module.conv
        if conv.groups == 1 and x.shape[0] * x.shape[-1] <= GEMM_COLUMNS:
            return _conv_as_gemm(conv, full)
        return conv(full).contiguous()

    def _trans_conv(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A causal transposed conv: prepend the frames that still overlap the new outputs."""
        conv = module.conv
        stride, kernel = conv.stride[0], conv.kernel_size[0]
        keep = -(-kernel // stride) - 1
        tail = self._tail(module, x, keep)
        full = torch.cat([tail, x], dim=-1) if keep > 0 else x
        if keep > 0:
            self._state.tails[id(module)] = full[..., -keep:]
        # The 12 Hz decoder's kernels are multiples of their strides. For a few columns oneDNN's
        # transposed convolution costs far more than its arithmetic (it reorders the weight on
        # every call: the 1536->768 k16 one took 41 ms for 4 streams' single frame, 5.5 ms as a GEMM);
        # for many, its own kernel is faster (the 192->96 one over 4 x 8 frames: 30 ms, 64 ms).
        if kernel % stride == 0 and conv.groups == 1 and x.shape[0] * x.shape[-1] <= 2 * GEMM_COLUMNS:
            return _trans_conv_as_gemm(conv, full, keep)
        y = conv(full)
        start = keep * stride
        return y[..., start : start + x.shape[-1] * stride].contiguous()

    def _convnext(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        h = self._conv(block.dwconv, x).permute(0, 2, 1)
        h = block.pwconv2(block.act(block.pwconv1(block.norm(h))))
        return x + (block.gamma * h).permute(0, 2, 1)

    def _tail(self, module: nn.Module, x: torch.Tensor, keep: int) -> torch.Tensor:
        tail = self._state.tails.get(id(module))
        if tail is None:
            tail = x.new_zeros(x.shape[0], x.shape[1], keep)
        return tail


def _conv_as_gemm(conv: nn.Conv1d, full: torch.Tensor) -> torch.Tensor:
    """`conv(full)` (stride 1, no padding, one group) as one matrix product over the stacked shifted
    inputs, reading the weight as it is stored."""
    out_ch, in_ch, k = conv.weight.shape
    d = conv.dilation[0]
    n = full.shape[-1] - d * (k - 1)
    cols = torch.stack([full[..., i * d : i * d + n] for i in range(k)], dim=2)  # (B, C, k, n): weight order
    y = _matmul_rows(conv.weight.view(out_ch, in_ch * k), cols.view(full.shape[0], in_ch * k, n))
    return y if conv.bias is None else y.add_(conv.bias[:, None])


def _trans_conv_as_gemm(conv: nn.ConvTranspose1d, full: torch.Tensor, keep: int) -> torch.Tensor:
    """The outputs of `conv(full)` (kernel a multiple of the stride, no padding) for the frames after the
    first `keep`: every input frame's k output taps as one matrix product, then overlap-added."""
    in_ch, out_ch, k = conv.weight.shape
    s = conv.stride[0]
    taps = k // s
    b, _, t = full.shape
    # (B*t, Cin) @ (Cin, O*k): the weight read row by row as stored, once for all rows and frames.
    z = (full.transpose(1, 2).reshape(b * t, in_ch) @ conv.weight.view(in_ch, out_ch * k)).view(b, t, out_ch, taps, s)
    n = t - keep
    y = z[:, keep:, :, 0, :].clone()  # (B, n, O, s)
    for j in range(1, taps):  # output frame f gets tap j of input frame f - j
        y.add_(z[:, keep - j : t - j, :, j, :])
    if conv.bias is not None:
        y.add_(conv.bias[:, None])
    return y.permute(0, 2, 1, 3).reshape(b, out_ch, n * s)


def _matmul_rows(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`weight @ x` for x (B, C, n) -> contiguous (B, O, n), reading the weight once for all B rows
    (a broadcast matmul would run one product, and one read of the weight, per row)."""
    b, c, n = x.shape
    if b == 1:
        return torch.matmul(weight, x)
    y = weight @ x.transpose(0, 1).reshape(c, b * n)
    return y.view(-1, b, n).transpose(0, 1).contiguous()


def _activate(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`module(x)`; SnakeBeta (x + sin^2(x * e^alpha) / (e^beta + 1e-9)) computed in one buffer instead
    of five. The same operations in the same order, so the same bits; at the last upsampling stage
    each of those buffers is 96 channels x 1920 samples per frame per stream, and allocating them
    cost about as much as the arithmetic."""
    if not type(module).__name__.endswith("SnakeBeta"):
        return module(x)
    alpha = torch.exp(module.alpha)[None, :, None]
    inv_beta = 1.0 / (torch.exp(module.beta)[None, :, None] + module.no_div_by_zero)
    y = x * alpha
    return y.sin_().pow_(2).mul_(inv_beta).add_(x)


def decode_together(decoders: list[StreamingCodecDecoder], codes: list[torch.Tensor]) -> list[np.ndarray]:
    """Decode several streams' new frames at once: their conv stacks (most of the cost) run as one
    batch over their stacked tails, and so does the transformer when all streams are at the same
    position (streams that started together), over their stacked caches; otherwise each runs its own
    transformer first. Streams with different frame counts, or decoders in the fallback mode, are
    decoded one by one. The audio equals each decoder's own `decode` up to float rounding of the
    batched products."""
    if len(decoders) < 2 or not all(d.stateful for d in decoders) or len({int(len(c)) for c in codes}) > 1:
        return [d.decode(c) for d, c in zip(decoders, codes, strict=True)]
    lead = decoders[0]
    with torch.inference_mode():
        checked = [d._check(c) for d, c in zip(decoders, codes, strict=True)]
        for d in decoders:
            if d._state is None:
                d._state = d._new_state()
        states = [d._state for d in decoders]
        together = len({st.position for st in states}) == 1
        if together:
            joint = _State(_stacked_cache([st.cache for st in states]) or lead._new_state().cache)
            joint.position = states[0].position
            keys = {k for st in states for k in st.tails}
            codes_in = torch.stack(checked)
        else:
            hidden = torch.cat([d._transform(c.unsqueeze(0)) for d, c in zip(decoders, checked, strict=True)])
            joint = _State(None)
            keys = {k for st in states for k in st.tails} - {id(lead._dec.pre_conv)}
        for key in keys:
            like = next(st.tails[key] for st in states if key in st.tails)
            joint.tails[key] = torch.cat([st.tails.get(key, torch.zeros_like(like)) for st in states])
        own, lead._state = lead._state, joint
        try:
            if together:
                hidden = lead._transform(codes_in)
            wav = lead._upsample(hidden)
        finally:
            lead._state = own
        for i, st in enumerate(states):
            for key, tail in joint.tails.items():
                st.tails[key] = tail[i : i + 1]
            if together:
                st.position = joint.position
                _take_row(joint.cache, i, st.cache)
        n = int(len(codes[0]))
        for d in decoders:
            d.frames += n
        return [w.float().cpu().numpy().reshape(-1) for w in wav[:, 0]]


def _stacked_cache(caches: list) -> object | None:
    """One transformer cache for streams at the same position: their layers' keys and values stacked
    (None when none has seen a frame yet: an empty cache serves)."""
    first = caches[0]
    if not any(getattr(layer, "is_initialized", False) for layer in first.layers):
        return None
    joint = copy.copy(first)
    joint.layers = []
    for i, layer in enumerate(first.layers):
        stacked = copy.copy(layer)
        stacked.keys = torch.cat([c.layers[i].keys for c in caches])
        stacked.values = torch.cat([c.layers[i].values for c in caches])
        joint.layers.append(stacked)
    return joint


def _take_row(joint: object, row: int, cache: object) -> None:
    """Give `cache` row `row` of the stacked cache `joint` after a joint step."""
    layers = []
    for layer in joint.layers:
        own = copy.copy(layer)
        own.keys, own.values = layer.keys[row : row + 1], layer.values[row : row + 1]
        layers.append(own)
    cache.layers = layers


def decode_codes(loaded: LoadedModel, codes: torch.Tensor) -> np.ndarray:
    """The official one-shot decode of (n, 16) codes (what `generate_*` returns), for comparisons."""
    wavs, _ = loaded.model.model.speech_tokenizer.decode([{"audio_codes": torch.as_tensor(codes)}])
    return np.asarray(wavs[0], dtype=np.float32)


__all__ = ["CONV_WARMUP_FRAMES", "StreamingCodecDecoder", "decode_codes", "decode_together"]
