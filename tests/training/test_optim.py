"""set_schedule (docs/backbones.md, ViLT): parameter groups, learning rates, AdamW semantics, total / warm-up steps."""
import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import shared_apt
from shared_apt.vl.training import optim
from tests.tiny import vilt_config
from vilt.modules.vilt_module import ViLTransformerSS


def _names(groups, model):
    ids = {id(p): n for n, p in model.named_parameters()}
    return [[ids[id(p)] for p in g["params"]] for g in groups]


def test_four_groups_head_multiplier_and_no_decay_names():
    cfg = vilt_config(loss_names={"vqa": 1}, learning_rate=1e-4, weight_decay=0.01, lr_mult=10)
    model = ViLTransformerSS(cfg)
    groups = optim.param_groups(model.named_parameters(), 1e-4, 0.01, model.lr_rules())
    assert len(groups) == 4
    assert [g["lr"] for g in groups] == [1e-4, 1e-4, pytest.approx(1e-3), pytest.approx(1e-3)]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0, 0.01, 0.0]
    base_decay, base_nd, head_decay, head_nd = _names(groups, model)
    assert "transformer.blocks.0.attn.qkv.weight" in base_decay
    assert "transformer.pos_embed" in base_decay and "transformer.cls_token" in base_decay
    assert "transformer.blocks.0.norm1.weight" in base_nd and "transformer.blocks.0.attn.qkv.bias" in base_nd
    assert "text_embeddings.LayerNorm.weight" in base_nd
    assert "pooler.dense.weight" in base_decay            # pooler is not a "head" for the multiplier
    # quirk: the LayerNorm inside the classifier (index 1) is weight-decayed
    assert set(head_decay) == {"vqa_classifier.0.weight", "vqa_classifier.1.weight", "vqa_classifier.3.weight"}
    assert set(head_nd) == {"vqa_classifier.0.bias", "vqa_classifier.1.bias", "vqa_classifier.3.bias"}
    all_names = [n for g in (base_decay, base_nd, head_decay, head_nd) for n in g]
    assert sorted(all_names) == sorted(n for n, _ in model.named_parameters())


def test_only_trainable_parameters_enter_the_optimiser():
    cfg = vilt_config(loss_names={"vqa": 1}, peft="lora", peft_options={"lora_rank": 2})
    model = ViLTransformerSS(cfg)
    trainable = set(shared_apt.trainable_parameters(model))
    groups = optim.param_groups(model.named_parameters(), 1e-4, 0.01, model.lr_rules())
    in_groups = {n for g in _names(groups, model) for n in g}
    assert in_groups == trainable
    assert not any(n.startswith("transformer.blocks.0.attn.qkv") for n in in_groups)


def test_tied_rank_output_is_listed_once_and_frozen_itm_is_absent():
    cfg = vilt_config(loss_names={"itm": 0.5, "irtr": 1}, draw_false_text=1)
    model = ViLTransformerSS(cfg)
    groups = optim.param_groups(model.named_parameters(), 1e-4, 0.01, model.lr_rules())
    names = [n for g in _names(groups, model) for n in g]
    assert "rank_output.weight" in names and not any(n.startswith("itm_score") for n in names)
    assert len(names) == len(set(names))


def test_meter_style_rules_give_six_groups():
    model = nn.ModuleDict({"cross_modal_text_layers": nn.Linear(2, 2), "vqa_classifier": nn.Linear(2, 2),
                           "text_transformer": nn.Linear(2, 2)})
    rules = [(("vqa_classifier", "nlvr2_classifier", "mlm_score", "itm_score"), 50.0), (("cross_modal",), 5.0)]
    groups = optim.param_groups(model.named_parameters(), 1e-5, 0.01, rules)
    assert len(groups) == 6
    names = _names(groups, model)
    assert names[0] == ["text_transformer.weight"] and names[1] == ["text_transformer.bias"]
    assert names[2] == ["vqa_classifier.weight"] and groups[2]["lr"] == pytest.approx(5e-4)
    assert names[4] == ["cross_modal_text_layers.weight"] and groups[4]["lr"] == pytest.approx(5e-5)


