"""The frame loop reproduces the official qwen_tts generate; streamed audio equals the one-shot decode.

Every expectation comes from running the official code path on the same tiny model: codes are taken
from `Qwen3TTSForConditionalGeneration.generate` (wrapped to record its return value) while the
public `generate_*` wrapper runs as a user would call it, under `torch.manual_seed(seed)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import InvalidRequest
from engine.qwen.codec_stream import StreamingCodecDecoder, decode_codes, decode_together
from engine.qwen.loader import load_model
from engine.qwen.random_model import force_eos_after, write_random_checkpoint
from engine.qwen.streaming import GenerationParams, iter_frames, make_generator, prepare_inputs, stream_audio

TEXT = "Hello world, this is a streaming test."
GREEDY = dict(do_sample=False, subtalker_dosample=False)
SAMPLED = dict(do_sample=True, subtalker_dosample=True, top_k=20, top_p=0.9, temperature=0.8,
               subtalker_top_k=30, subtalker_top_p=0.95, subtalker_temperature=0.7, repetition_penalty=1.1)
# name -> (model fixture, official method, request fields)
CASES = {
    "base_icl": ("tiny_base_model", "generate_voice_clone", dict(prompt="icl", language="english")),
    "base_xvector": ("tiny_base_model", "generate_voice_clone", dict(prompt="xvec", language="auto")),
    "custom_voice": ("tiny_custom_voice_model", "generate_custom_voice", dict(speaker="ryan", language="english")),
    "custom_voice_instruct": ("tiny_custom_voice_model", "generate_custom_voice",
                              dict(speaker="Dylan", language="auto", instruct="Speak slowly and warmly.")),
    "voice_design": ("tiny_voice_design_model", "generate_voice_design",
                     dict(language="german", instruct="A calm, deep voice.")),
}


@pytest.fixture(scope="module")
def prompts(tiny_base_model, reference_audio) -> dict:
    tts = tiny_base_model.model
    return {"icl": tts.create_voice_clone_prompt(reference_audio, ref_text="The reference words."),
            "xvec": tts.create_voice_clone_prompt(reference_audio, x_vector_only_mode=True)}


def _request(case: str, prompts: dict) -> dict:
    fields = dict(CASES[case][2])
    if "prompt" in fields:
        fields["voice_clone_prompt"] = prompts[fields.pop("prompt")]
    return fields


def _official(loaded, method: str, fields: dict, params: GenerationParams, seed: int, monkeypatch):
    """(codes, wav) from the official wrapper; codes recorded from the model's own generate."""
    tts, seen = loaded.model, {}
    inner = tts.model.generate

    def recording(*args, **kwargs):
        seen["codes"], hidden = inner(*args, **kwargs)
        return seen["codes"], hidden

    monkeypatch.setattr(tts.model, "generate", recording)
    torch.manual_seed(seed)
    wavs, sr = getattr(tts, method)(TEXT, **fields, **params.official_kwargs())
    monkeypatch.undo()
    assert sr == 24000
    return seen["codes"][0].cpu(), wavs[0]


