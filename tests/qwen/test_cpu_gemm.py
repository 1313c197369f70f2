"""The CPU frame step's blocked GEMMs: the same numbers as the plain kernel, and rows still do not bleed."""

from __future__ import annotations

import torch

from engine.qwen import cpu_gemm
from engine.qwen.cpu_gemm import BLOCK, MAX_ROWS, MIN_ROWS, block_linears, blocked_linear
from engine.qwen.streaming import GenerationParams
from tests.qwen.conftest import _load
from tests.qwen.test_frame_batch import GREEDY, SAMPLED, Row, _same, drive, solo


def _bmm_calls(fn) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name == "aten::bmm")


def test_blocked_linear_equals_the_plain_one() -> None:
    torch.manual_seed(0)
    x, weight, bias = torch.randn(5, 96), torch.randn(10 * BLOCK, 96), torch.randn(10 * BLOCK)
    expected = torch.nn.functional.linear(x, weight, bias)
    got = blocked_linear(x, weight, bias)
    assert got.shape == expected.shape == (5, 10 * BLOCK) and got.is_contiguous()
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    assert torch.allclose(blocked_linear(x, weight), x @ weight.T, atol=1e-5, rtol=1e-5)


def test_only_batched_steps_of_a_few_rows_take_the_blocked_path() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 10 * BLOCK)
    weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
    assert block_linears(linear) == 1
    assert block_linears(linear) == 0  # switched once
    with torch.inference_mode():
        for batch, positions in [(b, 1) for b in range(1, 30)] + [(4, 2), (8, 2), (13, 2), (1, 6), (1, 20)]:
            x = torch.randn(batch, positions, 96)
            expected = torch.nn.functional.linear(x, weight, bias)
            got = linear(x)
            assert got.shape == expected.shape == (batch, positions, 10 * BLOCK)
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (batch, positions)
            # One sequence (solo steps, prefills) stays on the plain kernel; so do big batches.
            blocked = batch >= 2 and MIN_ROWS <= batch * positions <= MAX_ROWS
            assert _bmm_calls(lambda x=x: linear(x)) == int(blocked), (batch, positions)


def test_only_float32_cpu_weights_in_whole_blocks_are_switched() -> None:
    assert block_linears(torch.nn.Linear(8, BLOCK + 1)) == 0
    assert block_linears(torch.nn.Linear(8, BLOCK).to(torch.bfloat16)) == 0
    model = torch.nn.Sequential(torch.nn.Linear(8, BLOCK), torch.nn.ReLU(), torch.nn.Linear(BLOCK, 2 * BLOCK))
    assert block_linears(model) == 2


def test_rows_on_blocked_linears_match_their_solo_runs(tiny_custom_voice_dir, monkeypatch) -> None:
    """Four rows (eight on the predictor's first sub-step) through the blocked GEMMs of the talker and
    the code predictor, each compared with its solo run (one row: the plain kernel) within 1e-4 on
    logits, codes equal."""
    loaded = _load(tiny_custom_voice_dir)  # its own copy: the forwards are swapped in place
    talker = loaded.model.model.talker
    assert block_linears(talker) > 0
    assert any(getattr(m, "blocked", False) for m in talker.code_predictor.modules())
    texts = ["One row of four speaks here.", "Two.", "The third row says a little more than that.",
             "Four, with a comma."]
    speakers = ["ryan", "vivian", "aiden", "serena"]
    rows = [Row(f"r{i}", text, speaker, GenerationParams(**(SAMPLED if i % 2 else GREEDY), max_frames=6,
                                                          min_frames=6), seed=10 + i)
            for i, (text, speaker) in enumerate(zip(texts, speakers, strict=True))]
    calls = []

    def counted(x, weight, bias=None):
        calls.append(x.shape[0])
        return blocked_linear(x, weight, bias)

    monkeypatch.setattr(cpu_gemm, "blocked_linear", counted)
    batched = drive(loaded, rows, slots=4)
    assert calls and set(calls) <= {4, 8}  # the talker's steps and the predictor's sub-steps
    monkeypatch.undo()
    for row in rows:
        _same(batched[row.name], solo(loaded, row))
