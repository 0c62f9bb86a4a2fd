"""The CLIP profile rows: exact trainable counts and a hand-computed FLOPs case."""
from clip_apt import profiling


def test_apt_and_coop_rows():
    rows, info = profiling.profile([profiling.ROWS[1], next(r for r in profiling.ROWS if r[1] == "apt")])
    apt = next(r for r in rows if r.method == "apt")
    coop = next(r for r in rows if r.method == "coop")
    assert (coop.trainable, coop.macs_per_image, coop.macs_per_prompt) == (2_048, 0, 0)
    # 12 layers x (K = P'W1W2: 4*512*2 + 4*2*512; X K^T and A P' over 77 tokens: 2 * 77*4*512)
    assert apt.trainable == 49_164 and apt.macs_per_image == 0
    assert apt.macs_per_prompt == 12 * (2 * 77 * 4 * 512 + 2 * 4 * 2 * 512) == 3_883_008
    text = profiling.render(rows, info)
    assert "| APT text p 4 r 2 | 49,164 | 49,164 | 0.0000 | 0.0039 |" in text


PROMPT_LEARNERS = {"zeroshot", "coop", "cocoop", "vpt_shallow", "vpt_deep", "upt", "upt_deep", "joint",
                   "shared_prompt", "mlp_prompt"}


def test_prompt_learners_are_registered_but_not_part_of_all():
    import shared_apt
    from shared_apt.peft.registry import cli_options, parse_methods

    assert PROMPT_LEARNERS <= set(shared_apt.method_names())
    assert not PROMPT_LEARNERS & set(parse_methods("all"))
    assert not PROMPT_LEARNERS & set(shared_apt.METHODS)
    assert {"apt", "lora", "adapter"} <= set(parse_methods("all"))
    assert parse_methods("coop,apt") == ["coop", "apt"]
    assert cli_options()["n_ctx"]["type"]("4") == 4  # an option whose default is None parses as its declared type


def test_prompt_learner_on_a_backbone_without_prompt_sites_is_refused():
    import pytest
    from torch import nn

    import shared_apt

    class NoPrompts(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def peft_spec(self):
            return shared_apt.BackboneSpec(attention_sites=[], sequence_site=None, common_trainable=[],
                                           signature={"backbone": "toy"})

    with pytest.raises(TypeError, match="prompt_sites"):
        shared_apt.apply(NoPrompts(), "coop", n_ctx=2)
    with pytest.raises(shared_apt.ConfigError, match="n_ctx=0"):
        shared_apt.apply(NoPrompts(), "coop", n_ctx=0)


def test_profile_cli_prints_clip_rows_and_refuses_option_arguments(capsys):
    import pytest

    from shared_apt.harness.profile import main

    assert main(["--backbone", "clip-vit-b16", "--method", "zeroshot,vpt_shallow"]) == 0
    out = capsys.readouterr().out
    assert "| zero-shot CLIP | 0 | 0 | 0.0000 | 0.0000 |" in out
    assert "| VPT-shallow n 4 | 3,072 | 3,072 |" in out  # 4 x 768
    for argv in (["--method", "apt", "--rank", "4"], ["--method", "coop", "--n-ctx", "2"],
                 ["--method", "full"]):
        with pytest.raises(SystemExit) as e:
            main(["--backbone", "clip-vit-b16", *argv])
        assert e.value.code == 2


def test_registered_backbone_runs_the_text_encoder():
    """The generic hooks (bench) on the tiny geometry: run_tokens on the embedded prompt, pooled at EOT and projected,
    is encode_text; truncate keeps the first text layers."""
    import torch

    from clip_apt import tokenize
    from shared_apt.harness.backbones import get_backbone

    bb = get_backbone("clip-vit-b16")
    torch.manual_seed(0)
    model = bb.build("zeroshot", device="cpu", size="tiny")
    assert model.transformer.width == bb.tiny["text_width"] == 32
    ids = tokenize(["a photo of a dog.", "a red square"])
    x = model.token_embedding(ids) + model.positional_embedding
    with torch.no_grad():
        y = bb.run_tokens(model, x, torch.ones(2, 77))
        pooled = y[torch.arange(2), ids.argmax(-1)] @ model.text_projection
        assert torch.allclose(pooled, model.encode_text(ids), atol=1e-5)
        x2, mask = bb.tokens(model, 9, batch=3, device="cpu")
        assert x2.shape == (3, 9, 32) and mask.shape == (3, 9)
        first = model.transformer.resblocks[0]
        expected = model.ln_final(first(x2, attn_mask=model.attn_mask[:9, :9]))
        assert torch.allclose(bb.run_tokens(bb.truncate(model, 1), x2, mask), expected, atol=1e-6)
    assert bb.head_parameters(model) == 0
