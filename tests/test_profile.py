"""The paper's "Updated Parameter" / "Additional FLOPs" columns from the project's modules (docs/accounting.md)."""
import pytest

from shared_apt import METHODS
from shared_apt.peft.accounting import count_macs
from shared_apt.harness.profile import main, profile

D, P, R, B, N = 768, 200, 4, 96, 242


@pytest.fixture(scope="module")
def vilt_rows():
    rows, info = profile("vilt-b32", METHODS)
    return {r.method: r for r in rows}, info


def test_vilt_updated_parameters_exact(vilt_rows):
    rows, info = vilt_rows
    exact = {"shallow_prompt": 153_600, "deep_prompt": 1_843_200, "apt": 1_916_940, "lora": 147_456,
             "scaled_pa": 1_798_272, "adapter": 3_559_680, "classifier": 0, "full": 117_588_537}
    assert {m: rows[m].updated_params for m in exact} == exact
    assert info["backbone_params"] == 111_595_008


def test_vilt_additional_flops_equal_apt_md_closed_forms(vilt_rows):
    rows, info = vilt_rows
    L = 12
    closed = {
        "shallow_prompt": L * (12 * P * D * D + 2 * (2 * N * P + P * P) * D + 10 * P * D) + 5 * P * D,
        "deep_prompt": L * (3 * P * D * D + 2 * N * P * D + 5 * P * D),
        "apt": L * (2 * N * P * D + 2 * P * D * R),
        "scaled_pa": L * N * (2 * D * B + 5 * D),
        "adapter": L * 2 * N * 2 * D * B,
        "lora": 0, "classifier": 0, "full": 0,
    }
    assert {m: rows[m].additional_macs for m in closed} == closed
    # per block 12nd^2 + 2n^2d + 10nd, plus the final LN (docs/accounting.md: the frozen total is 21,656,882,688, 12,288
    # more than its own per-block formula gives; both are 21.66G)
    assert info["frozen_macs"] == L * (12 * N * D * D + 2 * N * N * D + 10 * N * D) + 5 * N * D
    assert round(info["frozen_macs"] / 1e9, 2) == 21.66
    # the integers of docs/accounting.md
    assert closed["shallow_prompt"] == 19_527_628_800 and closed["deep_prompt"] == 5_148_057_600
    assert closed["apt"] == 906_854_400 and closed["scaled_pa"] == 439_363_584 and closed["adapter"] == 856_424_448


def test_vilt_columns_reproduce_the_paper(vilt_rows):
    rows, _ = vilt_rows
    for m, r in rows.items():
        if r.paper_params_m is not None and m != "full":
            assert f"{r.updated_params / 1e6:.2f}" == f"{r.paper_params_m:.2f}", m
        if r.paper_gflops:
            assert abs(r.additional_macs / 1e9 - r.paper_gflops) / r.paper_gflops < 0.02, m


@pytest.mark.parametrize("opts,printed", [
    ({"apt_variant": "identity"}, "1.84"), ({"apt_variant": "dense"}, "8.93"), ({"num_prompts": 150}, "1.46"),
    ({"num_prompts": 400}, "3.76"), ({"num_prompts": 400, "rank": 16}, "3.98"),
])
def test_table3_rows(opts, printed):
    rows, _ = profile("vilt-b32", ["apt"], **opts)
    assert f"{rows[0].updated_params / 1e6:.2f}" == printed
    assert rows[0].paper_params_m == float(printed)


def test_seq_len_option_and_cli_table(capsys):
    rows, info = profile("vilt-b32", ["apt"], seq_len=185)
    assert rows[0].additional_macs == 12 * (2 * 185 * P * D + 2 * P * D * R) and info["seq_len"] == 185
    main(["--backbone", "vilt-b32", "--method", "apt,deep_prompt"])
    out = capsys.readouterr().out
    assert "| method | updated params (M) | additional GFLOPs |" in out
    assert "| apt | 1.92 | 0.91 |" in out and "n = 242" in out


def test_count_macs_hand_case():
    import torch

    lin = torch.nn.Linear(4, 3, device="meta")
    ln = torch.nn.LayerNorm(4, device="meta")
    x = torch.zeros(2, 5, 4, device="meta")
    # linear: 2*5*4*3 MACs = 120; LayerNorm: 5 * 40 elements = 200; relu: 0
    assert count_macs(lambda: torch.relu(lin(ln(x)))) == 320


def test_per_layer_profile_and_methods_live_on_the_backbone_device():
    rows, _ = profile("vilt-b32", ["apt", "deep_prompt"], layers=1)
    got = {r.method: (r.updated_params, r.additional_macs) for r in rows}
    assert got["apt"] == (P * D + 2 * D * R + 1, 2 * N * P * D + 2 * P * D * R)
    assert got["deep_prompt"] == (P * D, 3 * P * D * D + 2 * N * P * D + 5 * P * D)
