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
    assert block_linears(linear, 0) == 1
    assert block_linears(linear, 0) == 0  # switched once
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
    assert block_linears(torch.nn.Linear(8, BLOCK + 1), 0) == 0
    assert block_linears(torch.nn.Linear(8, BLOCK).to(torch.bfloat16), 0) == 0
    model = torch.nn.Sequential(torch.nn.Linear(8, BLOCK), torch.nn.ReLU(), torch.nn.Linear(BLOCK, 2 * BLOCK))
    assert block_linears(model, 9 * BLOCK) == 1  # weights in cache keep the plain kernel
    assert block_linears(model, 0) == 1


def test_rows_on_blocked_linears_match_their_solo_runs(tiny_custom_voice_dir, monkeypatch) -> None:
    """Four rows (eight on the predictor's first sub-step) through the blocked GEMMs of the talker and
    the code predictor, each compared with its solo run (one row: the plain kernel) within 1e-4 on
    logits, codes equal."""
    loaded = _load(tiny_custom_voice_dir)  # its own copy: the forwards are swapped in place
    talker = loaded.model.model.talker
    assert block_linears(talker, 0) > 0
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


def test_fused_projections_share_one_tensor_and_give_the_same_numbers(tiny_custom_voice_dir) -> None:
    loaded = _load(tiny_custom_voice_dir)
    talker = loaded.model.model.talker
    layer = talker.model.layers[0]
    attn, mlp = layer.self_attn, layer.mlp
    before = [lin.weight.detach().clone() for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj)]
    block_linears(talker, 0)
    joined, sizes = attn.fused
    assert sizes == [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
    # The modules' weights are slices of the joined tensor: nothing is held twice.
    assert all(lin.weight.untyped_storage().data_ptr() == joined.untyped_storage().data_ptr()
               for lin in (attn.q_proj, attn.k_proj, attn.v_proj))
    after = [lin.weight for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    torch.manual_seed(0)
    with torch.inference_mode():
        for batch in (1, 2, 4, 8, 30):
            h = torch.randn(batch, 1, attn.q_proj.in_features)
            for owner, linears in ((attn, (attn.q_proj, attn.k_proj, attn.v_proj)), (mlp, (mlp.gate_proj, mlp.up_proj))):
                got = cpu_gemm.grouped(owner, linears, h)
                # Blocked rows: exactly the per-linear blocked products (same blocks); others: the linears.
                assert all(torch.equal(g, lin(h)) for g, lin in zip(got, linears, strict=True)), batch
