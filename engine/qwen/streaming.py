"""A request's Qwen3-TTS inputs and knobs, and the single-stream loop that reproduces the official `generate`.

The official path (`Qwen3TTSModel.generate_*` -> `Qwen3TTSForConditionalGeneration.generate` ->
HF `generate` on the talker, whose forward runs HF `generate` on the code predictor) returns codes
only at the end, draws from the global RNG and keeps `rope_deltas` on the talker module. Here:

  prepare_inputs    the prompt embeddings, trailing text and ICL reference codes, built op for op
                    as the official `generate` builds them (so the floats are identical)
  GenerationParams  the official knobs (checkpoint defaults + request overrides), validated
  iter_frames /     one request on a `FrameBatch` of one slot: the very loop the scheduler runs for
  stream_audio      many streams (frame_batch.py), used by tests and benchmarks; codes equal the
                    official generate's, greedy or seeded (a `torch.Generator` seeded with s draws
                    what `torch.manual_seed(s)` makes the global RNG draw; None = global RNG)

Nothing here mutates the model. Like every use of the model, call these only from the thread that
owns it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from ..errors import InvalidRequest
from .codec_stream import StreamingCodecDecoder
from .frame_batch import FrameBatch, RowSettings
from .loader import LoadedModel

MIN_FRAMES_BEFORE_EOS = 2  # the official generate passes min_new_tokens=2


@dataclass(frozen=True, eq=False)
class PreparedInput:
    """A request's talker inputs, built exactly as the official `generate` builds them (batch of 1).

    prefill (1, L, H): the prompt embeddings; trailing_text (1, T, H): text embeddings fed one per
    frame after the prefill; tts_pad (1, 1, H): fed once the text is used up; ref_code (R, 16):
    ICL reference codes (decoder context), else None.

    prefix_len: how many leading prompt positions depend on the voice only (speaker or clone prompt,
    language, instructions), never on the text to say; at most L - 1, so a prompt always has a rest to
    prefill. prefix_key: a digest of everything those positions are made from: requests with equal
    keys have equal prefixes, so one prefix's talker cache serves them all (`scheduler.FrameScheduler` keeps them).
    """

    kind: str
    text: str
    language: str
    speaker: str | None
    instruct: str | None  # as used: None when absent or dropped (0.6B CustomVoice drops it)
    non_streaming_mode: bool
    prefill: torch.Tensor
    trailing_text: torch.Tensor
    tts_pad: torch.Tensor
    ref_code: torch.Tensor | None = None
    prefix_len: int = 0
    prefix_key: bytes = b""


def _validate(loaded: LoadedModel, text: str, language: str, speaker: str | None, instruct: str | None,
              items: list | None) -> tuple[str, str | None, str | None]:
    if not text or not text.strip():
        raise InvalidRequest("text is empty", param="input")
    lang = (language or "auto").lower()
    if lang not in loaded.languages:
        raise InvalidRequest(f"unsupported language {language!r}; supported: {loaded.languages}", param="language")
    spk = speaker.lower() if speaker else None
    kind = loaded.kind
    if kind == "base":
        if not items or len(items) != 1:
            raise InvalidRequest("a Base model needs exactly one voice clone prompt", param="voice")
        if spk or instruct:
            raise InvalidRequest("a Base (clone) model takes neither a speaker nor instructions", param="voice")
        if items[0].icl_mode and (items[0].ref_code is None or not items[0].ref_text):
            raise InvalidRequest("an ICL clone prompt needs ref_code and ref_text", param="voice")
        return lang, None, None
    if items:
        raise InvalidRequest(f"a {kind} model does not take a voice clone prompt", param="voice")
    if kind == "custom_voice":
        if spk not in loaded.speakers:
            raise InvalidRequest(f"unknown speaker {speaker!r}; known: {loaded.speakers}", param="voice")
        if loaded.size in "0b6":  # the same (substring) test the official code uses to drop instruct
            instruct = None
    elif spk:
        raise InvalidRequest(f"a {kind} model does not take a speaker", param="voice")
    return lang, spk, (instruct or None)


def prepare_inputs(loaded: LoadedModel, *, text: str, language: str = "auto", speaker: str | None = None,
                   instruct: str | None = None, voice_clone_prompt: list | Any | None = None,
                   non_streaming_mode: bool | None = None) -> PreparedInput:
    """Validate the request for `loaded.kind` (raises `InvalidRequest`) and build its talker inputs.

    `voice_clone_prompt` (Base only) is a `VoiceClonePromptItem` or a list of one.
    `non_streaming_mode` defaults to what the official API uses for the kind (False for voice
    clone, True for custom voice and voice design).
    """
    items = voice_clone_prompt if isinstance(voice_clone_prompt, list) or voice_clone_prompt is None \
        else [voice_clone_prompt]
    lang, spk, instruct = _validate(loaded, text, language, speaker, instruct, items)
    non_streaming_mode = loaded.kind != "base" if non_streaming_mode is None else non_streaming_mode
    with torch.inference_mode():
        prefill, trailing, pad, prefix = _build_embeddings(loaded, text, lang, spk, instruct, items,
                                                           non_streaming_mode)
    ref_code = items[0].ref_code if items and items[0].icl_mode else None
    prefix_len = min(prefix.length, prefill.shape[1] - 1)
    return PreparedInput(kind=loaded.kind, text=text, language=lang, speaker=spk, instruct=instruct,
                         non_streaming_mode=non_streaming_mode, prefill=prefill, trailing_text=trailing,
                         tts_pad=pad, ref_code=ref_code, prefix_len=prefix_len, prefix_key=prefix.key(prefix_len))


class _VoicePrefix:
    """The leading prompt positions that do not depend on the text to say: their count, and what they
    are made of (token ids, speaker embedding, reference codes), hashed into a key.

    The prompt is [instructions] <|im_start|>assistant\\n [codec tags: think/language, speaker, pad]
    and then, in ICL mode, one position per reference-text token *summed* with one reference code
    (codec BOS first): `generate_icl_prompt` lays the reference text and then the target text over
    the reference codes. Positions up to the end of the reference text (or of the codes, whichever
    comes first) are the voice's alone; from there on each position holds a target-text token, so
    the rest of the ICL part cannot be shared even though its codes are the voice's. Without ICL (x-vector
    clones, speakers, designed voices) the first target-text token follows the codec tags.
    """

    def __init__(self) -> None:
        self.length = 0
        self._hash = hashlib.sha256(b"qwen-voice-prefix-1")

    def add(self, positions: int, *parts: torch.Tensor | bytes) -> None:
        self.length += positions
        for part in parts:
            data = part if isinstance(part, bytes) else _tensor_bytes(part)
            self._hash.update(len(data).to_bytes(8, "little") + data)

    def key(self, length: int) -> bytes:
        h = self._hash.copy()
        h.update(length.to_bytes(8, "little"))
        return h.digest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    return str(t.dtype).encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _build_embeddings(loaded: LoadedModel, text: str, lang: str, spk: str | None, instruct: str | None,
                      items: list | None, non_streaming: bool
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, _VoicePrefix]:
    # Mirrors `Qwen3TTSForConditionalGeneration.generate` for one request, op for op (same shapes,
    # same order) so the floats are identical; reuses the wrappers' text builders and the model's
    # generate_speaker_prompt / generate_icl_prompt helpers. Alongside, `prefix` records which
    # leading positions are the voice's alone and what they are made of.
    tts, model = loaded.model, loaded.model.model
    talker, cfg, tc, dev = model.talker, model.config, model.config.talker_config, model.talker.device

    def text_embed(ids: torch.Tensor) -> torch.Tensor:
        return talker.text_projection(talker.get_text_embeddings()(ids))

    def codec_embed(ids: list[list[int]]) -> torch.Tensor:
        return talker.get_input_embeddings()(torch.tensor(ids, device=dev, dtype=torch.long))

    input_id = tts._tokenize_texts([tts._build_assistant_text(text)])[0]
    prefix = _VoicePrefix()
    parts = []
    if instruct:
        instruct_id = tts._tokenize_texts([tts._build_instruct_text(instruct)])[0]
        parts.append(text_embed(instruct_id))
        prefix.add(instruct_id.shape[1], b"instruct", instruct_id)
    speaker_embed = prompt = None
    if items:
        prompt = tts._prompt_items_to_voice_clone_prompt(items)
        if prompt["x_vector_only_mode"][0] or prompt["icl_mode"][0]:
            speaker_embed = model.generate_speaker_prompt(prompt)[0]
    elif spk:
        speaker_embed = talker.get_input_embeddings()(torch.tensor(tc.spk_id[spk], device=dev, dtype=torch.long))
    language_id = None if lang == "auto" else tc.codec_language_id[lang]
    if lang in ("chinese", "auto") and spk and tc.spk_is_dialect[spk] is not False:
        language_id = tc.codec_language_id[tc.spk_is_dialect[spk]]
    ids = torch.tensor([[cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id]], device=dev)
    tts_bos, tts_eos, tts_pad = text_embed(ids).chunk(3, dim=1)
    if language_id is None:
        think = [[tc.codec_nothink_id, tc.codec_think_bos_id, tc.codec_think_eos_id]]
    else:
        think = [[tc.codec_think_id, tc.codec_think_bos_id, language_id, tc.codec_think_eos_id]]
    codec = [codec_embed(think)]
    if speaker_embed is not None:
        codec.append(speaker_embed.view(1, 1, -1))
    codec.append(codec_embed([[tc.codec_pad_id, tc.codec_bos_id]]))
    codec_in = torch.cat(codec, dim=1)
    head = torch.cat((tts_pad.expand(-1, codec_in.shape[1] - 2, -1), tts_bos), dim=1) + codec_in[:, :-1]
    embed = torch.cat((text_embed(input_id[:, :3]), head), dim=1)  # "<|im_start|>assistant\n" + codec tags
    prefix.add(embed.shape[1], b"head", input_id[:, :3], torch.tensor(think), bytes([non_streaming]),
               b"" if speaker_embed is None else speaker_embed)
    if prompt is not None and prompt["ref_code"][0] is not None and prompt["icl_mode"][0]:
        ref_id = tts._tokenize_texts([tts._build_ref_text(items[0].ref_text)])[0]
        ref_code = prompt["ref_code"][0].to(dev)
        icl, trailing = model.generate_icl_prompt(
            text_id=input_id[:, 3:-5], ref_id=ref_id[:, 3:-2], ref_code=ref_code,
            tts_pad_embed=tts_pad, tts_eos_embed=tts_eos, non_streaming_mode=non_streaming)
        embed = torch.cat([embed, icl], dim=1)
        # Streaming: reference tokens lie over codec BOS + reference codes, as far as both reach.
        # Non-streaming: over codec pad (the codes come after the whole text).
        shared = ref_id.shape[1] - 5 if non_streaming else min(ref_id.shape[1] - 5, ref_code.shape[0] + 1)
        prefix.add(shared, b"icl", ref_id[:, 3:-2], ref_code)
    else:
        embed = torch.cat([embed, text_embed(input_id[:, 3:4]) + codec_in[:, -1:]], dim=1)
        if non_streaming:  # the whole text in the prompt, then codec BOS
            n = input_id[:, 3:-5].shape[1]
            body = torch.cat((text_embed(input_id[:, 3:-5]), tts_eos), dim=1) + codec_embed([[tc.codec_pad_id] * (n + 1)])
            embed = torch.cat([embed[:, :-1], body, tts_pad + codec_embed([[tc.codec_bos_id]])], dim=1)
            trailing = tts_pad
        else:  # first text token in the prompt, the rest fed one per frame
            trailing = torch.cat((text_embed(input_id[:, 4:-5]), tts_eos), dim=1)
    prefill = torch.cat(parts + [embed], dim=1)
    return prefill, trailing, tts_pad, prefix


@dataclass(frozen=True)
class GenerationParams:
    """Sampling knobs of the official generate. Use `for_model` for the checkpoint's defaults.

    `max_frames` caps the frames produced; it equals the official `max_new_tokens - 1`.
    """

    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    do_sample: bool = True
    subtalker_dosample: bool = True
    subtalker_temperature: float = 0.9
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    max_frames: int = 8191
    min_frames: int = MIN_FRAMES_BEFORE_EOS  # EOS is refused before this many frames

    def __post_init__(self) -> None:
        checks = (
            (self.max_frames >= 1, "max_frames must be at least 1", "max_new_tokens"),
            (self.min_frames >= MIN_FRAMES_BEFORE_EOS, "min_frames must be at least 2", "min_new_tokens"),
            (self.temperature > 0 or not self.do_sample, "temperature must be > 0", "temperature"),
            (self.subtalker_temperature > 0 or not self.subtalker_dosample, "subtalker_temperature must be > 0",
             "subtalker_temperature"),
            (0 < self.top_p <= 1 and 0 < self.subtalker_top_p <= 1, "top_p must be in (0, 1]", "top_p"),
            (self.top_k >= 0 and self.subtalker_top_k >= 0, "top_k must be >= 0", "top_k"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0", "repetition_penalty"),
        )
        for ok, message, param in checks:
            if not ok:
                raise InvalidRequest(message, param=param)

    @classmethod
    def for_model(cls, loaded: LoadedModel, **overrides: Any) -> GenerationParams:
        """The checkpoint's generation_config.json defaults, then `overrides` that are not None.

        `max_new_tokens` is accepted too (official meaning: max_frames + 1), and `min_new_tokens`
        (EOS refused before that many frames; never below the official 2)."""
        names = {f.name for f in fields(cls)}
        values = {**loaded.generate_defaults, **{k: v for k, v in overrides.items() if v is not None}}
        if "max_new_tokens" in values:
            values.setdefault("max_frames", int(values.pop("max_new_tokens")) - 1)
        if "min_new_tokens" in values:
            values.setdefault("min_frames", max(MIN_FRAMES_BEFORE_EOS, int(values.pop("min_new_tokens"))))
        if set(overrides) - names - {"max_new_tokens", "min_new_tokens"}:
            raise TypeError(f"unknown generation parameters: {sorted(set(overrides) - names)}")
        return cls(**{k: v for k, v in values.items() if k in names})

    def official_kwargs(self) -> dict[str, Any]:
        """The same settings as kwargs for the official `generate_*` (for comparisons)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("max_frames", "min_frames")}
        kw["max_new_tokens"] = self.max_frames + 1
        return kw


