"""ViLT's vision transformer (upstream vilt/modules/vision_transformer.py), built from config dimensions.

Same attribute names as upstream (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.i.{norm1,attn.qkv,
attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``) so official checkpoints load unchanged, and upstream's numerics
(docs/backbones.md, ViLT): per-image bilinear (align_corners=True) resizing of the position grid, patch validity from
the top-left pixel, valid patches first then padding patches, pre-LN blocks with eps 1e-6, exact GELU, -inf masking of
padded keys, no attention-probability dropout.

The blocks' linear layers are ``shared_apt.vl.speed.Linear`` (``nn.Linear`` whose frozen fp32 CPU products run
through oneDNN). Attention runs through ``F.scaled_dot_product_attention`` (``attention_impl = "sdpa"``, the default,
through ``shared_apt.vl.speed.scaled_dot_product_attention``, which runs upstream's math in bf16 on the CPU:
torch's fused kernels, fp32 outputs within 1e-5 of upstream's math) or upstream's explicit softmax(QK^T * scale) V
(``attention_impl = "explicit"``); the padding mask is the same boolean key mask on both paths.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared_apt.peft.sites import extra_kv_tokens, pad_key_mask

from shared_apt.vl.speed import ATTENTION_IMPLS, Linear, call_layer, scaled_dot_product_attention


def trunc_normal_(tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    """timm's trunc_normal_: N(0, std^2) truncated at the absolute bounds [-2, 2]."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0, b=2.0)


