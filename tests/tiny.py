"""Tiny backbones and batches shared by the tests (same code as the real sizes, small dimensions)."""
from __future__ import annotations

import copy

import torch

_DEFAULTS = None

# What the tests change on top of upstream's Sacred defaults (besides the tiny geometry): a VQA model, one epoch,
# no workers, fp32, no dropout.
TEST_SETTINGS = {
    "datasets": ["vqa"], "loss_names": {"itm": 0, "mlm": 0, "mpp": 0, "vqa": 1, "nlvr2": 0, "irtr": 0},
    "batch_size": 8, "per_gpu_batchsize": 4, "max_epoch": 1, "max_steps": None, "warmup_steps": 0.1,
    "num_workers": 0, "precision": 32, "drop_rate": 0.0, "draw_false_image": 0, "max_image_len": -1,
    "vqav2_label_size": 11, "vocab_size": 50, "peft": "full", "peft_options": {},
}


def vilt_config(**overrides) -> dict:
    """Upstream ViLT defaults (the Sacred config, docs/backbones.md, ViLT) at the tiny geometry ViLT registers for
    tests and benchmarks (``vilt.profiling.TINY``: hidden 32, 2 layers, 4 heads, patch 16, 64 px)."""
    global _DEFAULTS
    if _DEFAULTS is None:
        from shared_apt.vl.training.run import resolve_config
        from vilt.config import ex
        from vilt.profiling import TINY

        _DEFAULTS = {**resolve_config(ex), **TINY, **TEST_SETTINGS}
    cfg = copy.deepcopy(_DEFAULTS)
    loss = overrides.pop("loss_names", None)
    if loss:
        cfg["loss_names"] = {**{k: 0 for k in cfg["loss_names"]}, **loss}
    cfg.update(overrides)
    return cfg


def vilt_batch(cfg: dict, batch: int = 3, seed: int = 0, sizes=((64, 64), (48, 64), (64, 32))) -> dict:
    """A collated-looking batch: zero-padded images of different sizes, padded texts."""
    g = torch.Generator().manual_seed(seed)
    H = max(s[0] for s in sizes)
    W = max(s[1] for s in sizes)
    img = torch.zeros(batch, 3, H, W)
    for i in range(batch):
        h, w = sizes[i % len(sizes)]
        img[i, :, :h, :w] = torch.rand(3, h, w, generator=g) * 2 - 1
    L = cfg["max_text_len"]
    ids = torch.randint(5, cfg["vocab_size"], (batch, L), generator=g)
    masks = torch.ones(batch, L, dtype=torch.long)
    for i in range(batch):
        n = 3 + (i * 4) % (L - 3)
        ids[i, n:] = 0
        masks[i, n:] = 0
    ids[:, 0] = 2
    return {
        "image": [img], "text_ids": ids, "text_masks": masks, "text_labels": torch.full_like(ids, -100),
        "text_ids_mlm": ids.clone(), "text_labels_mlm": torch.full_like(ids, -100),
    }


class TinyBert(torch.nn.Module):
    """Two transformers BertLayers with self- and cross-attention, declared to shared_apt through shared_apt.peft.hf:
    proves that method code attaches to foreign attention modules unchanged."""

    def __init__(self, hidden: int = 32, layers: int = 2, heads: int = 4):
        super().__init__()
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertLayer

        cfg = BertConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, is_decoder=True, add_cross_attention=True,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        cfg._attn_implementation = "eager"
        self.layer = torch.nn.ModuleList([BertLayer(cfg, layer_idx=i) for i in range(layers)])
        self.head = torch.nn.Linear(hidden, 3)
        self.extra = None

    def install_extra_tokens(self, provider, placement="append"):
        self.extra = None if provider is None else (provider, placement)

    def forward(self, x, context):
        n = x.shape[1]
        if self.extra is not None:
            provider, placement = self.extra
            t = provider(x.shape[0])
            x = torch.cat([x, t], 1) if placement == "append" else torch.cat([t, x], 1)
        for layer in self.layer:
            x = layer(x, None, encoder_hidden_states=context)
        if self.extra is not None:
            x = x[:, :n] if self.extra[1] == "append" else x[:, x.shape[1] - n:]
        return self.head(x[:, 0])

    def peft_spec(self):
        from shared_apt.peft.hf import bert_layer_sites
        from shared_apt.peft.sites import BackboneSpec, SequenceSite

        sites = [s for i, layer in enumerate(self.layer) for s in bert_layer_sites(layer, f"layer.{i}")]
        d = self.head.in_features
        return BackboneSpec(sites, SequenceSite("layers", d, self, self.install_extra_tokens, "append"), ["head"],
                            {"backbone": "tiny-bert", "hidden": d, "layers": len(self.layer)})