def test_adamw_matches_hand_computed_steps():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = optim.AdamW([p], lr=0.1, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.5)
    grads = [torch.tensor([0.5, -1.0]), torch.tensor([0.2, 0.3])]
    w = [1.0, -2.0]
    m = [0.0, 0.0]
    v = [0.0, 0.0]
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        for i in range(2):
            m[i] = 0.9 * m[i] + 0.1 * g[i].item()
            v[i] = 0.98 * v[i] + 0.02 * g[i].item() ** 2
            step = 0.1 * math.sqrt(1 - 0.98 ** t) / (1 - 0.9 ** t)
            w[i] = w[i] - step * m[i] / (math.sqrt(v[i]) + 1e-8)
            w[i] = w[i] - 0.1 * 0.5 * w[i]            # decoupled decay AFTER the Adam step, on the new weight
        assert p.detach().tolist() == pytest.approx(w, rel=1e-6)


def test_polynomial_and_cosine_factors():
    assert optim.polynomial_factor(0, 10, 100) == 0.0
    assert optim.polynomial_factor(5, 10, 100) == 0.5
    assert optim.polynomial_factor(10, 10, 100) == 1.0
    assert optim.polynomial_factor(55, 10, 100) == pytest.approx(0.5)
    assert optim.polynomial_factor(100, 10, 100) == 0.0
    assert optim.polynomial_factor(150, 10, 100) == 0.0
    assert optim.cosine_factor(55, 10, 100) == pytest.approx(0.5)
    assert optim.cosine_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert optim.warmup_steps_of(0.1, 57) == 5 and optim.warmup_steps_of(7, 57) == 7
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.warmup_steps_of("10", 57)


class _Tiny(pl.LightningModule):
    """Carries the config keys set_schedule reads; the LR per step is recorded."""

    def __init__(self, config):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.vqa_classifier = nn.Linear(2, 1)
        self.body = nn.Linear(2, 2)
        self.lrs = []

    def lr_rules(self):
        return [(("vqa_classifier",), float(self.hparams.config["lr_mult"]))]

    def training_step(self, batch, batch_idx):
        self.lrs.append([g["lr"] for g in self.trainer.optimizers[0].param_groups])
        return self.vqa_classifier(self.body(batch[0])).pow(2).mean()

    def configure_optimizers(self):
        return optim.set_schedule(self)


def test_peft_lr_scale_multiplies_every_group():
    cfg = {"learning_rate": 1e-4, "weight_decay": 0.01, "optim_type": "adamw", "warmup_steps": 0,
           "decay_power": 1, "end_lr": 0, "lr_mult": 10, "peft_lr_scale": 5}
    model = _Tiny(cfg)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    assert model.lrs[0][0] == pytest.approx(5e-4) and model.lrs[0][2] == pytest.approx(5e-3)


@pytest.mark.parametrize("max_steps,max_epochs,accumulate,expected_total", [
    (None, 3, 4, 3 * math.ceil(10 / 4)),   # 10 batches per epoch, accumulation 4 -> 3 steps per epoch
    (None, 2, 1, 20),
    (5, 1000, 2, 5),
])
def test_total_steps_count_optimizer_steps(max_steps, max_epochs, accumulate, expected_total):
    cfg = {"learning_rate": 1e-3, "weight_decay": 0.01, "optim_type": "adamw", "warmup_steps": 0.1,
           "decay_power": 1, "end_lr": 0, "lr_mult": 10}
    model = _Tiny(cfg)
    data = torch.utils.data.TensorDataset(torch.randn(40, 2))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, max_steps=-1 if max_steps is None else max_steps,
                         accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader)
    assert model.schedule_info["total_steps"] == expected_total
    assert model.schedule_info["warmup_steps"] == int(expected_total * 0.1)
    assert trainer.global_step == expected_total
    # the head group keeps its 10x ratio at every step; the schedule decays to 0 exactly at the last step
    assert all(l[2] == pytest.approx(10 * l[0]) for l in model.lrs)
    final = trainer.optimizers[0].param_groups[0]["lr"]
    assert final == pytest.approx(0.0, abs=1e-12)


def test_no_trainable_parameter_is_an_error():
    cfg = {"learning_rate": 1e-3, "weight_decay": 0.01, "optim_type": "adamw", "warmup_steps": 0,
           "decay_power": 1, "end_lr": 0, "lr_mult": 1}
    model = _Tiny(cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        optim.set_schedule(model)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="optim_type='lamb'"):
        optim.build_optimizer([{"params": [nn.Parameter(torch.zeros(1))]}], "lamb", 1e-3)
