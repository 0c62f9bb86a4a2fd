"""The LoRA baseline exactly as diffusers' ``examples/dreambooth/train_dreambooth_lora.py`` configures it, through peft:

    LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
               target_modules=["to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj"])
    unet.add_adapter(config)

(SD v1.x has no ``add_k_proj`` / ``add_v_proj``, so every attn1 and attn2 gets four LoRA pairs: 797,184 parameters at
rank 4.) Scaling alpha / r = 1; A ~ N(0, 1/r^2), B = 0. The trained layers are saved in diffusers' LoRA format
(``pytorch_lora_weights.safetensors``, keys ``unet.<module>.lora.down/up.weight``) and load back with
``StableDiffusionPipeline.load_lora_weights``. The text-encoder variant (``--train_text_encoder``) targets
``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj``."""
from __future__ import annotations

from torch import nn

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_config(rank: int = 4, targets=None, dropout: float = 0.0):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, lora_dropout=dropout, init_lora_weights="gaussian",
                      target_modules=list(targets or UNET_TARGETS))


def add_lora(unet: nn.Module, rank: int = 4, text_encoder: nn.Module | None = None, dropout: float = 0.0) -> list:
    """Freeze the components and add the example's LoRA adapters; returns the trainable parameters."""
    unet.requires_grad_(False)
    unet.add_adapter(lora_config(rank, UNET_TARGETS, dropout))
    params = [p for p in unet.parameters() if p.requires_grad]
    if text_encoder is not None:
        text_encoder.requires_grad_(False)
        text_encoder.add_adapter(lora_config(rank, TEXT_TARGETS, dropout))
        params += [p for p in text_encoder.parameters() if p.requires_grad]
    return params


def lora_layers(module: nn.Module) -> dict:
    """The trained LoRA tensors of one component in diffusers' key format (no component prefix)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    adapters = list(getattr(module, "peft_config", {}) or {})
    if len(adapters) != 1:
        raise ValueError(f"{type(module).__name__} has LoRA adapters {adapters}: expected exactly one to save")
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(module, adapter_name=adapters[0]))


def save_lora(path: str, unet: nn.Module, text_encoder: nn.Module | None = None) -> None:
    """``path/pytorch_lora_weights.safetensors`` in diffusers' LoRA format."""
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.save_lora_weights(
        save_directory=path, unet_lora_layers=lora_layers(unet),
        text_encoder_lora_layers=lora_layers(text_encoder) if text_encoder is not None else None,
        weight_name=WEIGHT_NAME, safe_serialization=True)
