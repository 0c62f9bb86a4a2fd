"""ViLT-B/32 as ``python -m shared_apt.profile --backbone vilt-b32`` measures it: full size, built on the meta device
(no weights), with the VQA head; FLOPs of the single-stream transformer (12 blocks + final LN) on n tokens."""
from __future__ import annotations

import torch

from shared_apt.peft.registry import Backbone, register_backbone


NAME = "vilt-b32"
DEFAULT_SEQ_LEN = 242
SEQ_LEN_NOTE = ("n = {n} tokens through the 12 blocks + final LN at batch 1; n = 242 (41 text + 200 patches + "
                "image [CLS]) is the length the paper's FLOPs imply (docs/accounting.md)")
NOTES = {
    "deep_prompt": "prompts pass LN1 and the frozen QKV (queries dropped) as in the official code; counting their "
                   "LayerNorm gives 5.15G, the paper prints 5.14G (= our count without that LN) (docs/accounting.md)",
    "lora": "merged into the frozen weights for inference: no extra FLOPs",
}


# What the comparison harness (shared_apt.harness.experiments.compare) trains with.
EXPERIMENT = {"short_name": "vilt", "entry": "ViLT/run.py", "config_module": "vilt.config",
              "model_class": "vilt.modules.vilt_module:ViLTransformerSS", "tiny": "tiny_vilt",
              "pretrain_named": ("task_mlm_itm",), "finetune_named": ("task_finetune_vqa",),
              "datamodule": "shared_apt.vl.data.datamodules:MTDataModule", "two_stream": False}

TINY = {"hidden_size": 32, "num_heads": 4, "num_layers": 2, "patch_size": 16, "image_size": 64,
        "max_text_len": 12, "vocab_size": 100, "vqav2_label_size": 10, "cls_token_id": 2}


def config(method: str, options: dict, size: str = "base") -> dict:
    from shared_apt.vl.training.run import resolve_config
    from vilt.config import ex

    cfg = resolve_config(ex, (), dict(loss_names={"itm": 0, "mlm": 0, "mpp": 0, "vqa": 1, "nlvr2": 0, "irtr": 0},
                                      peft=method, peft_options=dict(options), drop_rate=0.0))
    if size == "tiny":
        cfg.update(TINY)
    elif size != "base":
        raise ValueError(f"size {size!r}: expected 'base' or 'tiny'")
    return cfg


def build(method: str, device="meta", size: str = "base", **options):
    """ViLT with ``method`` attached; on the meta device by default (profiling), or a real device (benchmarks:
    random weights, no checkpoint needed)."""
    from vilt.modules import ViLTransformerSS

    with torch.device(device):
        return ViLTransformerSS(config(method, options, size))


def tokens(model, seq_len: int, batch: int = 1, device="meta", dtype=torch.float32):
    """A joint token sequence of ``seq_len`` tokens (all valid) as the transformer receives it."""
    d = model.transformer.embed_dim
    return (torch.randn(batch, seq_len, d, device=device, dtype=dtype) if device != "meta" else
            torch.zeros(batch, seq_len, d, device=device, dtype=dtype),
            torch.ones(batch, seq_len, dtype=torch.long, device=device))


def run_tokens(model, x, mask):
    """The part every method changes: the 12 blocks + final LN (with shallow prompts joining there)."""
    return model.transformer.forward_tokens(x, mask)


def forward(model, seq_len: int, text_len: int | None = None) -> None:
    """The blocks + final LN on ``seq_len`` tokens (one stream: where the text ends does not matter)."""
    with torch.no_grad():
        run_tokens(model, *tokens(model, seq_len))


def backbone_parameters(model) -> int:
    """Clean backbone count: text embeddings + modality embedding + ViT + pooler (no task head, no class token)."""
    parts = [model.text_embeddings, model.token_type_embeddings, model.pooler]
    n = sum(p.numel() for m in parts for p in m.parameters())
    return n + sum(p.numel() for name, p in model.transformer.named_parameters() if ".peft_" not in name
                   and not name.startswith("peft_"))


def head_parameters(model) -> int:
    return sum(p.numel() for p in model.vqa_classifier.parameters())


def truncate(model, layers: int):
    """Keep the first ``layers`` blocks (benchmarks per layer: every method's cost is per layer)."""
    model.transformer.blocks = model.transformer.blocks[:layers]
    return model


register_backbone(Backbone(
    name=NAME, build=build, tokens=tokens, run_tokens=run_tokens, forward=forward, truncate=truncate,
    backbone_parameters=backbone_parameters, head_parameters=head_parameters, default_seq_len=DEFAULT_SEQ_LEN,
    seq_len_note=SEQ_LEN_NOTE, notes=NOTES, tiny=TINY, extras=EXPERIMENT))
