"""Stable Diffusion v1.5's UNet for ``python -m shared_apt.profile --backbone sd15-unet --method apt|lora``.

Built on the meta device (shapes only). One forward = one denoising step at batch 1: latent 4 x (px/8) x (px/8),
77 text states of width 768. apt: p, r = 24, 4 on attn1 + attn2 of the 16 transformer blocks by default
(``--num-prompts`` / ``--rank``); lora: rank 4 on to_q / to_k / to_v / to_out.0 (the count of diffusers' DreamBooth
LoRA example), merged for the FLOPs (zero additional cost)."""
from __future__ import annotations

import torch

import shared_apt
from shared_apt.peft.registry import Backbone, register_backbone

from .backbone import SDBackbone, sd15_unet

NAME = "sd15-unet"
METHODS = ("apt", "lora")
PRINT_EXACT = True  # the profile also prints the integer counts
DEFAULT_SEQ_LEN = 512  # image side in pixels
SEQ_LEN_NOTE = "one UNet forward (one denoising step) at {n} px: latent 4 x {n}/8 x {n}/8, 77 text tokens"
NOTES = {
    "apt": "SD v1.5 UNet, attn1 + attn2 of the 16 transformer blocks; p*d + 2*r*d + 1 per module",
    "lora": "rank 4 on to_q/to_k/to_v/to_out.0 as diffusers' DreamBooth LoRA example; merged, so no extra FLOPs",
}
DEFAULTS = {"apt": {"num_prompts": 24, "rank": 4}, "lora": {"rank": 4}}


def build(method: str, size: str = "base", **options):
    if size != "base":
        raise ValueError(f"sd15-unet has one size ('base'), got {size!r}")
    model = SDBackbone(sd15_unet("meta"))
    if method == "full":
        shared_apt.apply(model, "full")
        return model
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not profiled on sd15-unet; choose from {METHODS}")
    opts = {**DEFAULTS[method], **{k: v for k, v in options.items() if v is not None}}
    if method == "lora":
        opts.update(lora_targets=("q", "k", "v", "o"), lora_dropout=0.0)
    shared_apt.apply(model, method, **opts)
    return model


def forward(model, seq_len: int):
    if seq_len % 8:
        raise ValueError(f"image side {seq_len} px is not a multiple of 8 (the VAE's downsampling)")
    side = seq_len // 8
    cfg = model.unet.config
    with torch.no_grad():
        x = torch.zeros(1, cfg.in_channels, side, side, device="meta")
        states = torch.zeros(1, 77, cfg.cross_attention_dim, device="meta")
        return model(x, torch.tensor([500], device="meta"), states)


def backbone_parameters(model) -> int:
    return sum(p.numel() for n, p in model.unet.named_parameters() if ".peft_" not in n)


def head_parameters(model) -> int:
    return 0


register_backbone(Backbone(
    name=NAME, build=build, forward=forward, backbone_parameters=backbone_parameters, head_parameters=head_parameters,
    default_seq_len=DEFAULT_SEQ_LEN, seq_len_note=SEQ_LEN_NOTE, notes=NOTES, methods=METHODS,
    print_exact=PRINT_EXACT))
