"""The APT authors' model (DoubtedSteam/APT), re-typed from its description for side-by-side measurements: the frozen
layers with their explicit attention (matmul, softmax, matmul) and one APT module per attention module, as their
``vision_transformer_apt.py`` (ViLT) and ``bert_model_apt.py`` (METER) compute it:

    APT(X, O) = e^s (O + alpha (A P')),  A = ReLU(X (P' + P' W1 W2)^T),  alpha = rowmax(A) (detached)

with P' = ``mm_tokens`` [p, d], ``mm`` = Linear(d, r) then Linear(r, d), no biases (their weights are W1^T, W2^T),
s = ``scale``. ViLT: X = LN1(h), O = proj(context), before the projection dropout. METER: X = the attention's
query-side input, O = dense(context), before dropout and the post-attention LayerNorm.

Only the layers every tuning method changes are built (ViLT: the 12 blocks + final LN; METER: the co-attention layers
of both streams), under the authors' key names, so :func:`load_from_project` fills them from
``shared_apt.vl.official.to_official`` of a project model: the same weights through the official-checkpoint converter.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class APT(nn.Module):
    def __init__(self, dim: int, num_prompts: int, rank: int):
        super().__init__()
        self.mm_tokens = nn.Parameter(torch.zeros(num_prompts, dim))
        self.mm = nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim, bias=False))
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x, o):
        keys = self.mm_tokens + self.mm(self.mm_tokens)
        a = torch.relu(x @ keys.t())
        alpha = a.max(dim=-1, keepdim=True)[0].detach()
        return torch.exp(self.scale) * (o + alpha * (a @ self.mm_tokens))


# ---- ViLT: timm pre-LN blocks (eps 1e-6), fused qkv, -inf masking of padded keys --------------------------------


class ViLTAttention(nn.Module):
    def __init__(self, dim, heads, p, r, drop):
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        self.APT = APT(dim, p, r)

    def forward(self, x, mask):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.masked_fill(~mask.bool()[:, None, None, :], float("-inf")).softmax(dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
        return self.proj_drop(self.APT(x, out))


class ViLTMlp(nn.Module):
    def __init__(self, dim, hidden, drop):
        super().__init__()
        self.fc1, self.act, self.fc2, self.drop = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ViLTBlock(nn.Module):
    def __init__(self, dim, heads, hidden, p, r, drop):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViLTAttention(dim, heads, p, r, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ViLTMlp(dim, hidden, drop)

    def forward(self, x, mask):
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class ViLTTransformer(nn.Module):
    def __init__(self, dim, depth, heads, hidden, p, r, drop):
        super().__init__()
        self.blocks = nn.ModuleList([ViLTBlock(dim, heads, hidden, p, r, drop) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)


class ViLTLayers(nn.Module):
    """``transformer.blocks.*`` and ``transformer.norm`` of the authors' ViLT APT model."""

    prefixes = ("transformer.blocks.", "transformer.norm.")

    def __init__(self, dim, depth, heads, hidden, p, r, drop=0.0):
        super().__init__()
        self.transformer = ViLTTransformer(dim, depth, heads, hidden, p, r, drop)

    def run_tokens(self, x, mask):
        for blk in self.transformer.blocks:
            x = blk(x, mask)
        return self.transformer.norm(x)


# ---- METER: post-LN BERT co-attention layers (eps 1e-12), additive -10000 masks ----------------------------------


