"""Qwen3-TTS-12Hz on the official `qwen-tts` package.

- `loader`: resolve and load a checkpoint into a `LoadedModel`.
- `streaming`: a frame-level generation loop that reproduces the official generate exactly, with
  per-request state and RNG, plus chunked audio via `codec_stream.StreamingCodecDecoder`.
- `random_model`: random-weight checkpoints of the real architecture (tests, benchmarks).

Importing this package does not import torch or qwen_tts; the submodules do.
"""
