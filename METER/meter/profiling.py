"""METER (CLIP-ViT-B/16 + RoBERTa-base, 6 fusion layers) as ``python -m shared_apt.profile --backbone meter-b``
measures it: full size, built on the meta device (no weights), VQA head at 384 px; FLOPs of the 6-layer co-attention
fusion module only (the frozen encoders are identical for every method), text length 41 and image length n - 41."""
from __future__ import annotations

import torch

from shared_apt.peft.registry import Backbone, register_backbone

NAME = "meter-b"
DEFAULT_SEQ_LEN = 618
TEXT_LEN = 41
SEQ_LEN_NOTE = ("n = {n} fusion tokens (41 text + the rest image; 618 = 41 + 577 = CLIP-B/16 at 384 px is the length "
                "the paper's FLOPs imply, docs/accounting.md) through the 6 co-attention layers of both streams at batch 1")
NOTES = {
    "shallow_prompt": "two prompt sets (text and image stream) of 200 tokens, prepended at the fusion input "
                      "(official). The paper prints 307,200 truncated (0.30M) but rounds its adapter count "
                      "(5,339,520 -> 5.34M): no single rounding rule prints both, this table rounds",
    "deep_prompt": "one prompt set of 200 per attention module (24 sets = 3,686,400; the official snapshot holds only "
                   "the 12 cross-attention sets, 1.84M); prompts join the keys/values through the frozen K/V "
                   "projections only (7.94G). The paper's 13.05G is reproduced by no variant: K/V prompts only in "
                   "cross-attention (official code) 3.97G, with the prompts' discarded queries also projected in "
                   "self-attention (ViLT's fused-QKV rule) 9.36G, prompts as full tokens through both attention "
                   "sub-blocks 12.67G, shallow-like re-insertion 28.71G (docs/accounting.md)",
    "scaled_pa": "bottleneck 96 reproduces the paper's 1.12G exactly but gives 3,596,544 parameters (3.60M), not the "
                 "printed 3.82M; bottleneck 102 would give 3.82M but 1.19G: no single setting matches both columns "
                 "(docs/accounting.md)",
    "lora": "merged into the frozen weights for inference: no extra FLOPs",
}

# What the comparison harness (shared_apt.harness.experiments.compare) trains with.
EXPERIMENT = {"short_name": "meter", "entry": "METER/run.py", "config_module": "meter.config",
              "model_class": "meter.modules.meter_module:METERTransformerSS", "tiny": "tiny_meter",
              "pretrain_named": ("task_mlm_itm_clip_bert",), "finetune_named": ("task_finetune_vqa_clip_bert",),
              "datamodule": "meter.datamodules:make_meter_datamodule", "two_stream": True}

HEAD_PREFIXES = ("vqa_classifier", "nlvr2_classifier", "snli_classifier", "mlm_score", "itm_score", "rank_output")


# tiny_meter geometry (benchmarks / smoke runs on small machines)
TINY = {"image_size": 64, "patch_size": 16, "input_image_embed_size": 64, "input_text_embed_size": 64,
        "visual_encoder_config": {"width": 64, "layers": 2, "heads": 4, "patch_size": 16},
        "text_encoder_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                "intermediate_size": 256},
        "hidden_size": 64, "num_heads": 4, "num_top_layer": 2, "max_text_len": 24, "vqav2_label_size": 10}


def config(method: str, options: dict, size: str = "base") -> dict:
    """Upstream VQA fine-tuning config (task_finetune_vqa_clip_bert clip16 text_roberta) at 384 px, dropout off."""
    from meter.config import ex
    from shared_apt.vl.training.run import resolve_config

    cfg = resolve_config(ex, ("task_finetune_vqa_clip_bert", "clip16", "text_roberta"),
                         dict(image_size=384, peft=method, peft_options=dict(options), drop_rate=0.0))
    if size == "tiny":
        cfg.update(TINY)
    elif size != "base":
        raise ValueError(f"size {size!r}: expected 'base' or 'tiny'")
    return cfg


def build(method: str, device="meta", size: str = "base", **options):
    """METER with ``method`` attached; on the meta device by default (profiling), or a real device (benchmarks:
    random weights, no checkpoint needed)."""
    from meter.modules import METERTransformerSS

    with torch.device(device):
        return METERTransformerSS(config(method, options, size))


def tokens(model, seq_len: int, batch: int = 1, device="meta", dtype=torch.float32):
    """Both fusion inputs as ONE tensor [B, seq_len, H] (text first: 41 tokens, then seq_len - 41 image tokens) and
    its mask; :func:`run_tokens` splits them."""
    if seq_len <= TEXT_LEN:
        raise ValueError(f"seq_len {seq_len} must exceed the {TEXT_LEN} text tokens")
    H = model.cross_modal_text_transform.out_features
    x = (torch.randn(batch, seq_len, H, device=device, dtype=dtype) if str(device) != "meta" else
         torch.zeros(batch, seq_len, H, device=device, dtype=dtype))
    return x, torch.ones(batch, seq_len, dtype=torch.long, device=device)


def run_tokens(model, x, mask):
    """The part every method changes: the co-attention layers of both streams (shallow prompts join there). Returns
    the two streams' real tokens concatenated (text first)."""
    t, i, tsl, isl = model.fusion_layers(x[:, :TEXT_LEN], x[:, TEXT_LEN:], mask[:, :TEXT_LEN], mask[:, TEXT_LEN:])
    return torch.cat([t[:, tsl], i[:, isl]], dim=1)


def forward(model, seq_len: int, text_len: int = TEXT_LEN) -> None:
    """The co-attention layers of both streams on ``seq_len`` tokens, the first ``text_len`` of them text."""
    if seq_len <= text_len:
        raise ValueError(f"seq_len {seq_len} must exceed the {text_len} text tokens")
    x, mask = tokens(model, max(seq_len, TEXT_LEN + 1))
    x, mask = x[:, :seq_len], mask[:, :seq_len]
    with torch.no_grad():
        model.fusion_layers(x[:, :text_len], x[:, text_len:], mask[:, :text_len], mask[:, text_len:])


def backbone_parameters(model) -> int:
    """Everything but the task heads, the class token and tuning-method modules (docs/backbones.md, METER: 319,474,688 at
    384 px)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if not n.startswith(HEAD_PREFIXES) and n != "class_token" and "peft_" not in n)


def head_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(HEAD_PREFIXES))


def truncate(model, layers: int):
    """Keep the first ``layers`` fusion layers of both streams (benchmarks per layer)."""
    model.cross_modal_text_layers = model.cross_modal_text_layers[:layers]
    model.cross_modal_image_layers = model.cross_modal_image_layers[:layers]
    return model


register_backbone(Backbone(
    name=NAME, build=build, tokens=tokens, run_tokens=run_tokens, forward=forward, truncate=truncate,
    backbone_parameters=backbone_parameters, head_parameters=head_parameters, default_seq_len=DEFAULT_SEQ_LEN,
    seq_len_note=SEQ_LEN_NOTE, notes=NOTES, tiny=TINY, extras=EXPERIMENT))
