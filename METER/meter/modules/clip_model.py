"""METER's reduced CLIP (upstream meter/modules/clip_model.py, docs/backbones.md, METER): the CLIP image tower without its last
block and without ``visual.proj``, plus the two unused CLIP text-tower leftovers every METER checkpoint holds.

Attribute names are upstream's, so ``vit_model.*`` keys of METER checkpoints load unchanged:
``visual.{conv1, class_embedding, positional_embedding, ln_pre, transformer.resblocks.i.{ln_1, attn.in_proj_weight,
attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_post}``, ``positional_embedding`` [77, 512] and
``ln_final`` (never used by the forward pass).

Numerics: conv without bias, row-major patch order, class token first, pre-LN blocks with QuickGELU, LayerNorm
eps 1e-5 computed in float32, ``ln_post`` on every token, no dropout.
"""
from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

log = logging.getLogger(__name__)

# Geometry of the CLIP towers METER can use, as ``visual_encoder_config`` (``layers`` = blocks actually built:
# METER builds CLIP's ``layers - 1``).
CLIP_VISUAL = {
    "ViT-B/16": {"width": 768, "layers": 11, "heads": 12, "patch_size": 16},
    "ViT-B/32": {"width": 768, "layers": 11, "heads": 12, "patch_size": 32},
    "ViT-L/14": {"width": 1024, "layers": 23, "heads": 16, "patch_size": 14},
}
# The unused text-tower leftovers (context length x text width of CLIP ViT-B): shapes of the checkpoint keys.
TEXT_LEFTOVER = {"text_context_length": 77, "text_width": 512}


class LayerNorm(nn.LayerNorm):
    """CLIP's LayerNorm: computed in float32, cast back to the input dtype (only matters under fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig = x.dtype
        return super().forward(x.type(torch.float32)).type(orig)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model, eps=1e-5)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [L, B, D] (sequence first, as torch's MultiheadAttention and upstream)."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisualTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int):
        super().__init__()
        if input_resolution % patch_size:
            raise ValueError(f"image_size {input_resolution} is not a multiple of the CLIP patch size {patch_size}")
        self.input_resolution, self.patch_size, self.width = input_resolution, patch_size, width
        self.grid = input_resolution // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid ** 2 + 1, width))
        self.ln_pre = LayerNorm(width, eps=1e-5)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] CLIP-normalised images -> [B, G*G + 1, width] (ln_post on every token, no projection)."""
        if x.shape[-1] != self.input_resolution or x.shape[-2] != self.input_resolution:
            raise ValueError(f"image of size {tuple(x.shape[-2:])} given to a CLIP tower built for "
                             f"{self.input_resolution}x{self.input_resolution} (config image_size)")
        x = self.conv1(x.to(self.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, G*G, width], row-major patches
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype,
                                                              device=x.device)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x)


class CLIP(nn.Module):
    """What METER keeps of CLIP: ``visual`` and two unused text-tower tensors."""

    def __init__(self, image_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 text_context_length: int = 77, text_width: int = 512):
        super().__init__()
        self.visual = VisualTransformer(image_resolution, patch_size, width, layers, heads)
        self.positional_embedding = nn.Parameter(torch.empty(text_context_length, text_width))
        self.ln_final = LayerNorm(text_width, eps=1e-5)
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI CLIP's initialisation (used only when no weights are loaded)."""
        nn.init.normal_(self.positional_embedding, std=0.01)
        t = self.visual.transformer
        proj_std = (t.width ** -0.5) * ((2 * max(t.layers, 1)) ** -0.5)
        attn_std = t.width ** -0.5
        fc_std = (2 * t.width) ** -0.5
        for block in t.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


def resize_positions(pos: torch.Tensor, new_grid: int) -> torch.Tensor:
    """``adapt_position_encoding`` of upstream for one table [1 + g0*g0, D]: rows 1.. as a g0 x g0 grid (row-major),
    bicubic (align_corners=False, no antialias) to new_grid x new_grid; row 0 (class) unchanged; stays 2-D.
    Identity when the grid does not change."""
    rows, dim = pos.shape
    g0 = int((rows - 1) ** 0.5)
    if g0 * g0 != rows - 1:
        raise ValueError(f"visual.positional_embedding has {rows} rows: not 1 + a square grid")
    if g0 == new_grid:
        return pos
    out = resample_abs_pos_embed(pos[None], [new_grid, new_grid], [g0, g0], num_prefix_tokens=1,
                                 interpolation="bicubic", antialias=False, align_corners=False)
    return out[0]


def adapt_position_encoding(state_dict: dict, image_size: int, patch_size: int, source: str = "<state_dict>") -> dict:
    """Resize the single key ending in ``visual.positional_embedding`` to the grid image_size // patch_size, as
    upstream does to every checkpoint loaded through ``load_path`` (docs/backbones.md, METER). Returns a new dict."""
    keys = [k for k in state_dict if k.endswith("visual.positional_embedding")]
    if len(keys) > 1:
        raise ValueError(f"{source}: several keys end in 'visual.positional_embedding': {keys}")
    if not keys:
        return dict(state_dict)
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    out = dict(state_dict)
    old = state_dict[keys[0]]
    out[keys[0]] = resize_positions(old, image_size // patch_size)
    if out[keys[0]] is not old:
        log.info("%s: %s resized from %d to %d rows (bicubic)", source, keys[0], old.shape[0], out[keys[0]].shape[0])
    return out


def clip_weights_for_meter(state_dict: dict, layers: int, image_size: int, patch_size: int,
                           source: str = "<clip weights>") -> dict:
    """OpenAI CLIP weights (keys ``visual.*``, ``positional_embedding``, ``ln_final.*``, text tower...) reduced to what
    METER keeps: the visual tower without ``visual.proj`` and without blocks >= ``layers``, plus the two leftovers;
    positions resized to the run's image size (upstream ``build_model(..., resolution_after)``)."""
    keep = {}
    for k, v in state_dict.items():
        if k.startswith("visual."):
            if k == "visual.proj":
                continue
            if k.startswith("visual.transformer.resblocks."):
                if int(k.split(".")[3]) >= layers:
                    continue
            keep[k] = v
        elif k == "positional_embedding" or k.startswith("ln_final."):
            keep[k] = v
    if "visual.conv1.weight" not in keep:
        raise ValueError(f"{source}: no 'visual.conv1.weight' key: not OpenAI CLIP image-tower weights")
    return adapt_position_encoding(keep, image_size, patch_size, source)


def read_clip_file(path: str) -> dict:
    """State dict of an OpenAI CLIP file: the TorchScript archive CLIP distributes, or a plain state-dict file."""
    from shared_apt.vl.checkpoint import CheckpointError, load_checkpoint, state_dict_of

    try:
        return {k: v.float() for k, v in torch.jit.load(path, map_location="cpu").state_dict().items()}
    except (RuntimeError, ValueError):
        pass
    try:
        return state_dict_of(load_checkpoint(path), path)
    except CheckpointError as e:
        raise CheckpointError(f"{path!r} is neither a CLIP TorchScript archive nor a state-dict file: {e}") from e
