"""One place for "which method, on which components": attach it for training, save only the tuned part, load it back
into a pipeline for sampling.

* ``apt`` and ``project_lora`` (the project's own ``shared_apt`` LoRA on slots q, k, v, o, same count as the baseline):
  attached through the sites that :class:`sd_apt.backbone.SDBackbone` declares; saved with ``shared_apt.save_tuned`` (tuned tensors +
  method config + backbone signature) plus ``sd_method.json`` (the SD options: attention sites, text encoder).
* ``lora``: the LoRA baseline of diffusers' DreamBooth example (``sd_apt.lora_baseline``), saved in diffusers'
  LoRA format, loadable with ``pipeline.load_lora_weights``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Optional

from torch import nn

import shared_apt

from .backbone import ATTENTION_CHOICES, SDBackbone
from .lora_baseline import add_lora, save_lora

METHOD_FILE = "sd_method.json"
PEFT_LORA = "lora"           # the baseline: peft LoraConfig exactly as diffusers' example
PROJECT_LORA = "project_lora"  # shared_apt's lora on the same four projections
METHODS = ("apt", PEFT_LORA, PROJECT_LORA)
SHARED_NAME = {"apt": "apt", PROJECT_LORA: "lora"}
# APT's learning rate = this x the baseline recipe's (the APT paper: "follow its default settings and increase the
# learning rate by five times"); script/sd_dreambooth.sh and the demo apply it (LoRA 1e-4 -> APT 5e-4)
APT_LR_FACTOR = 5


@dataclass
class MethodConfig:
    """The tuning method of a DreamBooth run: only this differs between the compared runs.

    apt: ``num_prompts`` (p) and ``rank`` (r) default to 24 and 4 (798,752 parameters on SD v1.5 with both attention
    types, budget-matched to LoRA rank 4's 797,184), ``gate`` = zero-start gate. lora / project_lora: ``rank``."""

    method: str = "apt"
    num_prompts: int = 24
    rank: int = 4
    attention: str = "both"          # attn1 | attn2 | both (apt, project_lora; the lora baseline covers both)
    gate: bool = False
    text_encoder: bool = False        # also tune the text encoder (its attention sites; lora: its peft LoRA)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: expected one of {METHODS}")
        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"attention={self.attention!r}: expected one of {ATTENTION_CHOICES}")
        if self.gate and self.method != "apt":
            raise ValueError(f"gate=True is an APT option; method {self.method!r} has no gate")
        if self.method == PEFT_LORA and self.attention != "both":
            raise ValueError("the lora baseline targets to_q/to_k/to_v/to_out.0 of every attention module: attention must be "
                             f"'both' (got {self.attention!r})")

    def shared_options(self) -> dict:
        if self.method == "apt":
            return dict(num_prompts=self.num_prompts, rank=self.rank, apt_gate=self.gate)
        if self.method == PROJECT_LORA:
            return dict(rank=self.rank, lora_targets=("q", "k", "v", "o"), lora_dropout=0.0)
        raise ValueError(f"{self.method} is not a shared_apt method")


def attach(method: MethodConfig, unet: nn.Module, text_encoder: nn.Module) -> tuple:
    """Freeze the components and attach the method; returns (backbone or None, list of trainable parameters)."""
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    if method.method == PEFT_LORA:
        return None, add_lora(unet, method.rank, text_encoder if method.text_encoder else None)
    backbone = SDBackbone(unet, text_encoder, method.attention, method.text_encoder)
    shared_apt.apply(backbone, SHARED_NAME[method.method], **method.shared_options())
    return backbone, list(shared_apt.trainable_parameters(backbone).values())


def save(path: str, method: MethodConfig, unet: nn.Module, text_encoder: nn.Module,
         backbone: Optional[SDBackbone]) -> None:
    os.makedirs(path, exist_ok=True)
    if method.method == PEFT_LORA:
        save_lora(path, unet, text_encoder if method.text_encoder else None)
    else:
        shared_apt.save_tuned(backbone, path)
    with open(os.path.join(path, METHOD_FILE), "w") as f:
        json.dump(asdict(method), f, indent=2)


def read_method(path: str) -> MethodConfig:
    file = os.path.join(path, METHOD_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file!r} not found: not a folder written by sd_apt (DreamBooth weights)")
    with open(file) as f:
        return MethodConfig(**json.load(f))


def load_into_pipeline(pipe, path: str) -> MethodConfig:
    """Load tuned weights written by :func:`save` into a pipeline (its UNet / text encoder are modified in place)."""
    method = read_method(path)
    if method.method == PEFT_LORA:
        pipe.load_lora_weights(path)
    else:
        backbone = SDBackbone(pipe.unet, pipe.text_encoder, method.attention, method.text_encoder)
        shared_apt.load_tuned(backbone, path)
        pipe.__dict__["_sd_apt_backbone"] = backbone  # keeps the tuned modules' owner reachable
    return method
