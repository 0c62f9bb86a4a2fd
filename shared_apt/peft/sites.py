"""The one interface between tuning methods and backbones.

A backbone says *where* things are; a method says *what* it adds. Nothing in `shared_apt.peft.methods` knows ViLT, METER,
CLIP or Stable Diffusion, and nothing in those backbones knows a method.

A backbone model implements ``peft_spec() -> BackboneSpec``:

* ``attention_sites``: one :class:`AttentionSite` per attention module a method may touch. A site names modules of the
  backbone (never copies of them), so methods attach through ordinary PyTorch forward hooks:

  - ``query_input``: the module whose first input (positional, or keyword ``hidden_states``) is X, the query-side
    hidden states of the attention (pre-LN backbones: the normalised block input);
  - ``out_proj``: the module whose output is O = the attention output after its output projection (bias included),
    before dropout and the residual add;
  - ``branch``: the module to whose output the scaled parallel adapter's branch is added (default ``out_proj``; the
    APT authors' code adds it after the projection dropout in ViLT and after the post-attention LayerNorm in METER);
  - ``adapter_out``: the module whose output the sequential attention adapter transforms (default ``out_proj``;
    the authors' ViLT code places it after the projection dropout);
  - ``q`` / ``k`` / ``v``: :class:`LinearSlot` s, the frozen projections (a fused QKV linear is three slots on one
    module, told apart by their output rows);
  - ``o``: optional :class:`LinearSlot` of the output projection, for methods that tune it (LoRA target "o");
  - ``kv_norm``: what the attention applies to its key/value input before the projections (ViLT: the block's LN1,
    because prompts enter before it; post-LN backbones: ``None``);
  - ``install_extra_kv(provider)``: makes the attention append ``provider()`` ([p, d] tokens in the key/value input
    space, already normalised) as extra keys/values that every query may attend to; ``None`` removes it;
  - ``ffn_out``: for the last attention site of a layer, the module whose output the feed-forward sequential adapter
    transforms (the feed-forward output before the residual add: ViLT's whole MLP, its final dropout included; the
    dense layer before dropout in post-LN BERT layers), else ``None``.

* ``sequence_site``: a :class:`SequenceSite` where extra tokens enter the whole token sequence (shallow prompts).
* ``sequence_sites``: several such sites for backbones with more than one token stream (METER: text and image
  streams at the fusion input); shallow prompting gives every site its own prompt set. When it is non-empty it is
  used instead of ``sequence_site``.
* ``common_trainable``: parameter-name prefixes trained by every tuning method except ``full`` (task heads, poolers,
  modal-type embeddings, class token, and in ViLT the BERT segment embedding), as the APT authors' name filter
  trains them.
* ``option_defaults``: method options whose official value depends on the backbone (METER: ``apt_train_scale``
  False), used when the user leaves them at None.
* ``prepare(policy)``: optional callback run by :func:`shared_apt.apply` before freezing (ViLT/METER switch on their
  learnable class token there).
* ``frozen``: parameter-name prefixes that no policy trains (upstream freezes the ITM head in IR/TR fine-tuning).
* ``signature``: a dict of geometry (backbone name, widths, layers...) stored with tuned weights, so weights made for
  another backbone shape are refused when loaded.
* ``prompt_sites``: for backbones that classify with class prompts (CLIP), a :class:`PromptSites` with where prompt
  learners act: a :class:`TextPromptSite` (the text encoder takes learned context in place of template tokens) and a
  :class:`VisualPromptSite` (visual tokens before / after the image encoder's input norm, and per-layer slots).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LinearSlot:
    """A frozen projection inside an attention module: a Linear, or some output rows of a fused Linear."""

    linear: nn.Linear
    rows: Optional[slice] = None

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        if self.rows is None:
            return self.linear.out_features
        return len(range(*self.rows.indices(self.linear.out_features)))


@dataclass
class AttentionSite:
    name: str
    dim: int
    host: nn.Module
    query_input: nn.Module
    out_proj: nn.Module
    q: LinearSlot
    k: LinearSlot
    v: LinearSlot
    install_extra_kv: Callable[[Optional[Callable[[], torch.Tensor]]], None]
    branch: Optional[nn.Module] = None
    adapter_out: Optional[nn.Module] = None
    kv_norm: Optional[nn.Module] = None
    ffn_out: Optional[nn.Module] = None
    kind: str = "self"  # "self" or "cross"
    o: Optional[LinearSlot] = None  # the output projection as a tunable slot (declared by backbones that offer it)

    def __post_init__(self):
        if self.branch is None:
            self.branch = self.out_proj
        if self.adapter_out is None:
            self.adapter_out = self.out_proj


@dataclass
class SequenceSite:
    """Where extra tokens join the whole sequence. ``install(provider, placement)`` makes the backbone add
    ``provider(batch_size)`` ([B, p, d]) to its token sequence (``placement`` "append" or "prepend"), with attention
    mask 1, before the first layer, and drop them again from the outputs it returns."""

    name: str
    dim: int
    host: nn.Module
    install: Callable[[Optional[Callable[[int], torch.Tensor]], str], None]
    default_placement: str = "append"


@dataclass
class TextPromptSite:
    """A text encoder that builds class features from prompts. ``install(provider)`` makes it call
    ``provider(classnames, image_features)`` -> ``(embeds, eot_index)`` instead of tokenising its hard template:
    ``embeds`` are token embeddings without positions, [K, L, d] or [B, K, L, d] (one prompt set per image),
    ``eot_index`` [K] the position each prompt is pooled at; ``None`` restores the hard template.
    ``tokenize(texts)`` -> ids [N, L] and ``embed(ids)`` -> [N, L, d] are the encoder's own tokenizer and token
    embedding. ``blocks``: the encoder layers in order; each is called with the token sequence [N, L, d]
    (batch-first) as first input, where deep prompts replace context slots before the layer."""

    name: str
    dim: int
    host: nn.Module
    embed: nn.Module
    tokenize: Callable
    install: Callable[[Optional[Callable]], None]
    blocks: list
    context_length: int


@dataclass
class VisualPromptSite:
    """An image encoder's token sequence. ``ln_pre`` is the norm applied to the embedded tokens before the first
    layer (its input: [B, n, d] with the position embedding added; its output: the first layer's input); extra tokens
    enter the sequence at index ``insert_at`` (after the class token). ``blocks``: the layers in order, each called
    with the batch-first sequence [B, n, d] as first input; the encoder pools its class token (index 0) only."""

    name: str
    dim: int
    host: nn.Module
    ln_pre: nn.Module
    blocks: list
    insert_at: int = 1


@dataclass
class PromptSites:
    """Where prompt learners act on a contrastive image-text backbone; ``feature_dim`` is the joint feature width."""

    text: Optional[TextPromptSite]
    visual: Optional[VisualPromptSite]
    feature_dim: int


@dataclass
class BackboneSpec:
    attention_sites: list
    sequence_site: Optional[SequenceSite]
    common_trainable: list
    signature: dict
    prepare: Optional[Callable[[str], None]] = None
    frozen: list = field(default_factory=list)  # name prefixes never trained, whatever the policy (ViLT IR/TR: ITM)
    sequence_sites: list = field(default_factory=list)  # multi-stream backbones: one SequenceSite per stream
    option_defaults: dict = field(default_factory=dict)  # method options whose official value depends on the backbone
    prompt_sites: Optional[PromptSites] = None  # class-prompt backbones (CLIP): text context and visual tokens

    def shallow_sites(self) -> list:
        """Where shallow prompts go: ``sequence_sites`` if declared, else ``[sequence_site]`` (or nothing)."""
        if self.sequence_sites:
            return list(self.sequence_sites)
        return [self.sequence_site] if self.sequence_site is not None else []


def backbone_spec(model: nn.Module) -> BackboneSpec:
    if not hasattr(model, "peft_spec"):
        raise TypeError(
            f"{type(model).__name__} does not declare its attention layers: it needs a peft_spec() method "
            "returning shared_apt.peft.sites.BackboneSpec"
        )
    return model.peft_spec()


# --------------------------------------------------------------------------------------------------------------
# Helpers that backbones call from their own attention code (method-agnostic).


def attribute_setter(module: nn.Module, attr: str = "peft_extra_kv") -> Callable:
    """``install_extra_kv`` for attention modules written in this project: they read ``module.peft_extra_kv``."""

    def install(provider):
        object.__setattr__(module, attr, provider)

    return install


def extra_kv_tokens(module: nn.Module) -> Optional[torch.Tensor]:
    provider = getattr(module, "peft_extra_kv", None)
    return None if provider is None else provider()


def pad_key_mask(mask: Optional[torch.Tensor], extra: int, value: Any = 1) -> Optional[torch.Tensor]:
    """Extend a key mask (last dimension = keys) by ``extra`` always-valid positions.

    ``value`` is what "valid" means in that mask: 1 / True for multiplicative masks, 0.0 for additive ones."""
    if mask is None or extra == 0:
        return mask
    return F.pad(mask, (0, extra), value=value)


def input_of(args: tuple, kwargs: dict, key: str = "hidden_states") -> torch.Tensor:
    """The first positional input of a hooked module, or its ``hidden_states`` keyword."""
    if args:
        return args[0]
    if key in kwargs:
        return kwargs[key]
    raise RuntimeError(f"hooked module was called without a positional input or a {key!r} keyword")


def map_output(output: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to a module output that is a tensor, or to element 0 of a tuple output."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, tuple):
        return (fn(output[0]),) + tuple(output[1:])
    raise TypeError(f"cannot modify a module output of type {type(output).__name__}")