def meter_config(**overrides) -> dict:
    """Upstream METER keys (docs/backbones.md, METER) at the tiny_meter geometry: CLIP width 64 x 2 blocks, RoBERTa width 64 x
    2 layers, fusion width 64 x 2 layers."""
    cfg = {
        "exp_name": "meter", "seed": 0, "datasets": ["vqa"],
        "loss_names": {"itm": 0, "mlm": 0, "mpp": 0, "vqa": 1, "vcr": 0, "vcr_qar": 0, "nlvr2": 0, "irtr": 0,
                       "contras": 0, "snli": 0},
        "batch_size": 4, "train_transform_keys": ["clip"], "val_transform_keys": ["clip"], "image_size": 32,
        "patch_size": 16, "draw_false_image": 0, "image_only": False, "resolution_before": 224,
        "vqav2_label_size": 7, "max_text_len": 10, "tokenizer": "roberta-base", "vocab_size": 60,
        "whole_word_masking": False, "mlm_prob": 0.15, "draw_false_text": 0, "num_top_layer": 2,
        "input_image_embed_size": 64, "input_text_embed_size": 64, "vit": "ViT-B/16", "hidden_size": 64,
        "num_heads": 4, "num_layers": 6, "mlp_ratio": 4, "drop_rate": 0.0, "optim_type": "adamw",
        "learning_rate": 1e-5, "weight_decay": 0.01, "decay_power": 1, "max_epoch": 1, "max_steps": None,
        "warmup_steps": 0.1, "end_lr": 0, "lr_mult_head": 50, "lr_mult_cross_modal": 5, "get_recall_metric": False,
        "resume_from": None, "fast_dev_run": False, "val_check_interval": 1.0, "test_only": False, "data_root": "",
        "log_dir": "result", "per_gpu_batchsize": 2, "num_gpus": 1, "num_nodes": 1, "load_path": "",
        "num_workers": 0, "precision": 32,
        "visual_encoder_config": {"width": 64, "layers": 2, "heads": 4, "patch_size": 16},
        "text_encoder_config": {"vocab_size": 60, "hidden_size": 64, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "intermediate_size": 256, "max_position_embeddings": 20},
        "peft": "full", "peft_options": {},
    }
    loss = overrides.pop("loss_names", None)
    if loss:
        cfg["loss_names"] = {**{k: 0 for k in cfg["loss_names"]}, **loss}
    cfg.update(overrides)
    return cfg


def meter_batch(image_size: int = 32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 60, (2, 10), generator=g)
    ids[:, 0] = 0
    ids[1, 6:] = 1  # RoBERTa padding
    masks = (ids != 1).long()
    return {"image": [torch.randn(2, 3, image_size, image_size, generator=g)], "text_ids": ids, "text_masks": masks,
            "text_labels": torch.full_like(ids, -100), "text_ids_mlm": ids.clone(),
            "text_labels_mlm": torch.full_like(ids, -100)}


def meter_build(seed: int = 0, **overrides):
    from meter.modules import METERTransformerSS

    torch.manual_seed(seed)
    return METERTransformerSS(meter_config(**overrides))
