"""The batched frame loop does not let rows bleed into each other.

A small driver runs `FrameBatch` the way `FrameScheduler` does (talker step, joins, noise, one frame,
leaves) on a plan of rows that join at different iterations, stop at EOS or at their cap, and reuse
slots freed by others. Every row's logits and codes are compared with the same row run alone in a
batch of one, which itself equals the official `generate` (tests/qwen/test_streaming.py). Rows may
join from their voice's cached prefix (the scheduler's voice-prefix cache) instead of a whole prefill.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import torch

from engine.qwen.frame_batch import FrameBatch, Join
from engine.qwen.scheduler import _shares_most
from engine.qwen.streaming import GenerationParams, make_generator, prepare_inputs, row_settings

SAMPLED = dict(do_sample=True, subtalker_dosample=True, top_k=20, top_p=0.9, temperature=0.8, subtalker_top_k=30,
               subtalker_top_p=0.95, subtalker_temperature=0.7, repetition_penalty=1.1)
GREEDY = dict(do_sample=False, subtalker_dosample=False)


@dataclass
class Row:
    name: str
    text: str
    speaker: str
    params: GenerationParams
    seed: int
    join_at: int = 0
    instruct: str | None = None
    clone: Any = None  # a voice clone prompt (Base model; speaker None)
    language: str = "auto"
    codes: list[torch.Tensor] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)
    from_prefix: bool = False  # joined from a cached voice prefix


def drive(loaded, rows: list[Row], *, slots: int = 4, static: bool = False, runner=None,
          prefixes: dict | None = None) -> dict[str, Row]:
    """Run `rows` through one FrameBatch as the scheduler would; fills each row's codes and logits.

    With `prefixes` (a dict kept across calls), rows join from their voice's prefix when it is there
    and leave theirs there when it is not, as `FrameScheduler` does."""
    batch = FrameBatch(loaded, slots, context=256 if static else 16, text=64 if static else 4, grow=not static,
                       static=static)
    waiting = sorted(rows, key=lambda r: r.join_at)
    running: list[Row] = []
    gens: dict[str, torch.Generator] = {}
    it = 0
    while waiting or running:
        if running:
            batch.talker_step(len(running), runner)
        joining, stored = [], []  # rows joining in the same iteration share one prefill, as in the scheduler
        while waiting and waiting[0].join_at <= it and len(running) < slots:
            row = waiting.pop(0)
            prepared = prepare_inputs(loaded, text=row.text, speaker=row.speaker, instruct=row.instruct,
                                      language=row.language, voice_clone_prompt=row.clone)
            prefix = prefixes.get(prepared.prefix_key) if prefixes is not None else None
            row.from_prefix = prefix is not None
            joining.append(Join(len(running), prepared.prefill, prepared.trailing_text, row_settings(row.params),
                                prefix))
            if prefixes is not None and prefix is None:
                stored.append((prepared.prefix_key, len(running), prepared.prefix_len))
            gens[row.name] = make_generator(loaded, row.seed)
            running.append(row)
        if joining:
            batch.join_many(joining)
        for key, slot, length in stored:
            prefixes[key] = batch.prefix(slot, length)
        it += 1
        if not running:
            continue
        for slot, row in enumerate(running):
            batch.draw_noise(slot, gens[row.name], row.params.do_sample, row.params.subtalker_dosample)
        codes = batch.sample_and_predict(len(running), runner).to("cpu", copy=True)
        logits = batch.logits[: len(running)].clone()
        ended = []
        for slot, row in enumerate(running):
            row.logits.append(logits[slot])
            if int(codes[slot, 0]) == batch.eos:
                ended.append(slot)
                continue
            row.codes.append(codes[slot])
            if len(row.codes) >= row.params.max_frames:
                ended.append(slot)
        for slot in sorted(ended, reverse=True):
            moved = batch.leave(slot)
            if moved is not None:
                running[slot] = running[moved]
            running.pop()
    return {r.name: r for r in rows}


def solo(loaded, row: Row) -> Row:
    return drive(loaded, [replace(row, join_at=0, codes=[], logits=[])], slots=1)[row.name]


def plan() -> list[Row]:
    return [
        Row("a", "The first row is long and keeps going for a while.", "ryan",
            GenerationParams(**SAMPLED, max_frames=14, min_frames=14), seed=1),
        Row("b", "Second.", "vivian", GenerationParams(**GREEDY, max_frames=5, min_frames=5), seed=2, join_at=2),
        Row("c", "A third voice joins later, with instructions.", "aiden",
            GenerationParams(**SAMPLED, max_frames=9, min_frames=9), seed=3, join_at=3, instruct="Slowly."),
        # d takes the slot b freed (shorter prompt than what was there before) while a and c run on.
        Row("d", "Fourth.", "serena", GenerationParams(temperature=1.2, top_k=5, max_frames=6, min_frames=6),
            seed=4, join_at=8),
    ]


def _same(batched: Row, alone: Row) -> None:
    assert len(batched.codes) == len(alone.codes) == batched.params.max_frames
    for mine, ref in zip(batched.logits, alone.logits, strict=True):
        assert torch.allclose(mine, ref, atol=1e-4, rtol=0), (mine - ref).abs().max()
    assert torch.equal(torch.stack(batched.codes), torch.stack(alone.codes)), batched.name


def test_rows_match_their_solo_runs_whatever_joins_or_leaves(tiny_custom_voice_model) -> None:
    loaded = tiny_custom_voice_model
    rows = drive(loaded, plan())
    for name in "abcd":
        _same(rows[name], solo(loaded, rows[name]))


def test_one_rows_eos_leaves_the_others_untouched(tiny_custom_voice_model) -> None:
    """EOS made likely for everyone; only the row allowed to stop early stops, the others are unchanged."""
    loaded = tiny_custom_voice_model
    talker = loaded.model.model.talker
    eos = loaded.model.model.config.talker_config.codec_eos_token_id

    def boost(_m, _a, out):
        out = out.clone()
        out[..., eos] += 1e4
        return out

    rows = plan()
    rows[2] = replace(rows[2], params=replace(rows[2].params, min_frames=4, max_frames=40))
    handle = talker.codec_head.register_forward_hook(boost)
    try:
        batched = drive(loaded, rows)
        alone = {name: solo(loaded, batched[name]) for name in "abcd"}
    finally:
        handle.remove()
    assert len(batched["c"].codes) == 4 and len(batched["c"].logits) == 5  # the 5th frame was EOS
    for name in "abd":
        _same(batched[name], alone[name])


def test_freed_slots_carry_nothing_stale(tiny_custom_voice_model) -> None:
    """A short row in the slot of a long one (with a longer neighbour) equals its solo run."""
    loaded = tiny_custom_voice_model
    long = Row("long", "A long first row fills the cache of slot zero with many positions.", "ryan",
               GenerationParams(**SAMPLED, max_frames=6, min_frames=6), seed=5)
    neighbour = Row("n", "The neighbour keeps running with a longer cache than the newcomer.", "eric",
                    GenerationParams(**GREEDY, max_frames=20, min_frames=20), seed=6)
    short = Row("short", "Hi.", "vivian", GenerationParams(**SAMPLED, max_frames=8, min_frames=8), seed=7, join_at=7)
    rows = drive(loaded, [long, neighbour, short], slots=2)
    assert len(rows["long"].codes) == 6
    _same(rows["short"], solo(loaded, rows["short"]))
    _same(rows["n"], solo(loaded, rows["n"]))


def test_rows_prefilled_together_match_their_solo_runs(tiny_custom_voice_model) -> None:
    """Three prompts of different lengths joining at once (one left-padded prefill) beside a running row."""
    loaded = tiny_custom_voice_model
    rows = [replace(r, join_at=2 if r.name != "a" else 0) for r in plan()]
    batched = drive(loaded, rows)
    for name in "abcd":
        _same(batched[name], solo(loaded, batched[name]))


def test_padded_static_steps_equal_dynamic_ones(tiny_custom_voice_model) -> None:
    """The shapes CUDA graphs replay (whole cache under a mask, batch padded to a bucket) change nothing."""
    loaded = tiny_custom_voice_model
    buckets = (1, 2, 4)

    def padded(fn, n: int) -> None:
        fn(next(b for b in buckets if n <= b))

    dynamic = drive(loaded, plan())
    static = drive(loaded, plan(), static=True, runner=padded)
    for name in "abcd":
        _same(static[name], dynamic[name])


def test_fixed_batches_refuse_rows_they_cannot_hold(tiny_custom_voice_model) -> None:
    loaded = tiny_custom_voice_model
    batch = FrameBatch(loaded, 1, context=8, text=4, grow=False)
    prepared = prepare_inputs(loaded, text="This prompt is longer than eight positions.", speaker="ryan")
    with pytest.raises(ValueError, match="positions"):
        batch.join(0, prepared.prefill, prepared.trailing_text, row_settings(GenerationParams()))
    assert batch.count == 0


# -- voice prefixes: a row joined from a cached prefix equals its whole prefill -----------------------
@pytest.fixture(scope="module")
def clones(tiny_base_model, reference_audio) -> dict:
    tts = tiny_base_model.model
    return {
        # A short transcript: the target text starts inside the ICL part (over the reference codes).
        "icl": tts.create_voice_clone_prompt(reference_audio, ref_text="Hi there."),
        # A transcript longer than the clip's codes: the whole prompt but its last position is the voice's.
        "icl_long": tts.create_voice_clone_prompt(
            reference_audio, ref_text="A transcript that runs on for longer than the codes of this two second clip."),
        "xvec": tts.create_voice_clone_prompt(reference_audio, x_vector_only_mode=True),
        # A transcript far shorter than the codes: most of the prompt holds the target text.
        "icl_short": tts.create_voice_clone_prompt(reference_audio, ref_text="Hi."),
    }


def clone_plan(clones: dict) -> list[Row]:
    return [
        Row("a", "Good morning, a clone speaks first.", None, GenerationParams(**SAMPLED, max_frames=12, min_frames=12),
            seed=1, clone=clones["icl"], language="english"),
        # b and c join in one prefill beside a: with a warm cache c (a's voice) has a prefix and b may not.
        Row("b", "An x-vector voice.", None, GenerationParams(**GREEDY, max_frames=5, min_frames=5), seed=2, join_at=1,
            clone=clones["xvec"]),
        Row("c", "Quite another text in the voice of a.", None,
            GenerationParams(**SAMPLED, max_frames=8, min_frames=8), seed=3, join_at=1, clone=clones["icl"],
            language="english"),
        # d and e take slots freed by b and c.
        Row("d", "Late.", None, GenerationParams(temperature=1.2, top_k=5, max_frames=6, min_frames=6), seed=4,
            join_at=9, clone=clones["icl_long"], language="german"),
        Row("e", "The x-vector voice again.", None, GenerationParams(**SAMPLED, max_frames=4, min_frames=4), seed=5,
            join_at=9, clone=clones["xvec"]),
    ]


def test_the_voice_prefix_is_what_does_not_depend_on_the_text(tiny_base_model, clones) -> None:
    loaded = tiny_base_model

    def prepared(text: str, voice: str = "icl", language: str = "english"):
        return prepare_inputs(loaded, text=text, language=language, voice_clone_prompt=clones[voice])

    one, two = prepared("Good morning to you."), prepared("Quite another, longer sentence here.")
    n = one.prefix_len
    assert n == two.prefix_len and one.prefix_key == two.prefix_key
    assert torch.equal(one.prefill[:, :n], two.prefill[:, :n])
    assert not torch.equal(one.prefill[:, n], two.prefill[:, n])  # the next position holds the target text
    assert one.prefill.shape[1] - n > 10  # ... and so do the reference codes' remaining positions
    # A long transcript covers every reference code: all but the last position (kept to prefill) is shared.
    long = prepared("Good morning to you.", "icl_long")
    assert long.prefix_len == long.prefill.shape[1] - 1
    xvec = prepared("Good morning to you.", "xvec", "auto")
    assert xvec.prefix_len == xvec.prefill.shape[1] - 1  # only the first text token comes after the codec tags
    keys = {p.prefix_key for p in (one, long, xvec, prepared("Good morning.", language="german"))}
    assert len(keys) == 4  # voice, transcript, mode and language each make another prefix
    # The join policy waits for a voice's prefix only where it is most of the prompt.
    short = prepared("Good morning to you.", "icl_short")
    assert 2 * short.prefix_len < short.prefill.shape[1] and not _shares_most(short)
    assert _shares_most(one) and _shares_most(long) and _shares_most(xvec)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_rows_joined_from_cached_prefixes_equal_whole_prefills(tiny_base_model, clones, static: bool) -> None:
    """Cold (prefixes taken from the first rows of a voice) then warm (every row from a prefix), beside others,
    on the grown CPU batch and on the CUDA-shaped one (whole cache under a mask, rows padded to a bucket)."""
    loaded = tiny_base_model
    buckets = (1, 2, 4)

    def padded(fn, n: int) -> None:
        fn(next(b for b in buckets if n <= b))

    runner = padded if static else None
    alone = {row.name: solo(loaded, row) for row in clone_plan(clones)}
    prefixes: dict = {}
    cold = drive(loaded, clone_plan(clones), static=static, runner=runner, prefixes=prefixes)
    assert [n for n, r in cold.items() if r.from_prefix] == ["c", "e"]
    warm = drive(loaded, clone_plan(clones), static=static, runner=runner, prefixes=prefixes)
    assert all(r.from_prefix for r in warm.values()) and len(prefixes) == 3
    for rows in (cold, warm):
        for name in "abcde":
            _same(rows[name], alone[name])


def test_a_row_alone_from_a_cached_prefix_equals_its_whole_prefill(tiny_base_model, clones) -> None:
    loaded = tiny_base_model
    prefixes: dict = {}
    for row in clone_plan(clones):
        drive(loaded, [replace(row, text="Another text first.", join_at=0, codes=[], logits=[])], slots=1,
              prefixes=prefixes)
        joined = drive(loaded, [replace(row, join_at=0)], slots=1, prefixes=prefixes)[row.name]
        assert joined.from_prefix
        _same(joined, solo(loaded, row))
