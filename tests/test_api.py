"""apply / policies / save_tuned / load_tuned, over every method and every tiny backbone (PEFT-style table tests)."""
import json
import os

import pytest
import torch

import shared_apt
from shared_apt import ConfigError, TunedWeightsError
from tiny import TinyBert, vilt_batch, vilt_config
from vilt.modules import ViLTransformerSS

# the authors' name filter (substrings classifier, pooler, token_type_embeddings, rank_output) on the tiny VQA ViLT,
# written out: it includes BERT's segment table text_embeddings.token_type_embeddings
VILT_COMMON = {
    "token_type_embeddings.weight", "text_embeddings.token_type_embeddings.weight", "class_token",
    "pooler.dense.weight", "pooler.dense.bias", "vqa_classifier.0.weight", "vqa_classifier.0.bias",
    "vqa_classifier.1.weight", "vqa_classifier.1.bias", "vqa_classifier.3.weight", "vqa_classifier.3.bias",
}


def make_vilt(method, seed=0, **opts):
    torch.manual_seed(seed)
    return ViLTransformerSS(vilt_config(peft=method, peft_options=opts))


def run_vilt(model):
    out = model.infer(vilt_batch(model.hparams.config))
    return model.vqa_classifier(out["cls_feats"])


def make_bert(method, seed=0, **opts):
    torch.manual_seed(seed)
    m = TinyBert()
    shared_apt.apply(m, method, **opts)
    return m


def run_bert(model):
    g = torch.Generator().manual_seed(5)
    return model(torch.randn(2, 6, 32, generator=g), torch.randn(2, 4, 32, generator=g))


BACKBONES = {"vilt": (make_vilt, run_vilt, VILT_COMMON), "bert": (make_bert, run_bert, {"head.weight", "head.bias"})}
SMALL = {"num_prompts": 5}


def opts_for(method):
    return dict(SMALL) if method in ("apt", "shallow_prompt", "deep_prompt") else {}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("method", shared_apt.METHODS)
def test_every_method_forward_backward_and_policy(backbone, method):
    make, run, common = BACKBONES[backbone]
    model = make(method, **opts_for(method))
    model.train()
    out = run(model)
    out.square().mean().backward()
    names = {n for n, p in model.named_parameters()}
    trainable = set(shared_apt.trainable_parameters(model))
    method_names = {n for n in names if ".peft_" in n or n.startswith("peft_")}
    if method == "full":
        assert trainable == names
    else:
        expected = common | method_names
        assert trainable == expected
        assert method_names or method == "classifier"
    for n, p in model.named_parameters():
        if n not in trainable:
            assert p.grad is None, f"frozen {n} received a gradient"
    # every method tensor gets a gradient (possibly zero, e.g. W1 while W2 = 0)
    for n in method_names:
        assert dict(model.named_parameters())[n].grad is not None, n
    if method not in ("full", "classifier"):
        assert any(dict(model.named_parameters())[n].grad.abs().sum() > 0 for n in method_names)


def test_updated_parameter_counts_match_closed_forms_on_tiny_vilt():
    d, L, p = 32, 2, 5
    counts = {
        "shallow_prompt": p * d, "deep_prompt": L * p * d, "lora": L * 4 * d * 4,
        "adapter": 2 * L * (2 * d * 96 + 96 + d), "scaled_pa": L * (2 * d * 96 + 96 + d + 2 * d),
        "apt": L * (p * d + 2 * d * 4 + 1), "classifier": 0,
    }
    for method, want in counts.items():
        assert shared_apt.updated_parameter_count(make_vilt(method, **opts_for(method))) == want, method


def test_apply_rejects_bad_options_with_clear_messages():
    with pytest.raises(ConfigError, match="num_prompts=0"):
        make_vilt("apt", num_prompts=0)
    with pytest.raises(ConfigError, match="unknown peft option"):
        make_vilt("apt", prompts=3)
    with pytest.raises(ConfigError, match="method='prefix'"):
        shared_apt.PeftConfig(method="prefix")
    with pytest.raises(ConfigError, match="rank=4 has no meaning"):
        shared_apt.PeftConfig.from_kwargs("adapter", rank=4)
    with pytest.raises(RuntimeError, match="already applied"):
        shared_apt.apply(make_vilt("apt", num_prompts=2), "lora")


