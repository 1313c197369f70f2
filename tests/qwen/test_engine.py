"""QwenEngine on tiny random checkpoints: routing, audio shape, isolation, cancellation, runaway guard, loading."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.base import AudioChunk, Priority, SamplingParams, SynthesisRequest, Voice
from engine.errors import InvalidRequest, Unavailable
from engine.qwen.engine import QwenConfig, QwenEngine, frame_budget, normalize_language
from engine.qwen.random_model import force_eos_after
from engine.voice_store import SHIPPED_VOICES_DIR

FRAME = 1920


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and two-thread OpenMP teams crawl on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[Callable[..., QwenEngine]]:
    engines: list[QwenEngine] = []

    async def make(**kw) -> QwenEngine:
        kw.setdefault("voices_dirs", (SHIPPED_VOICES_DIR, tmp_path / "user-voices"))
        engine = QwenEngine(QwenConfig(**kw))
        engines.append(engine)
        await engine.start()
        return engine

    yield make
    for engine in engines:
        await engine.close()


def _voice(engine: QwenEngine, voice_id: str) -> Voice:
    return next(v for v in engine.voices() if v.id == voice_id)


def _request(engine: QwenEngine, voice_id: str, text: str = "Hello there.", **kw) -> SynthesisRequest:
    return SynthesisRequest(text=text, voice=_voice(engine, voice_id), **kw)


async def _collect(engine: QwenEngine, request: SynthesisRequest) -> list[AudioChunk]:
    return [chunk async for chunk in engine.synthesize(request)]


def _audio(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([c.samples for c in chunks])


class NoEos:
    """Pushes the EOS logit far down on every talker step: the model can never stop by itself."""

    def __init__(self, loaded) -> None:
        inner = loaded.model.model
        self.eos = inner.config.talker_config.codec_eos_token_id
        self._handle = inner.talker.codec_head.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        output = output.clone()
        output[..., self.eos] -= 1e4
        return output

    def __enter__(self) -> NoEos:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


@pytest.mark.parametrize(
    ("kind", "voice_id"),
    [("base", "default"), ("custom_voice", "ryan"), ("voice_design", "narrator-design")],
)
async def test_each_voice_kind_speaks_on_its_model(make_engine, request, kind: str, voice_id: str) -> None:
    engine = await make_engine(**{kind: str(request.getfixturevalue(f"tiny_{kind}_dir"))})
    text = "Hello there. How are you?"
    loaded_before = engine.status()
    assert loaded_before.ready and loaded_before.loaded == ()  # lazily loadable, nothing loaded yet

    chunks = await _collect(engine, _request(engine, voice_id, text, seed=1))
    assert all(c.sample_rate == 24_000 and c.samples.dtype == np.float32 for c in chunks)
    assert all(len(c.samples) > 0 and len(c.samples) % FRAME == 0 for c in chunks)
    audio = _audio(chunks)
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 1e-4
    # Two sentence segments; random weights never stop early, so each runs to its frame budget.
    budgets = [frame_budget(s, engine.config) for s in ("Hello there.", "How are you?")]
    assert len(audio) <= sum(budgets) * FRAME
    status = engine.status()
    assert status.ready and status.loaded == (kind,)


async def test_unservable_requests_name_the_missing_model_flag(make_engine, tiny_base_dir) -> None:
    engine = await make_engine(base=str(tiny_base_dir))
    ryan = Voice(id="ryan", name="Ryan", kind="speaker", engine="qwen", speaker="ryan")
    with pytest.raises(InvalidRequest, match="CustomVoice.*--qwen-custom-voice"):
        engine.synthesize(SynthesisRequest(text="Hi.", voice=ryan))
    design = Voice(id="calm", name="Calm", kind="design", engine="qwen", description="A calm voice.")
    with pytest.raises(InvalidRequest, match="--qwen-voice-design"):
        engine.synthesize(SynthesisRequest(text="Hi.", voice=design))
    embedded = Voice(id="hibari-heart", name="Heart", kind="builtin", engine="embedded")
    with pytest.raises(InvalidRequest, match="not a Qwen3 voice"):
        engine.synthesize(SynthesisRequest(text="Hi.", voice=embedded))
    with pytest.raises(InvalidRequest) as e:
        engine.synthesize(_request(engine, "default", language="klingon"))
    assert e.value.param == "language"
    with pytest.raises(InvalidRequest, match="empty"):
        engine.synthesize(_request(engine, "default", text=" \n\t "))
    # Only what the configured model serves is listed: the clone voice, carrying the OpenAI names.
    voices = engine.voices()
    assert [v.id for v in voices] == ["default"] and "alloy" in voices[0].aliases


async def test_a_clone_voice_without_base_model(make_engine, tiny_custom_voice_dir) -> None:
    engine = await make_engine(custom_voice=str(tiny_custom_voice_dir))
    clone = Voice(id="default", name="Default", kind="clone", engine="qwen", ref_audio="x.wav", ref_text="Hi.")
    with pytest.raises(InvalidRequest, match="Base model.*--qwen-base"):
        engine.synthesize(SynthesisRequest(text="Hi.", voice=clone))
    assert "default" in _voice(engine, "aiden").aliases  # the default voice falls back to a speaker


def test_languages_and_budgets() -> None:
    assert normalize_language("en-US") == "english" and normalize_language("ZH") == "chinese"
    assert normalize_language(None) == "auto" and normalize_language("Japanese") == "japanese"
    cfg = QwenConfig()
    assert frame_budget("Hi.", cfg) == cfg.min_segment_frames
    assert frame_budget("x" * 100, cfg) == 200
    assert frame_budget("你好" * 50, cfg) == 400  # slow scripts get more frames per character
    assert frame_budget("x" * 10_000, cfg) == cfg.max_segment_frames
    assert frame_budget("x" * 100, cfg, max_new_tokens=8) == 7  # official meaning: N tokens, N - 1 frames


def test_admission_default_is_what_the_instances_step_together(tmp_path: Path) -> None:
    from engine.service import SpeechService

    for kw, slots in (({}, 8), ({"device": "cuda:0"}, 32), ({"max_batch": 6, "instances": 2}, 12)):
        engine = QwenEngine(QwenConfig(voices_dirs=(tmp_path,), **kw))
        assert engine.stream_slots == slots
        assert SpeechService([engine], max_concurrent=None).admission[engine.name].max_active == slots
    engine = QwenEngine(QwenConfig(voices_dirs=(tmp_path,)))
    assert SpeechService([engine], max_concurrent=3).admission[engine.name].max_active == 3


async def test_concurrent_requests_equal_serial_ones(make_engine, tiny_base_dir, tiny_custom_voice_dir) -> None:
    engine = await make_engine(base=str(tiny_base_dir), custom_voice=str(tiny_custom_voice_dir))
    requests = [
        _request(engine, "default", "Good morning. The weather is fine.", seed=11),
        _request(engine, "ryan", "A different voice speaks here.", seed=22),
        _request(engine, "vivian", "And a third one, with another seed.", seed=33),
        _request(engine, "ryan", "Same voice, calmer.", seed=44, instructions="Speak calmly."),
    ]
    serial = [_audio(await _collect(engine, r)) for r in requests]
    concurrent = await asyncio.gather(*(_collect(engine, r) for r in requests))
    # Same codes; the audio of chunks decoded side by side differs only by float rounding.
    for alone, together in zip(serial, concurrent, strict=True):
        assert alone.shape == _audio(together).shape and np.allclose(alone, _audio(together), atol=1e-5, rtol=0)
    # The custom-voice streams really shared batched steps (otherwise this test proves nothing).
    stats = engine.pools["custom_voice"].schedulers[0].stats
    assert stats.rows_sum > stats.decode_steps
    assert not np.array_equal(serial[1][: len(serial[3])], serial[3][: len(serial[1])])


async def test_closing_the_stream_takes_the_row_out_within_a_frame(make_engine, tiny_custom_voice_dir) -> None:
    engine = await make_engine(custom_voice=str(tiny_custom_voice_dir), first_chunk_frames=1, chunk_frames=1)
    text = "This sentence is long enough to keep the model busy for a good number of frames. " * 3
    stream = engine.synthesize(_request(engine, "ryan", text, seed=0))
    first = await stream.__anext__()
    assert len(first.samples) == FRAME
    scheduler = engine.pools["custom_voice"].schedulers[0]
    cancelled = scheduler.stats.cancelled
    steps_at_close = scheduler.stats.decode_steps
    await stream.aclose()
    deadline = time.monotonic() + 10
    while scheduler.stats.cancelled == cancelled and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert scheduler.stats.cancelled == cancelled + 1
    assert scheduler.stats.decode_steps - steps_at_close <= 1  # at most the step already running
    await asyncio.sleep(0.2)
    assert not scheduler.running and scheduler.waiting == 0
    assert scheduler.stats.decode_steps - steps_at_close <= 1


async def test_runaway_guard_bounds_output(make_engine, tiny_custom_voice_dir) -> None:
    engine = await make_engine(custom_voice=str(tiny_custom_voice_dir))
    pool = engine.pools["custom_voice"]
    await pool.ensure_loaded(engine.config)
    text = "Stop."
    with NoEos(pool.models[0]):
        audio = _audio(await _collect(engine, _request(engine, "ryan", text, seed=3)))
        assert len(audio) == frame_budget(text, engine.config) * FRAME
        capped = _audio(await _collect(engine, _request(engine, "ryan", text, seed=3,
                                                         sampling=SamplingParams(max_new_tokens=6))))
        assert len(capped) == 5 * FRAME
    with force_eos_after(pool.models[0], 4):  # and a model that does stop is not padded out
        stopped = _audio(await _collect(engine, _request(engine, "ryan", text, seed=3)))
    assert len(stopped) == 4 * FRAME


async def test_min_new_tokens_refuses_an_early_end(make_engine, tiny_custom_voice_dir) -> None:
    """Frame counts a client can rely on: EOS is refused before `min_new_tokens` frames."""
    engine = await make_engine(custom_voice=str(tiny_custom_voice_dir))
    pool = engine.pools["custom_voice"]
    await pool.ensure_loaded(engine.config)
    with force_eos_after(pool.models[0], 4):
        early = _audio(await _collect(engine, _request(engine, "ryan", "Stop.", seed=3)))
        held = _audio(await _collect(engine, _request(engine, "ryan", "Stop.", seed=3, sampling=SamplingParams(
            max_new_tokens=9, min_new_tokens=9))))
    assert len(early) == 4 * FRAME and len(held) == 8 * FRAME


async def test_missing_checkpoint_is_not_ready(make_engine, tmp_path: Path) -> None:
    engine = await make_engine(base=str(tmp_path / "no-such-checkpoint"))
    status = engine.status()
    assert not status.ready and "no-such-checkpoint" in status.reason and "Base" in status.reason
    with pytest.raises(Unavailable, match="no-such-checkpoint"):
        engine.synthesize(_request(engine, "default"))


async def test_broken_checkpoint_fails_to_load(make_engine, tiny_base_dir, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_base_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    engine = await make_engine(base=str(broken))
    assert engine.status().ready  # it resolves: the failure shows only when loading
    with pytest.raises(Unavailable, match="failed to load"):
        await _collect(engine, _request(engine, "default"))
    status = engine.status()
    assert not status.ready and "failed to load" in status.reason and status.loaded == ()
    with pytest.raises(Unavailable):  # now refused before streaming, without another load attempt
        engine.synthesize(_request(engine, "default"))
    assert engine.pools["base"].loads == 1


@pytest.mark.parametrize("instances", [1, 2])
async def test_lazy_load_happens_once_under_concurrency(make_engine, tiny_custom_voice_dir, instances: int) -> None:
    engine = await make_engine(custom_voice=str(tiny_custom_voice_dir), instances=instances)
    pool = engine.pools["custom_voice"]
    assert pool.loads == 0
    short = SamplingParams(max_new_tokens=4)
    requests = [_request(engine, v, seed=i, sampling=short) for i, v in enumerate(["ryan", "aiden", "sohee", "eric"])]
    results = await asyncio.gather(*(_collect(engine, r) for r in requests))
    assert all(len(_audio(r)) == 3 * FRAME for r in results)
    assert pool.loads == instances  # one load per instance, however many requests raced for it
    assert all(s.stats.started >= 1 for s in pool.schedulers)  # requests spread over the instances


async def test_clone_prompt_is_computed_once_per_voice(make_engine, tiny_base_dir) -> None:
    engine = await make_engine(base=str(tiny_base_dir))
    short = SamplingParams(max_new_tokens=3)
    await asyncio.gather(*(_collect(engine, _request(engine, "default", seed=i, sampling=short)) for i in range(3)))
    await _collect(engine, _request(engine, "default", sampling=short))
    assert engine.prompts.computed == 1 and engine.prompts.memory_hits >= 1
    assert list(engine.config.prompt_cache_dir().rglob("*.safetensors"))  # stored for the next start
    numbers = engine.metrics_snapshot()
    assert numbers["prompt_cache_misses_total"] == 1 and numbers["prompt_cache_hits_total"] == 3
    assert numbers["finished_total"] >= 4 and numbers["loaded_models"] == 1 and numbers["model_load_seconds"] > 0


async def test_primed_decoder_state_is_computed_once_per_voice(make_engine, tiny_base_dir) -> None:
    """The clone voice's decoder state after its reference codes is reused, and using it changes nothing."""
    engine = await make_engine(base=str(tiny_base_dir), first_chunk_frames=1)
    caps = SamplingParams(max_new_tokens=6, min_new_tokens=6)
    first = _audio(await _collect(engine, _request(engine, "default", seed=5, sampling=caps)))
    other = _audio(await _collect(engine, _request(engine, "default", "Another text.", seed=6, sampling=caps)))
    again = _audio(await _collect(engine, _request(engine, "default", seed=5, sampling=caps)))
    stats = engine.pools["base"].schedulers[0].stats
    assert (stats.primed, stats.primed_reused) == (1, 2)
    assert np.array_equal(first, again) and len(first) == 5 * FRAME and not np.array_equal(first, other)


