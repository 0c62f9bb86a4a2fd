"""METER's co-attention fusion layer (upstream meter/modules/bert_model.py ``BertCrossLayer``, docs/backbones.md, METER).

Upstream names: ``attention.self.{query,key,value}``, ``attention.output.{dense,LayerNorm}``, ``crossattention.*``
(same layout), ``intermediate.dense``, ``output.{dense,LayerNorm}``. Post-LN, exact GELU, LayerNorm eps 1e-12 (the
transformers-4.6 BertConfig default METER builds them with), dropout on attention probabilities and on the three
output projections, additive masks (0 = attend, -10000 = masked) of shape [B, 1, 1, keys].

Tuning-method hooks (shared_apt.peft.sites): ``BertSelfAttention.peft_extra_kv`` appends extra key/value tokens (deep
prompts) to the key/value input of the attention: the stream's own tokens in self-attention, the other stream's tokens
in cross-attention; their additive mask is 0 (always attended).

The linear layers are ``shared_apt.vl.speed.Linear`` (``nn.Linear`` whose frozen fp32 CPU products run through
oneDNN). ``BertSelfAttention.attention_impl``: "sdpa" (default; ``F.scaled_dot_product_attention`` with the same
additive mask through ``shared_apt.vl.speed.scaled_dot_product_attention``, which runs upstream's math in bf16 on the
CPU; fp32 outputs within 1e-5 of upstream's math) or "explicit" (upstream's matmul / softmax / matmul)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from shared_apt.peft.sites import extra_kv_tokens, pad_key_mask

from shared_apt.vl.speed import ATTENTION_IMPLS, Linear, scaled_dot_product_attention


class BertSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.query = Linear(hidden_size, hidden_size)
        self.key = Linear(hidden_size, hidden_size)
        self.value = Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.peft_extra_kv = None
        self.attention_impl = "sdpa"

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, kv_states: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, n, d = hidden_states.shape
        q = self.query(hidden_states)
        k = self.key(kv_states)
        v = self.value(kv_states)
        extra = extra_kv_tokens(self)
        if extra is not None:
            extra = extra.to(kv_states.dtype)
            k = torch.cat([k, self.key(extra).unsqueeze(0).expand(B, -1, -1)], dim=1)
            v = torch.cat([v, self.value(extra).unsqueeze(0).expand(B, -1, -1)], dim=1)
            mask = pad_key_mask(mask, extra.shape[0], 0.0)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.attention_impl == "sdpa":
            ctx = scaled_dot_product_attention(
                q, k, v, attn_mask=None if mask is None else mask.to(q.dtype),
                dropout_p=self.dropout.p if self.training else 0.0, scale=1.0 / math.sqrt(self.head_dim))
        elif self.attention_impl == "explicit":
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores + mask.to(scores.dtype)
            probs = self.dropout(scores.softmax(dim=-1))
            ctx = torch.matmul(probs, v)
        else:
            raise ValueError(f"attention_impl={self.attention_impl!r}: expected one of {ATTENTION_IMPLS}")
        return ctx.transpose(1, 2).reshape(B, n, d)


class BertSelfOutput(nn.Module):
    """LN(input + Dropout(dense(context)))."""

    def __init__(self, hidden_size: int, dropout: float, eps: float):
        super().__init__()
        self.dense = Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertAttention(nn.Module):
    """Self-attention (no ``encoder_hidden_states``) or cross-attention (queries from ``hidden_states``, keys/values
    from ``encoder_hidden_states`` with ``encoder_attention_mask``). Its first input is always the query stream X."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, eps: float):
        super().__init__()
        self.self = BertSelfAttention(hidden_size, num_heads, dropout)
        self.output = BertSelfOutput(hidden_size, dropout, eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                encoder_hidden_states: Optional[torch.Tensor] = None,
                encoder_attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if encoder_hidden_states is None:
            ctx = self.self(hidden_states, hidden_states, attention_mask)
        else:
            ctx = self.self(hidden_states, encoder_hidden_states, encoder_attention_mask)
        return self.output(ctx, hidden_states)


class BertIntermediate(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.dense = Linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, intermediate_size: int, hidden_size: int, dropout: float, eps: float):
        super().__init__()
        self.dense = Linear(intermediate_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertCrossLayer(nn.Module):
    """One fusion layer of one stream: self-attention over the own stream, cross-attention from it to the other
    stream's layer input, feed-forward; all post-LN."""

    def __init__(self, hidden_size: int = 768, num_heads: int = 12, intermediate_size: int = 3072,
                 dropout: float = 0.1, eps: float = 1e-12):
        super().__init__()
        self.attention = BertAttention(hidden_size, num_heads, dropout, eps)
        self.crossattention = BertAttention(hidden_size, num_heads, dropout, eps)
        self.intermediate = BertIntermediate(hidden_size, intermediate_size)
        self.output = BertOutput(intermediate_size, hidden_size, dropout, eps)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None,
                encoder_attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        a = self.attention(hidden_states, attention_mask)
        b = self.crossattention(a, None, encoder_hidden_states, encoder_attention_mask)
        return self.output(self.intermediate(b), b)
