"""Where the tuning methods attach on Stable Diffusion: the attention modules of the UNet's transformer blocks.

SD v1.x has 16 ``BasicTransformerBlock`` s; each holds ``attn1`` (self-attention over the H*W latent tokens) and
``attn2`` (cross-attention: queries from the latent tokens, keys/values from the 77 text states). Inside a block
``h = attn1(norm1(h)) + h; h = attn2(norm2(h), text) + h``. diffusers' ``Attention`` receives the normed hidden
states as its first positional argument and applies ``to_out[0]`` (the output Linear, bias included) and
``to_out[1]`` (dropout) before returning; SD adds no residual inside the module and its rescale factor is 1. So a
site is: ``query_input`` = the ``Attention`` module, ``out_proj`` = ``to_out[0]``, projections ``to_q`` / ``to_k`` /
``to_v`` / ``to_out[0]`` (slots q, k, v, o). The optional text-encoder sites are the 12 ``CLIPAttention`` modules
(``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj``; their input is the pre-LN ``layer_norm1`` output).
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from shared_apt.peft.sites import AttentionSite, BackboneSpec, LinearSlot

ATTENTION_CHOICES = ("attn1", "attn2", "both")

# diffusers' config of runwayml/stable-diffusion-v1-5 (unet/config.json), the keys that shape the network
SD15_UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu",
)


def _no_extra_kv(name: str):
    def install(provider):
        if provider is not None:
            raise ValueError(f"{name}: deep prompts (extra keys/values) are not supported on Stable Diffusion's "
                             "attention modules; use apt or lora")
    return install


def transformer_attention_modules(unet: nn.Module) -> list:
    """(name, Attention module, kind) of every attn1 / attn2 in the UNet's transformer blocks, in module order."""
    from diffusers.models.attention import BasicTransformerBlock

    out = []
    for name, block in unet.named_modules():
        if isinstance(block, BasicTransformerBlock):
            out.append((f"{name}.attn1", block.attn1, "self"))
            if block.attn2 is not None:
                out.append((f"{name}.attn2", block.attn2, "cross"))
    return out


def unet_sites(unet: nn.Module, attention: str = "both", prefix: str = "unet.") -> list:
    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"attention={attention!r}: expected one of {ATTENTION_CHOICES}")
    keep = {"attn1": ("self",), "attn2": ("cross",), "both": ("self", "cross")}[attention]
    sites = []
    for name, attn, kind in transformer_attention_modules(unet):
        if kind not in keep:
            continue
        out = attn.to_out[0]
        sites.append(AttentionSite(
            name=prefix + name, dim=attn.to_q.in_features, host=attn, query_input=attn, out_proj=out,
            q=LinearSlot(attn.to_q), k=LinearSlot(attn.to_k), v=LinearSlot(attn.to_v), o=LinearSlot(out),
            install_extra_kv=_no_extra_kv(prefix + name), kind=kind,
        ))
    if not sites:
        raise ValueError("the UNet has no transformer-block attention modules (is it a UNet2DConditionModel?)")
    return sites


def text_encoder_sites(text_encoder: nn.Module, prefix: str = "text_encoder.") -> list:
    from transformers.models.clip.modeling_clip import CLIPAttention

    sites = []
    for name, attn in text_encoder.named_modules():
        if not isinstance(attn, CLIPAttention):
            continue
        sites.append(AttentionSite(
            name=prefix + name, dim=attn.q_proj.in_features, host=attn,
            query_input=attn, out_proj=attn.out_proj, q=LinearSlot(attn.q_proj), k=LinearSlot(attn.k_proj),
            v=LinearSlot(attn.v_proj), o=LinearSlot(attn.out_proj),
            install_extra_kv=_no_extra_kv(prefix + name), kind="self",
        ))
    if not sites:
        raise ValueError("the text encoder has no CLIPAttention modules (is it a transformers CLIPTextModel?)")
    return sites


class SDBackbone(nn.Module):
    """The tunable part of a Stable Diffusion pipeline: the UNet and, optionally, the text encoder (registered as
    children ``unet`` / ``text_encoder``, so parameter names carry diffusers' component prefixes).

    ``attention``: "attn1", "attn2" or "both" (default); ``text_encoder_sites``: also declare the text encoder's
    self-attention modules (off by default, as in diffusers' DreamBooth examples)."""

    def __init__(self, unet: nn.Module, text_encoder: Optional[nn.Module] = None, attention: str = "both",
                 tune_text_encoder: bool = False):
        super().__init__()
        if attention not in ATTENTION_CHOICES:
            raise ValueError(f"attention={attention!r}: expected one of {ATTENTION_CHOICES}")
        if tune_text_encoder and text_encoder is None:
            raise ValueError("tune_text_encoder=True needs the text encoder")
        self.unet = unet
        self.text_encoder = text_encoder
        self.attention = attention
        self.tune_text_encoder = tune_text_encoder

    def peft_spec(self) -> BackboneSpec:
        sites = unet_sites(self.unet, self.attention)
        if self.tune_text_encoder:
            sites += text_encoder_sites(self.text_encoder)
        cfg = self.unet.config
        signature = {
            "backbone": "sd-unet", "block_out_channels": list(cfg.block_out_channels),
            "cross_attention_dim": int(cfg.cross_attention_dim), "attention": self.attention,
            "site_widths": [s.dim for s in sites], "text_encoder_sites": self.tune_text_encoder,
        }
        return BackboneSpec(attention_sites=sites, sequence_site=None, common_trainable=[], signature=signature)

    def forward(self, *args, **kwargs):
        return self.unet(*args, **kwargs)


def sd15_unet(device: str = "meta"):
    """An SD v1.5-shaped UNet2DConditionModel (random weights; on the meta device by default: shapes only)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel(**SD15_UNET_CONFIG)