async def test_preload_loads_and_warms_up(make_engine, tiny_base_dir, tiny_voice_design_dir) -> None:
    engine = await make_engine(base=str(tiny_base_dir), voice_design=str(tiny_voice_design_dir), preload=True)
    status = engine.status()
    assert status.ready and set(status.loaded) == {"base", "voice_design"}
    assert engine.prompts.computed == 1  # the warm-up already prepared the default voice
    assert set(status.details["load_seconds"]) == {"base", "voice_design"}


async def test_design_voice_with_extra_instructions(make_engine, tiny_voice_design_dir, monkeypatch) -> None:
    import engine.qwen.streaming as streaming

    seen: list[str | None] = []
    original = streaming.prepare_inputs

    def spy(loaded, **kw):
        seen.append(kw["instruct"])
        return original(loaded, **kw)

    monkeypatch.setattr(streaming, "prepare_inputs", spy)
    engine = await make_engine(voice_design=str(tiny_voice_design_dir))
    voice = _voice(engine, "narrator-design")
    short = SamplingParams(max_new_tokens=3)
    await _collect(engine, _request(engine, "narrator-design", "One. Two.", sampling=short))
    await _collect(engine, _request(engine, "narrator-design", sampling=short, instructions="  Whisper. "))
    # The description is the instruct for every segment; request instructions are appended to it.
    assert seen == [voice.description, voice.description, f"{voice.description} Whisper."]


