"""Attention sites for Hugging Face transformers BERT / RoBERTa layers (self- and cross-attention), so any backbone
built from those layers can declare its attention modules to shared_apt without wrapping them.

Everything but extra keys/values works through forward hooks on the layers' own modules. Extra keys/values (deep
prompts) go through an attention function registered with transformers' ``AttentionInterface``: it appends the
module's projections of ``module.peft_extra_kv()`` to the keys and values, then runs the eager attention."""
from __future__ import annotations

import torch
from torch import nn

from .sites import AttentionSite, LinearSlot, pad_key_mask

ATTN_NAME = "shared_apt_eager"
_registered = False


def _attention_with_extra_kv(module, query, key, value, attention_mask, **kwargs):
    from transformers.models.bert.modeling_bert import eager_attention_forward

    provider = getattr(module, "peft_extra_kv", None)
    if provider is not None:
        tokens = provider()
        B, heads, _, head_dim = query.shape
        k = module.key(tokens).view(1, -1, heads, head_dim).transpose(1, 2).expand(B, -1, -1, -1)
        v = module.value(tokens).view(1, -1, heads, head_dim).transpose(1, 2).expand(B, -1, -1, -1)
        key, value = torch.cat([key, k.to(key.dtype)], 2), torch.cat([value, v.to(value.dtype)], 2)
        if attention_mask is not None:
            valid = True if attention_mask.dtype == torch.bool else 0.0
            attention_mask = pad_key_mask(attention_mask[..., : key.shape[2] - k.shape[2]], k.shape[2], valid)
    return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register_attention() -> str:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTN_NAME, _attention_with_extra_kv)
        _registered = True
    return ATTN_NAME


def _installer(self_attn: nn.Module):
    def install(provider):
        if provider is not None:
            self_attn.config._attn_implementation = register_attention()
        object.__setattr__(self_attn, "peft_extra_kv", provider)

    return install


def hf_attention_site(name: str, attention: nn.Module, ffn_out: nn.Module | None = None,
                      kind: str = "self") -> AttentionSite:
    """Site of a transformers ``BertAttention`` (``.self`` = query/key/value, ``.output.dense``). Post-LN like METER's
    fusion layers, so methods sit where the authors' METER code puts them (scaled PA after the output LayerNorm)."""
    core = attention.self
    return AttentionSite(
        name=name, dim=core.query.in_features, host=attention, query_input=core, out_proj=attention.output.dense,
        branch=attention.output,
        q=LinearSlot(core.query), k=LinearSlot(core.key), v=LinearSlot(core.value),
        install_extra_kv=_installer(core), ffn_out=ffn_out, kind=kind,
    )


def bert_layer_sites(layer: nn.Module, prefix: str) -> list:
    """Sites of one transformers ``BertLayer`` / ``RobertaLayer``: self-attention, and cross-attention if the layer
    has one; the feed-forward output (``output.dense``) goes with the last site."""
    has_cross = hasattr(layer, "crossattention")
    sites = [hf_attention_site(f"{prefix}.attention", layer.attention,
                               None if has_cross else layer.output.dense, "self")]
    if has_cross:
        sites.append(hf_attention_site(f"{prefix}.crossattention", layer.crossattention, layer.output.dense, "cross"))
    return sites
