"""Random-weight Qwen3-TTS checkpoints with the real architecture, for tests and benchmarks.

No model weights can be downloaded here, yet the engine must run the real `qwen_tts` code paths.
`write_random_checkpoint` builds the real config and model classes (`Qwen3TTSConfig`,
`Qwen3TTSForConditionalGeneration`, the 12 Hz `Qwen3TTSTokenizerV2Model`) with random weights and
writes a folder that `qwen_tts.Qwen3TTSModel.from_pretrained(folder)` loads exactly like a published
checkpoint: config.json, generation_config.json, a byte-level BPE text tokenizer, model.safetensors
and speech_tokenizer/ (config, weights, preprocessor_config.json).

Sizes: "tiny" (a few MB, built in seconds, for tests) keeps every structural property that matters
(16 code groups, codec control ids inside the top 1024 talker ids, the real codec rates so a frame is
1920 samples at 24 kHz) and shrinks the widths; "0.6b" and "1.7b" use the published dimensions
(benchmarks only: 0.6b takes ~20 s and ~2.5 GB of disk).

Random weights almost never emit the codec EOS, so `force_eos_after` biases the EOS logit after a
chosen number of frames; it works for the official `generate_*` and for `engine.qwen.streaming`.

CLI: `python -m engine.qwen.random_model DIR --kind base --size tiny [--seed 0]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

KINDS = ("base", "custom_voice", "voice_design")
SIZES = ("tiny", "0.6b", "1.7b")
SPEAKERS = ("aiden", "dylan", "eric", "ono_anna", "ryan", "serena", "sohee", "uncle_fu", "vivian")
MARKER = "random_checkpoint.json"  # written last: its presence means the folder is complete

# Control/language/speaker ids follow the published 12 Hz layout: codebook ids 0..2047, everything
# else in 2048..3071 (the top 1024 ids, which generation suppresses except for EOS).
_CODEC_IDS = dict(codec_pad_id=2148, codec_bos_id=2149, codec_eos_token_id=2150, codec_think_id=2154,
                  codec_nothink_id=2155, codec_think_bos_id=2156, codec_think_eos_id=2157)
_LANGUAGE_IDS = dict(english=2050, german=2053, spanish=2054, chinese=2055, japanese=2058, french=2061,
                     sichuan_dialect=2062, korean=2064, russian=2069, italian=2070, portuguese=2071,
                     beijing_dialect=2074)
_SPEAKER_IDS = dict(aiden=2861, sohee=2864, ono_anna=2873, eric=2875, dylan=2878, uncle_fu=3010,
                    ryan=3061, vivian=3065, serena=3066)
_DIALECTS = dict(dylan="beijing_dialect", eric="sichuan_dialect")

# Text specials get small ids so a tiny text vocabulary can hold them.
_TEXT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

GENERATION_CONFIG = dict(do_sample=True, top_k=50, top_p=1.0, temperature=0.9, repetition_penalty=1.05,
                         subtalker_dosample=True, subtalker_top_k=50, subtalker_top_p=1.0,
                         subtalker_temperature=0.9, max_new_tokens=8192)

# Per size: talker, code predictor, speaker encoder, codec decoder, Mimi encoder dimensions.
_DIMS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        codebook=64, text_vocab=512, text_hidden=32,
        talker=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, mrope=[4, 2, 2]),
        predictor=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=16),
        spk=dict(enc_channels=[32, 32, 32, 32, 96], enc_attention_channels=16, enc_se_channels=16),
        decoder=dict(hidden_size=32, latent_dim=32, codebook_dim=32, decoder_dim=64, intermediate_size=64,
                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=16),
        mimi=dict(hidden_size=32, num_filters=8, codebook_dim=32, vector_quantization_hidden_dimension=32,
                  upsample_groups=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=16, num_quantizers=16),
    ),
    "0.6b": dict(
        codebook=2048, text_vocab=151936, text_hidden=2048,
        talker=dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, mrope=[24, 20, 20]),
        predictor=dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=5, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128),
        spk=dict(enc_channels=[512, 512, 512, 512, 1536], enc_attention_channels=128, enc_se_channels=128),
        decoder=dict(hidden_size=512, latent_dim=1024, codebook_dim=512, decoder_dim=1536, intermediate_size=1024,
                     num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=16, head_dim=64),
        mimi=dict(num_quantizers=32),
    ),
}
_DIMS["1.7b"] = {
    **_DIMS["0.6b"],
    "talker": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                   num_key_value_heads=8, head_dim=128, mrope=[24, 20, 20]),
}


def _size_label(size: str, kind: str) -> str:
    """The `tts_model_size` to write. Tiny custom_voice/voice_design say "1b7" because qwen_tts drops
    the instruct of a "0b6" CustomVoice model and the tests need instruct honoured."""
    if size == "0.6b":
        return "0b6"
    if size == "1.7b":
        return "1b7"
    return "0b6" if kind == "base" else "1b7"


def _codec_id(real_id: int, codebook: int) -> int:
    # Keep each id's offset inside the top 1024 of the talker vocabulary (codebook + 1024).
    return real_id - 2048 + codebook


def _tts_config(kind: str, size: str, label: str | None):
    from qwen_tts.core.models import Qwen3TTSConfig

    d = _DIMS[size]
    cb = d["codebook"]
    t = dict(d["talker"])
    mrope = t.pop("mrope")
    speakers = SPEAKERS if kind == "custom_voice" else ()
    talker = dict(
        **t,
        vocab_size=cb + 1024, text_vocab_size=d["text_vocab"], text_hidden_size=d["text_hidden"],
        num_code_groups=16, rope_theta=1_000_000, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_scaling={"mrope_section": mrope, "interleaved": True, "rope_type": "default"},
        code_predictor_config=dict(**d["predictor"], vocab_size=cb, num_code_groups=16, rope_theta=1_000_000,
                                   max_position_embeddings=65536, rms_norm_eps=1e-6),
        codec_language_id={k: _codec_id(v, cb) for k, v in _LANGUAGE_IDS.items()},
        spk_id={s: _codec_id(_SPEAKER_IDS[s], cb) for s in speakers},
        spk_is_dialect={s: _DIALECTS.get(s, False) for s in speakers},
        **{k: _codec_id(v, cb) for k, v in _CODEC_IDS.items()},
    )
    spk = dict(**d["spk"], mel_dim=128, enc_dim=t["hidden_size"], sample_rate=24000)
    ids = {name: i for i, name in enumerate(_TEXT_SPECIALS)}
    return Qwen3TTSConfig(
        talker_config=talker, speaker_encoder_config=spk, tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_size=label or _size_label(size, kind), tts_model_type=kind,
        im_start_token_id=ids["<|im_start|>"], im_end_token_id=ids["<|im_end|>"],
        tts_pad_token_id=ids["<tts_pad>"], tts_bos_token_id=ids["<tts_text_bos>"],
        tts_eos_token_id=ids["<tts_text_eod>"], architectures=["Qwen3TTSForConditionalGeneration"],
    )


def _codec_config(size: str):
    from qwen_tts.core import Qwen3TTSTokenizerV2Config

    d = _DIMS[size]
    decoder = dict(**d["decoder"], codebook_size=d["codebook"], num_quantizers=16, sliding_window=72,
                   upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2])
    encoder = dict(**d["mimi"], codebook_size=d["codebook"], frame_rate=12.5, sampling_rate=24000,
                   upsampling_ratios=[8, 6, 5, 4], use_causal_conv=True)
    return Qwen3TTSTokenizerV2Config(
        encoder_config=encoder, decoder_config=decoder, encoder_valid_num_quantizers=16,
        input_sample_rate=24000, output_sample_rate=24000, decode_upsample_rate=1920, encode_downsample_rate=1920,
        architectures=["Qwen3TTSTokenizerV2Model"],
    )


def _write_text_tokenizer(out: Path) -> None:
    """A byte-level BPE with the Qwen2 split regex, wrapped as Qwen2TokenizerFast.

    Merges make "assistant" one token so `<|im_start|>assistant\\n` is 3 ids, as with the real
    tokenizer: qwen_tts slices the prompt ids at fixed offsets (3 in front, 5 behind).
    """
    from qwen_tts.core.models import Qwen3TTSProcessor
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab = {tok: i for i, tok in enumerate(_TEXT_SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):  # a set: unordered, varies with PYTHONHASHSEED
        vocab.setdefault(ch, len(vocab))
    word, merges = "assistant", []
    for i in range(2, len(word) + 1):
        merges.append((word[: i - 1], word[i - 1]))
        vocab.setdefault(word[:i], len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in _TEXT_SPECIALS])
    fast = Qwen2TokenizerFast(tokenizer_object=tok, unk_token=None, bos_token=None, eos_token="<|endoftext|>",
                              pad_token="<|endoftext|>", errors="replace", add_prefix_space=False)
    Qwen3TTSProcessor(tokenizer=fast).save_pretrained(str(out))


def _fill_codebooks(module: nn.Module) -> None:
    # Codebooks are zeros at construction; random centroids make codes decode to distinct vectors.
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if name.endswith("embedding_sum") or name.endswith("embed_sum"):
            tensor.data.normal_()


def _fix_codec_init(codec: nn.Module) -> None:
    """The HF init leaves the decoder output at ~1e-8 RMS; PyTorch's default init gives audible audio."""
    _fill_codebooks(codec)
    for m in codec.decoder.modules():
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
            m.reset_parameters()
        if hasattr(m, "gamma") and isinstance(m.gamma, nn.Parameter):  # ConvNeXt layer scale starts at 1e-6
            m.gamma.data.fill_(1.0)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_random_checkpoint(out_dir: str | Path, kind: str, size: str = "tiny", seed: int = 0,
                            size_label: str | None = None) -> Path:
    """Write a random-weight Qwen3-TTS-12Hz checkpoint of `kind` and `size` into `out_dir`.

    Deterministic for a given seed (same bytes in model.safetensors); the caller's RNG state is left
    untouched. `size_label` overrides the `tts_model_size` written ("0b6" | "1b7"), e.g. to get a
    tiny CustomVoice model that drops instruct like the published 0.6B one.
    """
    from qwen_tts.core import Qwen3TTSTokenizerV2Model
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3TTSForConditionalGeneration(_tts_config(kind, size, size_label)).eval()
        model.save_pretrained(str(out))
        del model
        torch.manual_seed(seed + 1)
        codec = Qwen3TTSTokenizerV2Model(_codec_config(size)).eval()
        _fix_codec_init(codec)
        codec.save_pretrained(str(out / "speech_tokenizer"))
        del codec

    # save_pretrained writes `"model_type": ""` for the speaker encoder, whose config class accepts
    # no extra keys, so loading would fail: drop it.
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    cfg.get("speaker_encoder_config", {}).pop("model_type", None)
    _write_json(out / "config.json", cfg)
    # qwen_tts reads generation_config.json as a plain dict of generate defaults.
    _write_json(out / "generation_config.json", GENERATION_CONFIG)
    _write_json(out / "speech_tokenizer" / "preprocessor_config.json", dict(
        feature_extractor_type="EncodecFeatureExtractor", feature_size=1, padding_side="right",
        padding_value=0.0, return_attention_mask=True, sampling_rate=24000, chunk_length_s=None, overlap=None))
    _write_text_tokenizer(out)
    _write_json(out / MARKER, dict(kind=kind, size=size, seed=seed, random=True))
    return out