# -- continuous batching (FrameScheduler) ----------------------------------------------------------
async def test_bulk_and_interactive_rows_share_steps_and_seeds_hold(make_engine, tiny_custom_voice_dir):
    engine = await make_engine(custom_voice=str(tiny_custom_voice_dir), chunk_frames=4)
    texts = ["Short one.", "A somewhat longer second line.", "Third. It has two sentences."]
    caps = SamplingParams(max_new_tokens=9)  # at most 8 frames per sentence
    requests = [_request(engine, voice, text, seed=i, priority=Priority.BULK if i else Priority.INTERACTIVE,
                         sampling=caps)
                for i, (voice, text) in enumerate(zip(["ryan", "vivian", "aiden"], texts, strict=True))]
    results = await asyncio.gather(*(_collect(engine, r) for r in requests))
    stats = engine.pools["custom_voice"].schedulers[0].stats
    assert stats.started == 3 and stats.finished == 3 and stats.rows_sum > stats.decode_steps
    for text, chunks in zip(texts, results, strict=True):
        audio = _audio(chunks)
        sentences = 2 if text.startswith("Third") else 1
        assert len(audio) % FRAME == 0 and 0 < len(audio) <= sentences * 8 * FRAME
        assert np.isfinite(audio).all() and float(np.abs(audio).max()) > 1e-4
    # The same seed gives the same audio alone, and beside other companions joining later.
    alone = _audio(await _collect(engine, requests[2]))
    late = asyncio.ensure_future(_collect(engine, requests[0]))
    await asyncio.sleep(0.05)
    again = await asyncio.gather(_collect(engine, requests[2]), late)
    for other in (_audio(results[2]), _audio(again[0])):  # equal up to the rounding of batched decoding
        assert other.shape == alone.shape and np.allclose(alone, other, atol=1e-5, rtol=0)