def _mine(loaded, fields: dict, params: GenerationParams, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    prepared = prepare_inputs(loaded, text=TEXT, **fields)
    codes = list(iter_frames(loaded, prepared, params, make_generator(loaded, seed)))
    chunks = stream_audio(loaded, prepared, params, generator=make_generator(loaded, seed), first_chunk_frames=2,
                          chunk_frames=5)
    audio = np.concatenate([c for c in chunks if c is not None])
    return torch.stack(codes), audio


def _check_audio(official: np.ndarray, mine: np.ndarray, frames: int, ref_frames: int) -> None:
    assert mine.dtype == np.float32 and mine.shape == (frames * 1920,)
    # The official ICL path cuts int(ref / total * samples): one sample short for some lengths.
    total = ref_frames + frames
    extra = ref_frames * 1920 - int(ref_frames / max(total, 1) * total * 1920) if ref_frames else 0
    assert official.shape == (frames * 1920 + extra,)
    assert np.abs(official[extra:] - mine).max() < 1e-4


@pytest.mark.parametrize("sampling", ["greedy", "sampled"])
@pytest.mark.parametrize("case", list(CASES))
def test_codes_and_audio_match_official(case, sampling, prompts, request, monkeypatch) -> None:
    loaded = request.getfixturevalue(CASES[case][0])
    fields = _request(case, prompts)
    params = GenerationParams(**(GREEDY if sampling == "greedy" else SAMPLED), max_frames=17)
    # Random weights make EOS likely under top-k sampling; seed 7 runs 9 to 17 frames in every case.
    official_codes, official_wav = _official(loaded, CASES[case][1], fields, params, 7, monkeypatch)
    codes, audio = _mine(loaded, fields, params, 7)
    frames = official_codes.shape[0]  # the cap, or an EOS the random weights sampled
    assert frames >= 5 and torch.equal(codes, official_codes)
    ref = prompts["icl"][0].ref_code.shape[0] if case == "base_icl" else 0
    _check_audio(official_wav, audio, frames, ref)


@pytest.mark.parametrize("case", ["base_icl", "custom_voice_instruct", "voice_design"])
def test_forced_eos_matches_official(case, prompts, request, monkeypatch) -> None:
    loaded = request.getfixturevalue(CASES[case][0])
    fields = _request(case, prompts)
    params = GenerationParams(max_frames=40)
    with force_eos_after(loaded, 9):
        official_codes, official_wav = _official(loaded, CASES[case][1], fields, params, 7, monkeypatch)
        codes, audio = _mine(loaded, fields, params, 7)
    assert official_codes.shape == (9, 16) and torch.equal(codes, official_codes)
    _check_audio(official_wav, audio, 9, prompts["icl"][0].ref_code.shape[0] if case == "base_icl" else 0)


def test_instruct_dropped_like_official_on_0b6_custom_voice(tmp_path_factory, monkeypatch) -> None:
    folder = write_random_checkpoint(tmp_path_factory.mktemp("cv06") / "cv", "custom_voice", size_label="0b6")
    loaded = load_model(str(folder))
    fields = dict(speaker="serena", language="english", instruct="Whisper.")
    params = GenerationParams(max_frames=12)
    prepared = prepare_inputs(loaded, text=TEXT, **fields)
    assert prepared.instruct is None
    official_codes, _ = _official(loaded, "generate_custom_voice", fields, params, 3, monkeypatch)
    codes, _ = _mine(loaded, fields, params, 3)
    assert torch.equal(codes, official_codes)


class _StepCounter:
    """Counts talker forwards (the prefill and one per frame) on a shared model: each ends in the final norm."""

    def __init__(self, loaded):
        self.calls = 0
        self._h = loaded.model.model.talker.model.norm.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1

    def remove(self) -> None:
        self._h.remove()


def test_chunks_arrive_on_schedule(tiny_custom_voice_model) -> None:
    loaded = tiny_custom_voice_model
    prepared = prepare_inputs(loaded, text=TEXT, speaker="vivian")
    counter = _StepCounter(loaded)
    try:
        gen = stream_audio(loaded, prepared, GenerationParams(max_frames=14), generator=make_generator(loaded, 0),
                           first_chunk_frames=3, chunk_frames=5)
        seen = []
        for item in gen:
            seen.append((counter.calls, None if item is None else len(item) // 1920))
    finally:
        counter.remove()
    # one talker forward per next(); audio after frames 3, 8 and 13; the cap ends generation without
    # another forward, and that last next() returns the remainder (frame 14)
    assert seen == [(n, {3: 3, 8: 5, 13: 5}.get(n)) for n in range(1, 15)] + [(14, 1)]


def test_interleaved_streams_do_not_share_state(tiny_base_model, prompts) -> None:
    loaded = tiny_base_model
    params = GenerationParams(max_frames=20)
    specs = [(prompts["icl"], 11, "First stream of speech."), (prompts["xvec"], 22, "A second, different one.")]

    def run(spec):
        prepared = prepare_inputs(loaded, text=spec[2], voice_clone_prompt=spec[0])
        return stream_audio(loaded, prepared, params, generator=make_generator(loaded, spec[1]), chunk_frames=4)

    alone = [np.concatenate([c for c in run(s) if c is not None]) for s in specs]
    global_rng = torch.get_rng_state()
    streams, outs = [run(s) for s in specs], [[], []]
    active = [True, True]
    while any(active):  # round-robin, one step each, as the StepWorker does
        for i, gen in enumerate(streams):
            if active[i]:
                item = next(gen, StopIteration)
                if item is StopIteration:
                    active[i] = False
                elif item is not None:
                    outs[i].append(item)
    for i in range(2):
        assert np.array_equal(np.concatenate(outs[i]), alone[i])
    assert not np.array_equal(alone[0][: 20 * 1920], alone[1][: 20 * 1920])
    assert torch.equal(torch.get_rng_state(), global_rng)  # per-request generators leave the global RNG alone


def test_close_stops_at_once(tiny_voice_design_model) -> None:
    loaded = tiny_voice_design_model
    prepared = prepare_inputs(loaded, text=TEXT, instruct="Bright.")
    counter = _StepCounter(loaded)
    try:
        gen = stream_audio(loaded, prepared, GenerationParams(max_frames=200), first_chunk_frames=1, chunk_frames=4)
        for _ in range(6):
            next(gen)
        assert counter.calls == 6
        gen.close()
        assert counter.calls == 6
        with pytest.raises(StopIteration):
            next(gen)
        assert counter.calls == 6
    finally:
        counter.remove()


def test_stateful_decoder_equals_one_shot(tiny_base_model) -> None:
    codes = torch.randint(0, 64, (130, 16), generator=torch.Generator().manual_seed(5))  # > the 72-frame window
    reference = decode_codes(tiny_base_model, codes)
    sizes = [1, 2, 3, 8, 8, 30, 40, 38]
    for stateful, tolerance in ((True, 2e-6), (False, 1e-4)):
        dec, out, i = StreamingCodecDecoder(tiny_base_model, stateful=stateful), [], 0
        for n in sizes:
            out.append(dec.decode(codes[i : i + n]))
            assert out[-1].shape == (n * 1920,)
            i += n
        out.append(dec.flush())
        assert np.abs(np.concatenate(out) - reference).max() < tolerance
    primed = StreamingCodecDecoder(tiny_base_model)
    primed.prime(codes[:50])  # ICL reference as context: only the audio after it comes out
    assert np.abs(primed.decode(codes[50:90]) - reference[50 * 1920 : 90 * 1920]).max() < 2e-6


@pytest.mark.parametrize(
    ("fixture", "fields", "match"),
    [
        ("tiny_custom_voice_model", dict(speaker="nobody"), "unknown speaker"),
        ("tiny_custom_voice_model", dict(speaker="ryan", language="klingon"), "unsupported language"),
        ("tiny_custom_voice_model", dict(speaker="ryan", voice_clone_prompt="icl"), "does not take a voice clone"),
        ("tiny_voice_design_model", dict(speaker="ryan", instruct="x"), "does not take a speaker"),
        ("tiny_base_model", dict(), "needs exactly one voice clone prompt"),
        ("tiny_base_model", dict(voice_clone_prompt="xvec", instruct="loud"), "neither a speaker nor instructions"),
        ("tiny_voice_design_model", dict(text="  "), "text is empty"),
    ],
)
def test_prepare_inputs_rejects_bad_combinations(fixture, fields, match, prompts, request) -> None:
    fields = dict(fields)
    if isinstance(fields.get("voice_clone_prompt"), str):
        fields["voice_clone_prompt"] = prompts[fields["voice_clone_prompt"]]
    with pytest.raises(InvalidRequest, match=match):
        prepare_inputs(request.getfixturevalue(fixture), **{"text": TEXT, **fields})


def test_generation_params_defaults_and_validation(tiny_base_model, tmp_path: Path) -> None:
    params = GenerationParams.for_model(tiny_base_model, top_k=None, max_new_tokens=33)
    assert params == GenerationParams(max_frames=32)  # the checkpoint's config equals the published one
    assert params.official_kwargs()["max_new_tokens"] == 33
    with pytest.raises(InvalidRequest):
        GenerationParams(temperature=0.0)
    assert GenerationParams(temperature=0.0, do_sample=False).do_sample is False


def test_decoding_streams_together_equals_one_by_one(tiny_base_model, prompts) -> None:
    """Batched conv stacks over stacked states: same audio (to float rounding), same states after."""
    loaded = tiny_base_model
    rng = torch.Generator().manual_seed(0)
    ref = prompts["icl"][0].ref_code
    chunks = [torch.randint(0, 64, (n, 16), generator=rng) for n in (3, 5, 5, 4)]

    def fresh() -> list[StreamingCodecDecoder]:
        ds = [StreamingCodecDecoder(loaded) for _ in range(3)]
        ds[0].prime(ref)  # one primed with a reference, one with some audio already, one new
        ds[1].decode(chunks[0])
        return ds

    alone, together = fresh(), fresh()
    for step in (chunks[1], chunks[2]):
        expected = [d.decode(step) for d in alone]
        got = decode_together(together, [step] * 3)
        for e, g in zip(expected, got, strict=True):
            assert e.shape == g.shape == (len(step) * 1920,) and np.allclose(e, g, atol=1e-5, rtol=0)
    assert [d.frames for d in together] == [d.frames for d in alone]
    # Mixed frame counts fall back to one by one.
    mixed = decode_together(together[:2], [chunks[3], chunks[0]])
    assert [len(m) for m in mixed] == [4 * 1920, 3 * 1920]


def test_streams_at_one_position_share_the_transformer_and_keep_their_own_state(tiny_base_model, prompts,
                                                                                monkeypatch) -> None:
    """Streams that started together (same position) run one transformer call over stacked caches;
    each keeps its own cache afterwards: decoding on alone, or together again, matches streams that
    were decoded one by one throughout, past the 72-frame sliding window."""
    loaded = tiny_base_model
    rng = torch.Generator().manual_seed(1)
    ref = prompts["icl"][0].ref_code
    steps = [[torch.randint(0, 64, (n, 16), generator=rng) for _ in range(3)] for n in (1, 2, 8, 40, 30)]

    def fresh(primed: bool) -> list[StreamingCodecDecoder]:
        ds = [StreamingCodecDecoder(loaded) for _ in range(3)]
        for d in ds if primed else []:
            d.prime(ref)
        return ds

    calls = []  # streams per transformer call
    transform = StreamingCodecDecoder._transform

    def counted(self, codes):
        calls.append(codes.shape[0])
        return transform(self, codes)

    monkeypatch.setattr(StreamingCodecDecoder, "_transform", counted)
    for primed in (False, True):
        alone, together = fresh(primed), fresh(primed)
        calls.clear()
        for i, step in enumerate(steps):
            expected = [d.decode(c) for d, c in zip(alone, step, strict=True)]
            got = (decode_together(together, step) if i != 3
                   else [d.decode(c) for d, c in zip(together, step, strict=True)])  # one step apart
            for e, g in zip(expected, got, strict=True):
                assert e.shape == g.shape and np.allclose(e, g, atol=1e-5, rtol=0), (primed, i)
        assert 3 in calls  # the joint steps ran one transformer call for all three streams
        assert [d._state.position for d in together] == [d._state.position for d in alone]