def is_complete(out_dir: str | Path) -> bool:
    """True when `out_dir` holds a finished random checkpoint (the marker is written last)."""
    return (Path(out_dir) / MARKER).is_file()


class EosForcer:
    """Forward hook on the talker's codec head that makes codebook 0 of frame `n_frames` the EOS.

    Every talker forward (the prefill, then one per frame) calls the codec head once, and the logits
    of call k pick codebook 0 of frame k. A prefill (sequence longer than 1) restarts the count, so
    one forcer serves many sequential generations. It counts calls on the shared module, so it is
    only meaningful for one generation at a time (not for interleaved streams). EOS stays blocked
    for the first 2 frames by the official min_new_tokens, so n_frames must be >= 2.
    """

    def __init__(self, tts_model: nn.Module, n_frames: int, bias: float = 1e4):
        if n_frames < 2:
            raise ValueError("EOS cannot come before frame 2 (min_new_tokens=2)")
        self.n_frames = n_frames
        self.bias = bias
        self.calls = 0
        self.eos = tts_model.config.talker_config.codec_eos_token_id
        self._handle = tts_model.talker.codec_head.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if args[0].shape[1] > 1:
            self.calls = 0
        if self.calls == self.n_frames:
            output = output.clone()
            output[:, -1, self.eos] += self.bias
        self.calls += 1
        return output

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> EosForcer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def force_eos_after(model: Any, n_frames: int, bias: float = 1e4) -> EosForcer:
    """Make generation stop after exactly `n_frames` frames. `model` is a LoadedModel, a
    `Qwen3TTSModel` or a `Qwen3TTSForConditionalGeneration`. Use as a context manager or `.remove()`."""
    inner = getattr(model, "model", model)  # LoadedModel -> Qwen3TTSModel -> ForConditionalGeneration
    inner = getattr(inner, "model", inner)
    return EosForcer(inner, n_frames, bias)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write a random-weight Qwen3-TTS checkpoint (real architecture).")
    p.add_argument("out_dir")
    p.add_argument("--kind", choices=KINDS, default="base")
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size-label", choices=("0b6", "1b7"), default=None)
    p.add_argument("--force", action="store_true", help="delete out_dir first")
    a = p.parse_args(argv)
    if a.force and Path(a.out_dir).exists():
        shutil.rmtree(a.out_dir)
    path = write_random_checkpoint(a.out_dir, a.kind, a.size, a.seed, a.size_label)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(json.dumps({"path": str(path), "kind": a.kind, "size": a.size, "bytes": size}))


if __name__ == "__main__":
    main()