def make_generator(loaded: LoadedModel, seed: int) -> torch.Generator:
    """A per-request generator on the model's device, equivalent to `torch.manual_seed(seed)`."""
    return torch.Generator(device=loaded.device).manual_seed(int(seed))


def row_settings(params: GenerationParams, max_frames: int | None = None) -> RowSettings:
    """A `FrameBatch` row's settings from the request's knobs (`max_frames` may lower the cap)."""
    return RowSettings(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                       repetition_penalty=params.repetition_penalty, do_sample=params.do_sample,
                       subtalker_dosample=params.subtalker_dosample, subtalker_temperature=params.subtalker_temperature,
                       subtalker_top_k=params.subtalker_top_k, subtalker_top_p=params.subtalker_top_p,
                       max_frames=min(params.max_frames, max_frames or params.max_frames), min_frames=params.min_frames)


class _FrameLoop:
    """One request on a `FrameBatch` of one slot: the same loop the scheduler runs for many."""

    def __init__(self, loaded: LoadedModel, prepared: PreparedInput, params: GenerationParams,
                 generator: torch.Generator | None):
        self.batch = FrameBatch(loaded, 1, context=prepared.prefill.shape[1] + 64,
                                text=prepared.trailing_text.shape[1] + 1)
        self.prepared, self.params, self.generator = prepared, params, generator
        self.frames, self.done, self.joined = 0, False, False

    def step(self) -> torch.Tensor | None:
        """Make the next frame's (16,) codes, or None when generation has ended."""
        self.done = self.done or self.frames >= self.params.max_frames
        if self.done:
            return None
        batch = self.batch
        if self.joined:
            batch.talker_step(1)
        else:
            batch.join(0, self.prepared.prefill, self.prepared.trailing_text, row_settings(self.params))
            self.joined = True
        batch.draw_noise(0, self.generator, self.params.do_sample, self.params.subtalker_dosample)
        codes = batch.sample_and_predict(1)[0].to("cpu", copy=True)
        if int(codes[0]) == batch.eos:
            self.done = True
            return None
        self.frames += 1
        return codes


