"""List batching reproduces the official batched generate; each row streams like its one-shot decode.

Expectations come from the official `generate_custom_voice([...])` / `generate_voice_clone([...])` on the
same tiny models, their codes recorded from `Qwen3TTSForConditionalGeneration.generate`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.qwen.batched import iter_frames_batched, stream_audio_batched
from engine.qwen.codec_stream import decode_codes
from engine.qwen.streaming import GenerationParams, make_generator, prepare_inputs

GREEDY = dict(do_sample=False, subtalker_dosample=False)
SAMPLED = dict(do_sample=True, subtalker_dosample=True, top_k=20, top_p=0.9, temperature=0.8,
               subtalker_top_k=30, subtalker_top_p=0.95, subtalker_temperature=0.7, repetition_penalty=1.1)
CV_TEXTS = ["Hello world, this is a batched streaming test.", "Short one.", "A sentence of medium length."]
CV_FIELDS = [dict(speaker="ryan", language="english"), dict(speaker="vivian", language="english"),
             dict(speaker="Dylan", language="auto")]
CLONE_TEXTS = ["Cloned speech, fairly long text for this row.", "Tiny.", "Third row of the batch."]


@pytest.fixture(scope="module")
def prompts(tiny_base_model, reference_audio) -> dict:
    tts = tiny_base_model.model
    return {"icl": tts.create_voice_clone_prompt(reference_audio, ref_text="The reference words.")[0],
            "xvec": tts.create_voice_clone_prompt(reference_audio, x_vector_only_mode=True)[0]}


class _RowEos:
    """Codec-head hook: codebook 0 of frame n_i is EOS for row i (None = no forcing)."""

    def __init__(self, loaded, frames: list[int | None]):
        self.frames, self.calls = frames, 0
        self.eos = loaded.model.model.config.talker_config.codec_eos_token_id
        self._h = loaded.model.model.talker.codec_head.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if args[0].shape[1] > 1:
            self.calls = 0
        rows = [i for i, n in enumerate(self.frames) if n == self.calls]
        if rows:
            output = output.clone()
            output[rows, -1, self.eos] += 1e4
        self.calls += 1
        return output

    def remove(self) -> None:
        self._h.remove()


def _official(loaded, method: str, texts: list[str], kwargs: dict, params: GenerationParams, seed: int,
              monkeypatch) -> list[torch.Tensor]:
    tts, seen = loaded.model, {}
    inner = tts.model.generate

    def recording(*args, **kw):
        seen["codes"], hidden = inner(*args, **kw)
        return seen["codes"], hidden

    monkeypatch.setattr(tts.model, "generate", recording)
    torch.manual_seed(seed)
    getattr(tts, method)(texts, **kwargs, **params.official_kwargs())
    monkeypatch.undo()
    return [c.cpu() for c in seen["codes"]]


def _rows(frames: list[list[torch.Tensor | None]], b: int) -> list[torch.Tensor]:
    out = []
    for i in range(b):
        items = [f[i] for f in frames]
        n = sum(x is not None for x in items)
        assert all(x is not None for x in items[:n]) and all(x is None for x in items[n:])  # None once finished
        out.append(torch.stack(items[:n]))
    return out


def _cv_case(loaded):
    prepared = [prepare_inputs(loaded, text=t, **f) for t, f in zip(CV_TEXTS, CV_FIELDS, strict=True)]
    official = dict(speaker=[f["speaker"] for f in CV_FIELDS], language=[f["language"] for f in CV_FIELDS])
    return prepared, official


def _clone_case(loaded, prompts, b: int):
    items = [prompts["icl"], prompts["xvec"], prompts["icl"]][:b]
    prepared = [prepare_inputs(loaded, text=t, language="english", voice_clone_prompt=p)
                for t, p in zip(CLONE_TEXTS[:b], items, strict=True)]
    return prepared, dict(language=["english"] * b, voice_clone_prompt=items)


@pytest.mark.parametrize("sampling", ["greedy", "sampled"])
@pytest.mark.parametrize("case", ["custom_voice", "clone2", "clone3"])
def test_batched_codes_match_official(case, sampling, prompts, request, monkeypatch) -> None:
    if case == "custom_voice":
        loaded, method = request.getfixturevalue("tiny_custom_voice_model"), "generate_custom_voice"
        (prepared, kwargs), texts = _cv_case(loaded), CV_TEXTS
    else:
        b = int(case[-1])
        loaded, method = request.getfixturevalue("tiny_base_model"), "generate_voice_clone"
        (prepared, kwargs), texts = _clone_case(loaded, prompts, b), CLONE_TEXTS[:b]
    params = GenerationParams(**(GREEDY if sampling == "greedy" else SAMPLED), max_frames=14)
    expected = _official(loaded, method, texts, kwargs, params, 7, monkeypatch)
    b = len(prepared)
    # one shared generator seeded like torch.manual_seed: the official batch's joint draws
    mine = _rows(list(iter_frames_batched(loaded, prepared, params, [make_generator(loaded, 7)] * b)), b)
    assert [c.shape[0] for c in mine] == [c.shape[0] for c in expected]
    assert all(torch.equal(m, e) for m, e in zip(mine, expected, strict=True))
    assert sum(c.shape[0] for c in mine) >= 3 * b
    if sampling == "sampled":  # the global RNG after manual_seed gives the same
        global_rng = torch.get_rng_state()
        torch.manual_seed(7)
        again = _rows(list(iter_frames_batched(loaded, prepared, params)), b)
        torch.set_rng_state(global_rng)
        assert all(torch.equal(m, e) for m, e in zip(again, expected, strict=True))


@pytest.mark.parametrize("sampling", ["greedy", "sampled"])
def test_rows_finishing_at_different_frames(sampling, tiny_custom_voice_model, monkeypatch) -> None:
    loaded = tiny_custom_voice_model
    prepared, kwargs = _cv_case(loaded)
    params = GenerationParams(**(GREEDY if sampling == "greedy" else SAMPLED), max_frames=30)
    # random weights under top-k sampling may also stop a row by themselves; the forced ones bound it
    forcer = _RowEos(loaded, [4, 11, 7])
    try:
        expected = _official(loaded, "generate_custom_voice", CV_TEXTS, kwargs, params, 3, monkeypatch)
        frames = list(iter_frames_batched(loaded, prepared, params, [make_generator(loaded, 3)] * 3))
    finally:
        forcer.remove()
    mine = _rows(frames, 3)
    if sampling == "greedy":
        assert [c.shape[0] for c in expected] == [4, 11, 7]
    assert len(frames) == max(c.shape[0] for c in expected)
    assert all(torch.equal(m, e) for m, e in zip(mine, expected, strict=True))


def test_per_row_max_frames(tiny_custom_voice_model) -> None:
    loaded = tiny_custom_voice_model
    prepared, _ = _cv_case(loaded)
    params = GenerationParams(**GREEDY, max_frames=12)
    full = _rows(list(iter_frames_batched(loaded, prepared, params)), 3)
    capped = _rows(list(iter_frames_batched(loaded, prepared, params, max_frames=[3, 50, 8])), 3)
    caps = [min(3, full[0].shape[0]), full[1].shape[0], min(8, full[2].shape[0])]
    assert [c.shape[0] for c in capped] == caps
    assert all(torch.equal(c, f[: c.shape[0]]) for c, f in zip(capped, full, strict=True))  # the live rows are untouched


def test_distinct_generators_keep_rows_independent(tiny_custom_voice_model) -> None:
    loaded = tiny_custom_voice_model
    prepared, _ = _cv_case(loaded)
    params = GenerationParams(**SAMPLED, max_frames=10)

    def run(seeds):
        gens = [make_generator(loaded, s) for s in seeds]
        return _rows(list(iter_frames_batched(loaded, prepared, params, gens)), 3)

    first, second = run([1, 2, 3]), run([1, 20, 30])
    assert torch.equal(first[0], second[0])  # row 0 depends only on its own generator
    assert not torch.equal(first[1][:2], second[1][:2])


@pytest.mark.parametrize("case", ["custom_voice", "clone3"])
def test_streamed_audio_per_row_equals_one_shot(case, prompts, request) -> None:
    if case == "custom_voice":
        loaded = request.getfixturevalue("tiny_custom_voice_model")
        prepared, _ = _cv_case(loaded)
    else:
        loaded = request.getfixturevalue("tiny_base_model")
        prepared, _ = _clone_case(loaded, prompts, 3)
    params = GenerationParams(**GREEDY, max_frames=13)
    caps = [5, 13, 9]
    codes = _rows(list(iter_frames_batched(loaded, prepared, params, max_frames=caps)), 3)
    chunks: list[list[np.ndarray]] = [[], [], []]
    steps = 0
    for out in stream_audio_batched(loaded, prepared, params, max_frames=caps, first_chunk_frames=2, chunk_frames=4):
        assert len(out) == 3
        steps += 1
        for i, audio in enumerate(out):
            if audio is not None:
                assert audio.dtype == np.float32
                chunks[i].append(audio)
    assert steps <= max(c.shape[0] for c in codes) + 1
    for i, p in enumerate(prepared):
        n = codes[i].shape[0]
        got = np.concatenate(chunks[i])
        assert got.shape == (n * 1920,)
        if p.ref_code is not None:  # ICL: the reference primes the decoder and is not returned
            r = p.ref_code.shape[0]
            reference = decode_codes(loaded, torch.cat([p.ref_code.cpu(), codes[i]]))[r * 1920:]
        else:
            reference = decode_codes(loaded, codes[i])
        assert np.abs(got - reference).max() < 1e-4
        if n > 2:  # first chunk after 2 frames, then every 4
            assert chunks[i][0].shape == (2 * 1920,)