async def test_a_leaver_does_not_disturb_the_others(make_engine, tiny_custom_voice_dir):
    engine = await make_engine(custom_voice=str(tiny_custom_voice_dir), chunk_frames=2)
    long_caps = SamplingParams(max_new_tokens=25)
    stays = _request(engine, "ryan", "This one stays to the end.", seed=1, priority=Priority.BULK, sampling=long_caps)
    leaves = engine.synthesize(_request(engine, "vivian", "This one leaves early.", seed=2, priority=Priority.BULK,
                                        sampling=long_caps))
    staying = asyncio.ensure_future(_collect(engine, stays))
    first = await anext(leaves)
    assert len(first.samples) > 0
    await leaves.aclose()  # the client went away after its first chunk
    audio = _audio(await staying)
    scheduler = engine.pools["custom_voice"].schedulers[0]
    assert scheduler.stats.cancelled == 1 and scheduler.stats.rows_sum > scheduler.stats.decode_steps
    # Undisturbed: what it gives alone (up to the rounding of batched decoding).
    alone = _audio(await _collect(engine, stays))
    assert audio.shape == alone.shape and np.allclose(audio, alone, atol=1e-5, rtol=0)


async def test_interactive_rows_join_first_when_the_batch_is_full(make_engine, tiny_custom_voice_dir):
    engine = await make_engine(custom_voice=str(tiny_custom_voice_dir), max_batch=2, chunk_frames=2,
                               first_chunk_frames=1)
    pool = engine.pools["custom_voice"]
    await pool.ensure_loaded(engine.config)
    order: list[str] = []
    caps = SamplingParams(max_new_tokens=12, min_new_tokens=12)

    async def run(name: str, priority: Priority) -> None:
        async for _ in engine.synthesize(_request(engine, "ryan", f"Request {name}.", seed=1, priority=priority,
                                                  sampling=caps)):
            if name not in order:
                order.append(name)

    tasks = [asyncio.ensure_future(run(f"bulk{i}", Priority.BULK)) for i in range(3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.ensure_future(run("interactive", Priority.INTERACTIVE)))
    await asyncio.gather(*tasks)
    # Two bulk rows fill the batch; the interactive request takes the next free slot before bulk2.
    assert order.index("interactive") < order.index("bulk2"), order
    assert max(len(s.running) for s in pool.schedulers) == 0


async def test_requests_of_a_voice_join_from_its_cached_prefix(make_engine, tiny_base_dir) -> None:
    """Sentences after the first of a clone voice prefill only what follows the voice's prefix, and sound
    the same as with no prefix cache at all."""
    caps = SamplingParams(max_new_tokens=8, min_new_tokens=8)
    texts = [("Good morning. A second sentence.", 5), ("Another text entirely.", 6)]
    audio = {}
    for cache in (16, 0):
        engine = await make_engine(base=str(tiny_base_dir), first_chunk_frames=1, prefix_cache=cache)
        audio[cache] = [_audio(await _collect(engine, _request(engine, "default", text, seed=seed, sampling=caps)))
                        for text, seed in texts]
        stats = engine.pools["base"].schedulers[0].stats
        numbers = engine.metrics_snapshot()
        if cache:  # three sentences: the first leaves the prefix, the others join from it
            assert (stats.prefix_stored, stats.prefix_hits) == (1, 2) and stats.prefix_tokens_saved > 0
            assert numbers["voice_prefix_bytes"] > 0 and numbers["prefix_tokens_saved_total"] > 0
        else:
            assert (stats.prefix_stored, stats.prefix_hits, numbers["voice_prefix_bytes"]) == (0, 0, 0)
    for cached, whole in zip(audio[16], audio[0], strict=True):
        assert cached.shape == whole.shape and np.allclose(cached, whole, atol=1e-6, rtol=0)


async def _first_audio_after_prefills(engine: QwenEngine, kind: str, requests: list[SynthesisRequest],
                                      monkeypatch, clock=lambda stats: stats.prefills) -> list:
    """Submit `requests` at once (the model's thread held until all wait) and return, per request, how
    many prefills (or what else `clock` reads of the scheduler's stats) had run when its first audio was
    handed out (read on the model's thread)."""
    import threading

    from engine.qwen.scheduler import StreamJob

    pool = engine.pools[kind]
    await pool.ensure_loaded(engine.config)
    scheduler = pool.schedulers[0]
    seen: dict[str, int] = {}
    put = StreamJob.put

    def recording(job: StreamJob, item: object) -> None:
        if isinstance(item, np.ndarray):
            seen.setdefault(job.request_id, clock(scheduler.stats))
        put(job, item)

    monkeypatch.setattr(StreamJob, "put", recording)
    in_prompt = 0  # requests waiting for their clone prompt, which the held thread cannot compute yet
    get_prompt = engine.prompts.get

    async def counted(*args, **kwargs):
        nonlocal in_prompt
        in_prompt += 1
        try:
            return await get_prompt(*args, **kwargs)
        finally:
            in_prompt -= 1

    monkeypatch.setattr(engine.prompts, "get", counted)
    hold = threading.Event()
    held = pool.workers[0].call(hold.wait)
    tasks = [asyncio.ensure_future(_collect(engine, r)) for r in requests]
    for _ in range(3000):  # let the thread go only once every request is queued or waits for the thread
        if scheduler.waiting + in_prompt == len(requests):
            break
        await asyncio.sleep(0.01)
    assert scheduler.waiting + in_prompt == len(requests)
    hold.set()
    await held
    await asyncio.gather(*tasks)
    return [seen[r.request_id] for r in requests]


async def test_joins_take_the_prefill_budget_oldest_first(make_engine, tiny_base_dir, monkeypatch) -> None:
    """Four clone requests together. Cold, a whole prompt is wider than the budget: the first joins alone
    and leaves its voice's prefix, after which only a position or two of each prompt is new, so the
    three others join together in a second prefill before the first frame step. Warm, all four join in
    one prefill."""
    engine = await make_engine(base=str(tiny_base_dir), first_chunk_frames=1, prefill_tokens=64)
    caps = SamplingParams(max_new_tokens=6, min_new_tokens=6)

    def requests() -> list[SynthesisRequest]:
        return [_request(engine, "default", f"Request number {i}.", seed=i, sampling=caps) for i in range(4)]

    cold = await _first_audio_after_prefills(engine, "base", requests(), monkeypatch,
                                             lambda s: (s.prefills, s.decode_steps))
    assert cold == [(2, 1)] * 4
    before = engine.pools["base"].schedulers[0].stats.prefills
    warm = await _first_audio_after_prefills(engine, "base", requests(), monkeypatch)
    assert warm == [before + 1] * 4
    stats = engine.pools["base"].schedulers[0].stats
    assert stats.prefix_stored == 1 and stats.prefix_hits == 7


async def test_a_burst_of_a_new_voice_prefills_its_prefix_once(make_engine, tiny_base_dir, monkeypatch) -> None:
    """Four requests of a voice not yet spoken, with budget enough for all four whole prompts: the first
    joins alone and leaves the voice's prefix, the three others join from it right after, together, a
    position or two each, and all four are heard after the same first frame step. With no prefix cache
    all four are prefilled whole, together."""
    caps = SamplingParams(max_new_tokens=6, min_new_tokens=6)
    firsts, stats = {}, {}
    for cache in (16, 0):
        engine = await make_engine(base=str(tiny_base_dir), first_chunk_frames=1, prefix_cache=cache)
        requests = [_request(engine, "default", f"Request number {i}.", seed=i, sampling=caps) for i in range(4)]
        firsts[cache] = await _first_audio_after_prefills(engine, "base", requests, monkeypatch,
                                                          lambda s: (s.prefills, s.decode_steps))
        stats[cache] = engine.pools["base"].schedulers[0].stats
        monkeypatch.undo()
    assert firsts == {16: [(2, 1)] * 4, 0: [(1, 1)] * 4}
    assert (stats[16].prefix_stored, stats[16].prefix_hits) == (1, 3)
    assert stats[16].prefill_tokens < stats[0].prefill_tokens / 2  # one prompt and three tails, not four prompts


async def test_a_prefill_budget_of_one_joins_one_prompt_per_iteration(make_engine, tiny_custom_voice_dir,
                                                                      monkeypatch) -> None:
    engine = await make_engine(custom_voice=str(tiny_custom_voice_dir), first_chunk_frames=1, prefill_tokens=1)
    caps = SamplingParams(max_new_tokens=6, min_new_tokens=6)
    requests = [_request(engine, voice, "Hello.", seed=1, sampling=caps) for voice in ("ryan", "vivian", "aiden")]
    requests.insert(1, _request(engine, "eric", "Bulk.", seed=1, sampling=caps, priority=Priority.BULK))
    # Interactive first, then first come first served: the bulk request, submitted second, joins last.
    assert await _first_audio_after_prefills(engine, "custom_voice", requests, monkeypatch) == [1, 4, 2, 3]


async def test_a_broken_frame_loop_fails_the_rows_it_was_joining(make_engine, tiny_base_dir, monkeypatch) -> None:
    """An error between taking a row off the queue and running it must reach its client, not hang it."""
    from engine.errors import EngineFailure
    from engine.qwen.frame_batch import FrameBatch

    def broken(*_args, **_kw):
        raise RuntimeError("no prefix today")

    monkeypatch.setattr(FrameBatch, "prefix", broken)
    engine = await make_engine(base=str(tiny_base_dir))
    with pytest.raises(EngineFailure, match="no prefix today"):
        await asyncio.wait_for(_collect(engine, _request(engine, "default", sampling=SamplingParams(max_new_tokens=3))),
                               60)