def iter_frames(loaded: LoadedModel, prepared: PreparedInput, params: GenerationParams,
                generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield one (16,) long CPU tensor of codes per frame; stop at EOS or `params.max_frames`.

    Each `next()` runs one talker forward (the prefill for the first frame) and its code predictor.
    """
    loop = _FrameLoop(loaded, prepared, params, generator)
    while (codes := loop.step()) is not None:
        yield codes


def stream_audio(loaded: LoadedModel, prepared: PreparedInput, params: GenerationParams, *,
                 generator: torch.Generator | None = None, first_chunk_frames: int = 2, chunk_frames: int = 8,
                 ref_code: torch.Tensor | None = None) -> Iterator[np.ndarray | None]:
    """Yield None after each frame that completes no chunk, float32 24 kHz audio when one is ready.

    The first chunk comes after `first_chunk_frames` frames, then every `chunk_frames`, and the
    remainder when generation ends. Each `next()` runs at most one frame step plus, when a chunk is
    due, its decode, so closing the generator stops the work within one frame. For an ICL clone
    prompt the reference codes (`ref_code`, default `prepared.ref_code`) prime the decoder as left
    context and are not returned, like the official API cuts them off.
    """
    if first_chunk_frames < 1 or chunk_frames < 1:
        raise ValueError("chunk sizes must be >= 1 frame")
    loop = _FrameLoop(loaded, prepared, params, generator)
    decoder = StreamingCodecDecoder(loaded)
    ref = prepared.ref_code if ref_code is None else ref_code
    pending: list[torch.Tensor] = []
    due = first_chunk_frames
    while True:
        codes = loop.step()
        if codes is not None:
            pending.append(codes)
            if len(pending) < due:
                yield None
                continue
        if pending:  # a full chunk, or the remainder at the end
            if ref is not None:  # deferred to the first decode so the first step is only the prefill
                decoder.prime(ref)
                ref = None
            audio = decoder.decode(torch.stack(pending))
            pending, due = [], chunk_frames
            yield audio
        if codes is None:
            break
    tail = decoder.flush()
    if tail.size:
        yield tail


__all__ = ["GenerationParams", "PreparedInput", "iter_frames", "make_generator", "prepare_inputs", "stream_audio"]
