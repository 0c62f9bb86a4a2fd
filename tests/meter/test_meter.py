"""METER backbone: upstream checkpoint layout, every tuning method on a tiny METER, APT's query-only cross-attention,
full-size parameter counts (meta device) and the profile numbers of the APT paper (docs/accounting.md)."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

import shared_apt
from shared_apt.vl.training.optim import set_schedule
from shared_apt.peft.api import common_trainable_names, method_parameter_names
from meter.modules import METERTransformerSS
from meter.modules.meter_module import HEAD_NAMES
from meter.modules.clip_model import resize_positions


from tiny import meter_batch as tiny_batch, meter_build as build, meter_config as tiny_config  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# Architecture and upstream checkpoints


def test_infer_outputs_and_text_encoder_pieces():
    m = build().eval()
    b = tiny_batch()
    out = m.infer(b)
    assert out["text_feats"].shape == (2, 10, 64)
    assert out["image_feats"].shape == (2, 5, 64)  # (32 / 16)^2 patches + class token
    assert out["cls_feats"].shape == (2, 128)
    assert set(out) == {"text_feats", "image_feats", "cls_feats", "text_labels", "text_ids", "text_masks"}
    # the piecewise text encoder (RoBERTa positions from ids, -10000 mask) equals transformers' own forward
    ref = m.text_transformer(input_ids=b["text_ids"], attention_mask=b["text_masks"]).last_hidden_state
    torch.testing.assert_close(m.encode_text(b["text_ids"], b["text_masks"]), ref, atol=1e-5, rtol=0)
    # cls_feats = [tanh pooled text token 0 | tanh pooled image token 0]
    torch.testing.assert_close(out["cls_feats"][:, :64], torch.tanh(m.cross_modal_text_pooler.dense(
        out["text_feats"][:, 0])))
    # image stream's first fusion layer reads the text stream's INPUT (parallel update): changing the text layer 0
    # weights must not change what image layer 0 returns
    seen = {}
    h = m.cross_modal_image_layers[0].register_forward_hook(lambda mod, a, o: seen.__setitem__("img0", o))
    m.infer(b)
    first = seen["img0"].clone()
    with torch.no_grad():
        m.cross_modal_text_layers[0].output.dense.weight.add_(1.0)
    m.infer(b)
    h.remove()
    torch.testing.assert_close(seen["img0"], first)


def test_state_dict_names_and_geometry():
    m = build(loss_names={"vqa": 1, "itm": 1, "irtr": 1, "mlm": 1})
    sd = m.state_dict()
    for key, shape in {
        "vit_model.visual.conv1.weight": (64, 3, 16, 16), "vit_model.visual.class_embedding": (64,),
        "vit_model.visual.positional_embedding": (5, 64), "vit_model.positional_embedding": (77, 512),
        "vit_model.ln_final.weight": (512,), "vit_model.visual.transformer.resblocks.1.attn.in_proj_weight": (192, 64),
        "vit_model.visual.ln_post.bias": (64,), "text_transformer.pooler.dense.weight": (64, 64),
        "cross_modal_text_layers.1.crossattention.output.LayerNorm.weight": (64,),
        "cross_modal_image_layers.0.attention.self.query.weight": (64, 64), "token_type_embeddings.weight": (2, 64),
        "itm_score.fc.weight": (2, 128), "rank_output.weight": (1, 128), "rank_output.bias": (1,),
        "vqa_classifier.3.weight": (7, 128), "mlm_score.bias": (60,),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    assert "vit_model.visual.transformer.resblocks.2.ln_1.weight" not in sd  # exactly `layers` blocks built
    assert "vit_model.visual.conv1.bias" not in sd and "vit_model.visual.proj" not in sd
    assert m.cross_modal_text_layers[0].attention.output.LayerNorm.eps == 1e-12
    assert m.vit_model.visual.ln_pre.eps == 1e-5 and m.text_transformer.embeddings.LayerNorm.eps == 1e-5
    # rank_output shares storage with ITM row 1; ITM frozen
    assert m.rank_output.weight.data_ptr() == m.itm_score.fc.weight[1:].data_ptr()
    assert not any(p.requires_grad for p in m.itm_score.parameters())


def _upstream_ckpt(model, path, drop=()):
    sd = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(drop)}
    sd["text_transformer.embeddings.position_ids"] = torch.arange(20).expand(1, -1)  # transformers 4.6 buffer
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 10, "pytorch-lightning_version": "1.3.2"}, path)
    return sd


def test_upstream_checkpoint_reloads_identically(tmp_path, caplog):
    src = build(seed=1).eval()
    path = str(tmp_path / "meter.ckpt")
    sd = _upstream_ckpt(src, path)
    caplog.set_level("INFO")
    dst = build(seed=2, load_path=path).eval()
    diffs = [r.getMessage() for r in caplog.records if "not in the checkpoint" in r.getMessage()
             or "unused by this model" in r.getMessage()]
    assert diffs == [], diffs  # position_ids is the only extra key and it is documented/ignored
    assert set(dst.state_dict()) == set(sd) - {"text_transformer.embeddings.position_ids"}
    b = tiny_batch()
    a, c = src.infer(b), dst.infer(b)
    for k in ("text_feats", "image_feats", "cls_feats"):
        torch.testing.assert_close(a[k], c[k], atol=0, rtol=0)
    torch.testing.assert_close(src.vqa_classifier(a["cls_feats"]), dst.vqa_classifier(c["cls_feats"]))

    # another image size: positions resized bicubically at load, class row untouched
    big = build(seed=3, load_path=path, image_size=64).eval()
    pe = big.vit_model.visual.positional_embedding
    assert pe.shape == (17, 64)
    torch.testing.assert_close(pe[0], sd["vit_model.visual.positional_embedding"][0])
    grid = sd["vit_model.visual.positional_embedding"][1:].reshape(1, 2, 2, 64).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(16, 64)
    torch.testing.assert_close(pe[1:], want)
    assert big.infer(tiny_batch(64))["image_feats"].shape == (2, 17, 64)
    assert resize_positions(pe, 4) is pe  # same grid: identity


def test_fine_tuning_heads_from_pretrained_layout(tmp_path):
    pre = build(seed=1, loss_names={"itm": 1, "mlm": 1}).eval()
    path = str(tmp_path / "pretrain.ckpt")
    _upstream_ckpt(pre, path)
    # NLVR2: 2-row checkpoint, modality table expanded after loading (row 2 := row 1)
    nl = build(seed=2, loss_names={"nlvr2": 1}, load_path=path)
    w = nl.token_type_embeddings.weight
    assert w.shape == (3, 64)
    torch.testing.assert_close(w[:2], pre.token_type_embeddings.weight)
    torch.testing.assert_close(w[2], pre.token_type_embeddings.weight[1])
    with pytest.raises(Exception, match="token_type_embeddings has 2 rows"):
        build(seed=2, loss_names={"nlvr2": 1}, load_path=path, test_only=True)
    # IR/TR: rank_output absent from the checkpoint -> ITM row 1 (zero-shot), shared storage
    ir = build(seed=2, loss_names={"itm": 0.5, "irtr": 1}, load_path=path)
    torch.testing.assert_close(ir.rank_output.weight, pre.itm_score.fc.weight[1:])
    torch.testing.assert_close(ir.rank_output.bias, pre.itm_score.fc.bias[1:])
    assert ir.executed_tasks() == ["itm", "irtr"]  # METER runs values > 0


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="patch_size=32"):
        build(patch_size=32)
    with pytest.raises(ValueError, match="input_text_embed_size=48"):
        build(input_text_embed_size=48)
    with pytest.raises(ValueError, match="snli"):
        build(loss_names={"snli": 1})


def test_sacred_configs_and_petl_learning_rate():
    from meter.config import ex

    def resolved(*named, **updates):
        return ex.run("resolved_config", named_configs=list(named), config_updates=updates,
                      options={"--loglevel": "ERROR"}).result

    c = resolved("task_finetune_vqa_clip_bert", "clip16", "text_roberta", "peft_apt", image_size=384)
    assert (c["vit"], c["patch_size"], c["tokenizer"], c["vocab_size"]) == ("ViT-B/16", 16, "roberta-base", 50265)
    assert c["peft"] == "apt" and c["peft_options"] == {"num_prompts": 200, "apt_rank": 4}
    assert (c["learning_rate"], c["peft_lr_scale"], c["lr_mult_head"]) == (5e-6, 5, 50)
    t = resolved("tiny_meter", "peft_lora", loss_names={"vqa": 1, "itm": 0, "mlm": 0}, vqav2_label_size=5,
                 test_only=False)
    m = METERTransformerSS(t)
    # the config is stored as given; the shared optimiser applies learning_rate x peft_lr_scale (one place)
    assert (m.hparams.config["learning_rate"], m.hparams.config["peft_lr_scale"]) == (1e-5, 5)
    assert "upstream_learning_rate" not in m.hparams.config
    assert shared_apt.peft_config(m).method == "lora"
    m._trainer = types.SimpleNamespace(estimated_stepping_batches=10)   # all set_schedule reads from the trainer
    [optimizer], _ = set_schedule(m)
    lrs = {g["name"]: g["initial_lr"] for g in optimizer.param_groups if g["params"]}  # before warm-up
    head = "+".join(HEAD_NAMES)
    assert lrs["base/decay"] == pytest.approx(5e-5)                     # class token: 1e-5 x 5
    assert lrs["cross_modal/decay"] == pytest.approx(5e-5 * 5)          # LoRA in the fusion layers, x lr_mult_cross_modal
    assert lrs[f"{head}/decay"] == pytest.approx(5e-5 * t["lr_mult_head"])


# ----------------------------------------------------------------------------------------------------------------
# Tuning methods


@pytest.mark.parametrize("method", shared_apt.METHODS)
def test_every_method_trains_exactly_its_policy(method):
    m = build(peft=method, peft_options={"num_prompts": 3} if "prompt" in method or method == "apt" else {})
    m.train()
    b = tiny_batch()
    out = m.infer(b)
    logits = m.vqa_classifier(out["cls_feats"])
    (logits.square().mean() + out["text_feats"].square().mean() + out["image_feats"].square().mean()).backward()
    names = dict(m.named_parameters())
    trainable = {n for n, p in names.items() if p.requires_grad}
    if method == "full":
        assert trainable == set(names)
        return
    # official default: METER's APT tag "mm" does not match APT.scale, so s stays frozen (literal sets: test_fidelity)
    expected = set(common_trainable_names(m)) | {n for n in method_parameter_names(m) if not n.endswith("log_scale")}
    assert trainable == expected
    assert "class_token" in trainable and "token_type_embeddings.weight" in trainable
    assert {"cross_modal_text_pooler.dense.weight", "cross_modal_image_pooler.dense.weight"} <= trainable
    for n, p in names.items():
        if n not in trainable:
            assert p.grad is None or not p.grad.any(), f"frozen {n} received a gradient"
    for n in ("class_token", "vqa_classifier.3.weight", "token_type_embeddings.weight"):
        assert names[n].grad is not None and names[n].grad.abs().sum() > 0, n
    mods = shared_apt.tuning_modules(m)
    counts = {"classifier": 0, "shallow_prompt": 2, "deep_prompt": 8, "lora": 8, "adapter": 12, "scaled_pa": 8,
              "apt": 8}
    assert len(mods) == counts[method]  # 2 layers x 2 streams x (self + cross) attention sites, +1 FFN adapter
    for mod in mods:
        grads = [p.grad for p in mod.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{method}: {type(mod).__name__} got no grad"
    # every method parameter lives inside the fusion module (lr x lr_mult_cross_modal, as the official code)
    assert all("cross_modal" in n for n in method_parameter_names(m))


def test_class_token_initialised_from_roberta_bos_embedding():
    m = build(peft="classifier")
    emb = m.text_transformer.embeddings.eval()
    want = emb.LayerNorm(emb.word_embeddings.weight[0] + emb.position_embeddings.weight[2]
                         + emb.token_type_embeddings.weight[0])
    torch.testing.assert_close(m.class_token.reshape(-1), want)


def test_apt_in_cross_attention_reads_only_the_query_stream():
    m = build(peft="apt", peft_options={"num_prompts": 5}).eval()
    with torch.no_grad():  # make the update non-trivial (W2 = 0 at init)
        for mod in shared_apt.tuning_modules(m):
            mod.w2.normal_(std=0.5)
    apt = m.cross_modal_text_layers[0].crossattention.peft_apt
    seen = {}
    orig = apt.delta
    apt.delta = lambda x: seen.setdefault("dx", []).append(orig(x)) or seen["dx"][-1]
    outs = []
    h = m.cross_modal_text_layers[0].crossattention.output.dense.register_forward_hook(
        lambda mod, a, o: outs.append(o.detach().clone()))
    b1, b2 = tiny_batch(seed=0), tiny_batch(seed=0)
    b2["image"] = [torch.randn(2, 3, 32, 32)]  # other stream changes, text (the query stream) does not
    m.infer(b1)
    m.infer(b2)
    h.remove()
    d1, d2 = seen["dx"]
    assert d1.abs().sum() > 0
    torch.testing.assert_close(d1, d2, atol=0, rtol=0)  # dX depends on the query stream only
    assert not torch.allclose(outs[0], outs[1])  # ... while the attention output itself does see the image
    assert not apt.log_scale.requires_grad  # official default (the tag "mm" misses APT.scale); peft_apt_paper trains it


def test_apt_official_scale_frozen_and_shallow_append_option():
    m = build(peft="apt", peft_options={"num_prompts": 2, "apt_train_scale": False})
    assert not any(p.requires_grad for n, p in m.named_parameters() if n.endswith("log_scale"))
    for placement in ("prepend", "append"):
        s = build(peft="shallow_prompt", peft_options={"num_prompts": 3, "prompt_placement": placement}).eval()
        out = s.infer(tiny_batch())
        assert out["text_feats"].shape == (2, 10, 64) and out["image_feats"].shape == (2, 5, 64)
        names = method_parameter_names(s)
        assert sorted(names) == ["cross_modal_image_input.peft_shallow_prompt.prompts",
                                 "cross_modal_text_input.peft_shallow_prompt.prompts"]


def test_deep_prompts_join_the_other_streams_keys_in_cross_attention():
    m = build(peft="deep_prompt", peft_options={"num_prompts": 3}).eval()
    att = m.cross_modal_text_layers[0].crossattention.self
    shapes = []
    h = att.key.register_forward_hook(lambda mod, a, o: shapes.append(tuple(a[0].shape)))
    m.infer(tiny_batch())
    h.remove()
    assert shapes == [(2, 5, 64), (3, 64)]  # image tokens (other stream) + the module's 3 prompts


# ----------------------------------------------------------------------------------------------------------------
# Full size (meta device): the APT paper's exact counts and FLOPs


@pytest.fixture(scope="module")
def full_profile():
    from shared_apt.harness.profile import profile

    rows, info = profile("meter-b", list(shared_apt.METHODS))
    return {r.method: r for r in rows}, info


def test_full_size_parameter_counts(full_profile):
    rows, info = full_profile
    assert info["backbone_params"] == 319_474_688  # 384 px, no head (docs/backbones.md, METER, docs/accounting.md)
    assert info["head_params"] == 7_173_177
    want = {"apt": 3_833_880, "lora": 294_912, "adapter": 5_339_520, "scaled_pa": 3_596_544,
            "shallow_prompt": 307_200, "deep_prompt": 3_686_400, "classifier": 0,
            "full": 319_474_688 + 7_173_177}
    assert {k: rows[k].updated_params for k in want} == want


def test_full_size_additional_flops(full_profile):
    rows, info = full_profile
    assert info["frozen_macs"] == 38_555_606_016  # 6 fusion layers, both streams, s = 618 (docs/accounting.md)
    exact = {"shallow_prompt": 28_707_840_000, "apt": 2_307_686_400, "scaled_pa": 1_122_011_136,
             "adapter": 1_640_300_544, "lora": 0}
    assert {k: rows[k].additional_macs for k in exact} == exact
    for k, paper in {"shallow_prompt": 28.71, "apt": 2.31, "scaled_pa": 1.12, "adapter": 1.64}.items():
        assert abs(rows[k].additional_macs / 1e9 - paper) / paper < 0.02
    # deep prompts: K/V-only prompts in all 24 modules = 6 (8pd^2 + 4pd s) (docs/accounting.md), not the paper's 13.05G
    p, d, s = 200, 768, 618
    assert rows["deep_prompt"].additional_macs == 6 * (8 * p * d * d + 4 * p * d * s)
    assert "13.05G" in rows["deep_prompt"].note and "3.82M" in rows["scaled_pa"].note


def test_irtr_fine_tuning_step_runs_itm_and_irtr():
    """IR/TR as METER trains it: itm (0.5 > 0) and irtr both execute; ITM has no WPA term; ITM head frozen."""
    m = build(loss_names={"itm": 0.5, "irtr": 1}, draw_false_text=2, peft="apt", peft_options={"num_prompts": 2})
    m.train()
    b = tiny_batch()
    b["text"] = ["a", "b"]
    b["false_image_0"] = [torch.randn(2, 3, 32, 32)]
    for i in range(2):
        b[f"false_text_{i}_ids"], b[f"false_text_{i}_masks"] = b["text_ids"].flip(0), b["text_masks"].flip(0)
        b[f"false_text_{i}_labels"] = b["text_labels"]
    m.set_tasks()
    out = m(b)
    assert {"itm_loss", "irtr_loss"} <= set(out) and out["itm_wpa_loss"] == 0
    m.total_loss(out).backward()
    assert m.rank_output.weight.grad is not None and m.itm_score.fc.weight.grad is None
    groups = m.lr_rules()
    assert groups[0] == (("vqa_classifier", "nlvr2_classifier", "mlm_score", "itm_score", "snli_classifier"), 50.0)
    assert groups[1] == (("cross_modal",), 5.0)


def test_method_options_as_top_level_config_keys():
    import importlib.util
    import os

    from meter.config import ex
    from shared_apt.peft.registry import flat_option_keys; OPTION_KEYS = flat_option_keys()

    spec = importlib.util.spec_from_file_location(
        "meter_run", os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "METER", "run.py"))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    c = ex._create_run(named_configs=["peft_apt"], config_updates={"num_prompts": 7}).config
    assert all(k in c for k in OPTION_KEYS)
    assert c["num_prompts"] == 7 and c["peft_options"]["num_prompts"] == 200


def test_position_resize_down_is_plain_bicubic_without_antialias():
    """Loading a 384 px checkpoint at 224 shrinks the grid: upstream's F.interpolate has no antialiasing."""
    pe = torch.randn(1 + 6 * 6, 8, generator=torch.Generator().manual_seed(0))
    grid = pe[1:].reshape(1, 6, 6, 8).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(16, 8)
    out = resize_positions(pe, 4)
    torch.testing.assert_close(out[0], pe[0], atol=0, rtol=0)
    torch.testing.assert_close(out[1:], want, atol=0, rtol=0)