class BertSelf(nn.Module):
    def __init__(self, dim, heads, drop):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dropout = nn.Dropout(drop)

    def forward(self, x, kv, mask):
        B, n, d = x.shape
        heads = lambda t: t.view(B, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        scores = heads(self.query(x)) @ heads(self.key(kv)).transpose(-1, -2) / math.sqrt(self.head_dim)
        probs = self.dropout((scores + mask).softmax(dim=-1))
        return (probs @ heads(self.value(kv))).transpose(1, 2).reshape(B, n, d)


class BertSelfOutput(nn.Module):
    def __init__(self, dim, p, r, drop):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(drop)
        self.APT = APT(dim, p, r)

    def forward(self, ctx, x):
        return self.LayerNorm(self.dropout(self.APT(x, self.dense(ctx))) + x)


class BertAttention(nn.Module):
    def __init__(self, dim, heads, p, r, drop):
        super().__init__()
        self.self = BertSelf(dim, heads, drop)
        self.output = BertSelfOutput(dim, p, r, drop)

    def forward(self, x, kv, mask):
        return self.output(self.self(x, kv, mask), x)


class BertLinear(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class BertCrossLayer(nn.Module):
    def __init__(self, dim, heads, hidden, p, r, drop):
        super().__init__()
        self.attention = BertAttention(dim, heads, p, r, drop)
        self.crossattention = BertAttention(dim, heads, p, r, drop)
        self.intermediate = BertLinear(dim, hidden)
        self.output = BertLinear(hidden, dim)
        self.output.LayerNorm = nn.LayerNorm(dim, eps=1e-12)
        self.output.dropout = nn.Dropout(drop)

    def forward(self, x, y, x_mask, y_mask):
        a = self.attention(x, x, x_mask)
        b = self.crossattention(a, y, y_mask)
        o = self.output.dense(F.gelu(self.intermediate.dense(b)))
        return self.output.LayerNorm(self.output.dropout(o) + b)


class METERLayers(nn.Module):
    """``cross_modal_{text,image}_layers.*`` of the authors' METER APT model."""

    prefixes = ("cross_modal_text_layers.", "cross_modal_image_layers.")

    def __init__(self, dim, depth, heads, hidden, p, r, text_len, drop=0.0):
        super().__init__()
        self.text_len = text_len
        self.cross_modal_text_layers = nn.ModuleList([BertCrossLayer(dim, heads, hidden, p, r, drop)
                                                      for _ in range(depth)])
        self.cross_modal_image_layers = nn.ModuleList([BertCrossLayer(dim, heads, hidden, p, r, drop)
                                                       for _ in range(depth)])

    def run_tokens(self, tokens, mask):
        """The same split as ``meter.profiling.run_tokens``: the first ``text_len`` tokens are the text stream."""
        n = self.text_len
        x, y = tokens[:, :n], tokens[:, n:]
        ext = lambda m: (1.0 - m[:, None, None, :].to(tokens.dtype)) * -10000.0  # noqa: E731
        xm, ym = ext(mask[:, :n]), ext(mask[:, n:])
        for tl, il in zip(self.cross_modal_text_layers, self.cross_modal_image_layers):
            x, y = tl(x, y, xm, ym), il(y, x, ym, xm)
        return torch.cat([x, y], dim=1)


def build_like(model: nn.Module) -> nn.Module:
    """The authors' layers with the geometry and APT sizes of the project ``model`` (ViLT or METER, APT attached)."""
    from ..peft import api

    config = api.peft_config(model)
    if config is None or config.method != "apt" or config.apt_variant != "lowrank":
        raise ValueError("the authors' model is built for a project model with APT (lowrank) attached; got "
                         f"{None if config is None else config.method}")
    if hasattr(model, "transformer"):
        t = model.transformer
        b = t.blocks[0]
        p, d = b.attn.peft_apt.prompts.shape
        return ViLTLayers(d, len(t.blocks), b.attn.num_heads, b.mlp.fc1.out_features, p, b.attn.peft_apt.rank,
                          b.attn.proj_drop.p)
    if hasattr(model, "cross_modal_text_layers"):
        from meter.profiling import TEXT_LEN

        layer = model.cross_modal_text_layers[0]
        apt = layer.attention.peft_apt
        p, d = apt.prompts.shape
        return METERLayers(d, len(model.cross_modal_text_layers), layer.attention.self.num_heads,
                           layer.intermediate.dense.out_features, p, apt.rank, TEXT_LEN,
                           layer.output.dropout.p)
    raise TypeError(f"no authors' model for {type(model).__name__} (ViLT or METER)")


def load_from_project(authors: nn.Module, model: nn.Module) -> None:
    """Fill ``authors`` with the project ``model``'s weights under the authors' key names (the official-checkpoint
    converter, shared_apt.vl.official.to_official); every tensor of ``authors`` must be found."""
    from ..vl.official import to_official

    sd = {k: v for k, v in to_official(model).items() if k.startswith(authors.prefixes)}
    missing, unexpected = authors.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"the authors' layers do not fit the exported state dict: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