def test_apt_scale_can_be_frozen_as_in_official_meter_code():
    model = make_vilt("apt", num_prompts=2, apt_train_scale=False)
    scales = [n for n in shared_apt.trainable_parameters(model) if n.endswith("log_scale")]
    assert scales == []
    assert shared_apt.updated_parameter_count(model) == 2 * (2 * 32 + 2 * 32 * 4 + 1)


def _randomise(model):
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in shared_apt.trainable_parameters(model).values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("method", ["apt", "lora", "deep_prompt", "adapter", "classifier"])
def test_save_load_tuned_round_trip_is_bit_exact(tmp_path, method):
    src = make_vilt(method, seed=0, **opts_for(method)).eval()
    _randomise(src)
    shared_apt.save_tuned(src, str(tmp_path / "t"))
    meta = json.loads((tmp_path / "t" / "tuned_config.json").read_text())
    assert meta["peft"]["method"] == method and meta["backbone"]["backbone"] == "vilt"
    dst = make_vilt(method, seed=0, **opts_for(method)).eval()  # same frozen backbone, other tuned values
    shared_apt.load_tuned(dst, str(tmp_path / "t"))
    for n, p in shared_apt.trainable_parameters(src).items():
        assert torch.equal(p, dict(dst.named_parameters())[n]), n
    torch.manual_seed(0)
    a = run_vilt(src)
    torch.manual_seed(0)
    b = run_vilt(dst)
    assert torch.equal(a, b)


def test_load_tuned_applies_the_saved_method_to_a_plain_backbone(tmp_path):
    src = make_bert("apt", num_prompts=4)
    _randomise(src)
    shared_apt.save_tuned(src, str(tmp_path))
    torch.manual_seed(0)
    plain = TinyBert()
    shared_apt.load_tuned(plain, str(tmp_path))
    assert shared_apt.peft_config(plain).method == "apt"
    assert torch.equal(run_bert(src), run_bert(plain))


def test_load_tuned_refuses_other_method_option_or_backbone(tmp_path):
    src = make_vilt("apt", num_prompts=4)
    shared_apt.save_tuned(src, str(tmp_path))
    with pytest.raises(TunedWeightsError, match="method option method: file has 'apt', model has 'lora'"):
        shared_apt.load_tuned(make_vilt("lora"), str(tmp_path))
    with pytest.raises(TunedWeightsError, match="num_prompts: file has 4, model has 6"):
        shared_apt.load_tuned(make_vilt("apt", num_prompts=6), str(tmp_path))
    torch.manual_seed(0)
    wide = ViLTransformerSS(vilt_config(hidden_size=48, peft="apt", peft_options={"num_prompts": 4}))
    with pytest.raises(TunedWeightsError) as e:
        shared_apt.load_tuned(wide, str(tmp_path))
    assert "backbone hidden_size: file has 32, model has 48" in str(e.value)
    assert "shape mismatches" in str(e.value)
    (tmp_path / "tuned.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TunedWeightsError, match="not a readable safetensors"):
        shared_apt.load_tuned(make_vilt("apt", num_prompts=4), str(tmp_path))
    with pytest.raises(TunedWeightsError, match="not found"):
        shared_apt.load_tuned(make_vilt("apt", num_prompts=4), str(tmp_path / "nowhere"))


def test_remove_restores_the_frozen_backbone():
    base = make_vilt("classifier").eval()
    model = make_vilt("scaled_pa").eval()
    model.load_state_dict(base.state_dict(), strict=False)
    shared_apt.remove(model)
    assert not any(".peft_" in n for n, _ in model.named_parameters())
    torch.manual_seed(0)
    a = base.infer(vilt_batch(base.hparams.config))["cls_feats"]
    torch.manual_seed(0)
    b = model.infer(vilt_batch(base.hparams.config))["cls_feats"]
    assert torch.equal(a, b)