class DropPath(nn.Module):
    """Stochastic depth per sample (0 in every ViLT config; kept for fidelity)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention with a fused q|k|v projection.

    Accepts extra key/value tokens from ``shared_apt`` (``peft_extra_kv``): they are projected by the same frozen
    ``qkv`` once per call (not once per sample), their query rows are dropped, and they are valid keys for every
    query. Without them this is exactly upstream's attention.

    ``attention_impl``: "sdpa" (F.scaled_dot_product_attention) or "explicit" (upstream's math, which also returns
    the attention probabilities; the SDPA path returns None in their place)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.peft_extra_kv = None
        self.attention_impl = "sdpa"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        B, N, C = x.shape
        H = self.num_heads
        qkv = self.qkv(x)
        extra = extra_kv_tokens(self)
        if extra is not None:
            qkv = torch.cat([qkv, self.qkv(extra).unsqueeze(0).expand(B, -1, -1)], dim=1)
        L = qkv.shape[1]
        # upstream's reshape / permute / qkv[0..2] as one unbind: the same [B, H, L, D] views, and in backward one
        # stack straight into the qkv gradient's layout (indexing zero-filled three [3, B, H, L, D] buffers, and the
        # permuted gradient needed another copy before the projection's backward)
        q, k, v = (t.transpose(1, 2) for t in qkv.reshape(B, L, 3, H, C // H).unbind(2))
        q = q[:, :, :N]
        if mask is not None:
            mask = pad_key_mask(mask.bool(), L - N, True)
        if self.attention_impl == "sdpa":
            x = scaled_dot_product_attention(
                q, k, v, attn_mask=None if mask is None else mask[:, None, None, :],
                dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
            attn = None
        elif self.attention_impl == "explicit":
            attn = (q @ k.transpose(-2, -1)) * self.scale
            if mask is not None:
                attn = attn.masked_fill(~mask[:, None, None, :], float("-inf"))
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = attn @ v
        else:
            raise ValueError(f"attention_impl={self.attention_impl!r}: expected one of {ATTENTION_IMPLS}")
        x = x.transpose(1, 2).reshape(B, N, C)
        x = self.proj_drop(self.proj(x))
        return x, attn


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x, mask=None):
        _x, attn = self.attn(self.norm1(x), mask=mask)
        x = x + self.drop_path(_x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x)


class VisionTransformer(nn.Module):
    """ViT with ViLT's visual embedding. ``grid`` is the side of the position-embedding grid (12 for ViT-B/32-384).

    ``forward_tokens(x, mask)`` runs the blocks and the final norm on an already embedded joint sequence; extra tokens
    installed by ``shared_apt`` (shallow prompts) join the sequence there and are removed from its output."""

    def __init__(self, patch_size: int = 32, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, grid: int = 12, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, in_chans: int = 3):
        super().__init__()
        self.embed_dim, self.grid, self.patch_size = embed_dim, grid, patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i]) for i in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.peft_extra_tokens = None  # (provider(batch) -> [B, p, d], "append" | "prepend")
        self.reset_parameters()

    def reset_parameters(self):
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def install_extra_tokens(self, provider, placement: str = "append") -> None:
        if placement not in ("append", "prepend"):
            raise ValueError(f"extra-token placement {placement!r}: expected 'append' or 'prepend'")
        self.peft_extra_tokens = None if provider is None else (provider, placement)

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        placement = None
        if self.peft_extra_tokens is not None:
            provider, placement = self.peft_extra_tokens
            extra = provider(x.shape[0]).to(x.dtype)
            ones = mask.new_ones(mask.shape[0], extra.shape[1])
            if placement == "append":
                x, mask = torch.cat([x, extra], 1), torch.cat([mask, ones], 1)
            else:
                x, mask = torch.cat([extra, x], 1), torch.cat([ones, mask], 1)
        for blk in self.blocks:
            x, _ = call_layer(blk, x, mask)
        x = self.norm(x)
        if placement == "append":
            x = x[:, :n]
        elif placement == "prepend":
            x = x[:, x.shape[1] - n:]
        return x

    def visual_embed(self, _x: torch.Tensor, max_image_len: int = 200, mask_it: bool = False):
        """Upstream ``visual_embed`` (docs/backbones.md, ViLT); ``mask_it`` (MPP) is not supported, as upstream cannot run it."""
        if mask_it:
            raise NotImplementedError("masked patch prediction (mpp) cannot run upstream either (docs/backbones.md, ViLT)")
        x = self.patch_embed(_x)
        B, C, Hp, Wp = x.shape
        x_mask = (_x.sum(dim=1) != 0).float()[:, None, :, :]
        x_mask = F.interpolate(x_mask, size=(Hp, Wp)).long()
        x_h = x_mask[:, 0].sum(dim=1)[:, 0]
        x_w = x_mask[:, 0].sum(dim=2)[:, 0]

        G = self.grid
        # upstream's expression kept verbatim: one non-square grid per image, zero-padded to the batch's patch grid
        # (timm's resample_abs_pos_embed computes the same F.interpolate, only with reshapes around it)
        spatial_pos = self.pos_embed[:, 1:, :].transpose(1, 2).reshape(1, C, G, G)
        pos_embed = torch.cat(
            [
                F.pad(
                    F.interpolate(spatial_pos, size=(int(h), int(w)), mode="bilinear", align_corners=True),
                    (0, Wp - int(w), 0, Hp - int(h)),
                )
                for h, w in zip(x_h.tolist(), x_w.tolist())
            ],
            dim=0,
        )
        pos_embed = pos_embed.flatten(2).transpose(1, 2)
        x = x.flatten(2).transpose(1, 2)
        patch_index = (
            torch.stack(torch.meshgrid(torch.arange(Hp), torch.arange(Wp), indexing="ij"), dim=-1)[None, :, :, :]
            .expand(B, -1, -1, -1)
            .flatten(1, 2)
            .to(x.device)
        )
        x_mask = x_mask.flatten(1)

        eff = x_h * x_w
        if not isinstance(max_image_len, int) or max_image_len < 0:
            max_image_len = int(eff.max())
        else:
            max_image_len = min(int(eff.max()), max_image_len)

        valid_idx = x_mask.nonzero(as_tuple=False)
        non_valid_idx = (1 - x_mask).nonzero(as_tuple=False)
        unique_rows = valid_idx[:, 0].unique()
        if len(unique_rows) != B:
            raise ValueError("an image of the batch has no valid patch (all-zero image after normalisation)")
        valid_row_idx = [valid_idx[valid_idx[:, 0] == u] for u in unique_rows]
        non_valid_row_idx = [non_valid_idx[non_valid_idx[:, 0] == u] for u in unique_rows]
        select = []
        for i in range(B):
            v, nv = valid_row_idx[i].size(0), non_valid_row_idx[i].size(0)
            pad = max_image_len - v
            if pad <= 0:
                choice = torch.multinomial(torch.ones(v).float(), max_image_len)
                select.append(valid_row_idx[i][choice.to(valid_row_idx[i].device)])
            else:
                choice = torch.multinomial(torch.ones(nv).float(), pad, replacement=True)
                select.append(torch.cat([valid_row_idx[i], non_valid_row_idx[i][choice.to(x.device)]], dim=0))
        select = torch.cat(select, dim=0)
        rows, cols = select[:, 0], select[:, 1]
        x = x[rows, cols].view(B, -1, C)
        x_mask = x_mask[rows, cols].view(B, -1)
        patch_index = patch_index[rows, cols].view(B, -1, 2)
        pos_embed = pos_embed[rows, cols].view(B, -1, C)

        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        pos_embed = torch.cat((self.pos_embed[:, 0, :][:, None, :].expand(B, -1, -1), pos_embed), dim=1)
        x = self.pos_drop(x + pos_embed)
        x_mask = torch.cat([torch.ones(B, 1, dtype=x_mask.dtype, device=x_mask.device), x_mask], dim=1)
        return x, x_mask, (patch_index, (Hp, Wp)), None
