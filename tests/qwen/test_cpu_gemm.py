"""The CPU frame step on MKL-packed code-predictor weights: same numbers, and rows still do not bleed."""

from __future__ import annotations

import pytest
import torch

from engine.qwen.cpu_gemm import MIN_ROWS, available, pack_linears
from engine.qwen.streaming import GenerationParams
from tests.qwen.conftest import _load
from tests.qwen.test_frame_batch import GREEDY, SAMPLED, Row, _same, drive, solo

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no MKL packed GEMM")


def _mkl_calls(fn) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name == "mkl::_mkl_linear")


def test_packed_linear_equals_the_plain_one_for_every_row_count() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160)
    weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
    assert pack_linears(linear, 8) == 1
    assert pack_linears(linear, 8) == 0  # packed once
    with torch.inference_mode():
        for n in range(1, 21):
            x = torch.randn(n, 1, 96)
            expected = torch.nn.functional.linear(x, weight, bias)
            got = linear(x)
            assert got.shape == expected.shape == (n, 1, 160)
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (n, (got - expected).abs().max())
            # 4..8 rows (padded to 8) take the packed kernel; fewer and more do not.
            assert _mkl_calls(lambda x=x: linear(x)) == (1 if MIN_ROWS <= n <= 8 else 0), n


def test_packing_needs_a_batch_worth_it() -> None:
    assert pack_linears(torch.nn.Linear(8, 8), MIN_ROWS - 1) == 0
    assert pack_linears(torch.nn.Linear(8, 8).to(torch.bfloat16), 8) == 0  # float32 only


def test_rows_on_a_packed_predictor_match_their_solo_runs(tiny_custom_voice_dir) -> None:
    """Four rows (eight on the predictor's first sub-step) through the packed kernel, each
    compared with its solo run (one row: the plain kernel) within 1e-4 on logits, codes equal."""
    loaded = _load(tiny_custom_voice_dir)  # its own copy: packing changes the modules in place
    assert pack_linears(loaded.model.model.talker.code_predictor, 8) > 0
    texts = ["One row of four speaks here.", "Two.", "The third row says a little more than that.",
             "Four, with a comma."]
    speakers = ["ryan", "vivian", "aiden", "serena"]
    rows = [Row(f"r{i}", text, speaker, GenerationParams(**(SAMPLED if i % 2 else GREEDY), max_frames=6,
                                                          min_frames=6), seed=10 + i)
            for i, (text, speaker) in enumerate(zip(texts, speakers, strict=True))]
    predictor = loaded.model.model.talker.code_predictor
    calls = _mkl_calls(lambda: drive(loaded, [Row(r.name, r.text, r.speaker, r.params, r.seed) for r in rows],
                                     slots=4))
    assert calls > 0 and any(hasattr(m, "mkl_packed") for m in predictor.modules())
    batched = drive(loaded, rows, slots=4)
    for row in rows:
        _same(batched[row.name], solo(loaded, row))
