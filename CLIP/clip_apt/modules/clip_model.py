"""OpenAI's CLIP on open_clip's modules, with the places tuning methods attach (``peft_spec``).

``load_clip(path_or_state_dict)`` builds the model from an OpenAI-format file (the TorchScript archive released by
openai/CLIP, or a plain state dict saved with ``torch.save``) and infers every dimension from the tensor shapes as
openai/CLIP's ``build_model`` does: vision width = conv1 output channels, layers = number of ``in_proj_weight`` keys,
patch = conv1 kernel, resolution = patch * sqrt(positions - 1), embed dim = text_projection columns, context =
text positions, vocab = token embedding rows, text width = ln_final width. Heads are width // 64 as upstream derives
them; ``text_heads`` / ``vision_heads`` override that for models that do not follow it (tiny test models).

The model is open_clip's ``CLIP`` (QuickGELU, fp32) whose attention modules are replaced by :class:`ClipAttention`,
numerically the same as ``nn.MultiheadAttention`` with the same parameter names (``attn.in_proj_weight``,
``attn.in_proj_bias``, ``attn.out_proj.*``), so the state dict keeps OpenAI's 302 keys. It calls its packed q/k/v
projection and its output projection as modules, which is what lets LoRA and adapters hook them.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shared_apt.peft.sites import (AttentionSite, BackboneSpec, LinearSlot, PromptSites, TextPromptSite,
                              VisualPromptSite, attribute_setter, extra_kv_tokens)

from .tokenizer import tokenize

TOWERS = ("text", "vision")
JIT_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")  # scalars of OpenAI's TorchScript archive
BUILT_KEYS = ("attn_mask",)  # the causal mask is built, not loaded (open_clip archives may carry it)

# Geometry of OpenAI's ViT-B/16 (profile and exact parameter counts are computed at these shapes).
VIT_B16 = dict(embed_dim=512, image_size=224, patch_size=16, vision_width=768, vision_layers=12, vision_heads=12,
               context_length=77, vocab_size=49408, text_width=512, text_layers=12, text_heads=8)


class _PackedInProj(nn.Module):
    """The packed q/k/v projection of a :class:`ClipAttention` seen as a Linear [3d, d]. It owns no parameters (they
    stay ``in_proj_weight`` / ``in_proj_bias`` of the attention, OpenAI's names); calling it is the projection."""

    def __init__(self, owner: nn.Module):
        super().__init__()
        object.__setattr__(self, "_owner", owner)  # a reference, not a child module

    @property
    def weight(self) -> nn.Parameter:
        return self._owner.in_proj_weight

    @property
    def bias(self) -> nn.Parameter:
        return self._owner.in_proj_bias

    @property
    def in_features(self) -> int:
        return self._owner.in_proj_weight.shape[1]

    @property
    def out_features(self) -> int:
        return self._owner.in_proj_weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ClipAttention(nn.Module):
    """Batch-first multi-head self-attention with ``nn.MultiheadAttention``'s parameters and call convention
    (``attn(q, k, v, need_weights=False, attn_mask=...)`` -> ``(output, None)``), written out so that the q/k/v and
    output projections run as modules. Extra key/value tokens installed by a method (``peft_extra_kv``, already
    normalised, [p, d]) join the keys and values of every sequence."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.embed_dim, self.num_heads = dim, heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.in_proj = _PackedInProj(self)
        self.peft_extra_kv = None

    def forward(self, query, key=None, value=None, need_weights: bool = False, attn_mask=None):
        if key is not None and key is not query or value is not None and value is not query:
            raise NotImplementedError("ClipAttention is self-attention only (CLIP has no cross-attention)")
        b, n, d = query.shape
        h = self.num_heads
        q, k, v = self.in_proj(query).split(d, dim=-1)
        extra = extra_kv_tokens(self)
        if extra is not None:
            _, ek, ev = self.in_proj(extra.to(query.dtype)).split(d, dim=-1)
            k = torch.cat([k, ek.unsqueeze(0).expand(b, -1, -1)], dim=1)
            v = torch.cat([v, ev.unsqueeze(0).expand(b, -1, -1)], dim=1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, extra.shape[0]), value=0.0)
        q, k, v = (t.reshape(b, -1, h, d // h).transpose(1, 2) for t in (q, k, v))
        mask = attn_mask.to(q.dtype) if attn_mask is not None else None
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, d)), None


def _open_clip():
    try:
        import open_clip  # noqa: F401
        from open_clip.model import CLIP as OpenClipCLIP, CLIPTextCfg, CLIPVisionCfg
    except ImportError as e:  # pragma: no cover - dependency listed in requirements.txt
        raise ImportError("clip_apt needs open_clip: pip install open-clip-torch (listed in requirements.txt)") from e
    return OpenClipCLIP, CLIPTextCfg, CLIPVisionCfg


def _clip_class():
    OpenClipCLIP, _, _ = _open_clip()

    class CLIP(OpenClipCLIP):
        """open_clip's CLIP (OpenAI layout) plus: class-prompt classification and the tuning-method sites."""

        def __init__(self, geometry: dict, towers: Sequence[str] = ("text",)):
            _, CLIPTextCfg, CLIPVisionCfg = _open_clip()
            g = dict(geometry)
            vision = CLIPVisionCfg(layers=g["vision_layers"], width=g["vision_width"], patch_size=g["patch_size"],
                                   image_size=g["image_size"], head_width=g["vision_width"] // g["vision_heads"])
            text = CLIPTextCfg(context_length=g["context_length"], vocab_size=g["vocab_size"], width=g["text_width"],
                               heads=g["text_heads"], layers=g["text_layers"])
            super().__init__(g["embed_dim"], vision_cfg=vision, text_cfg=text, quick_gelu=True, cast_dtype=None)
            for blk in list(self.transformer.resblocks) + list(self.visual.transformer.resblocks):
                blk.attn = ClipAttention(blk.attn.embed_dim, blk.attn.num_heads)
            self.geometry = g
            self.peft_towers = _check_towers(towers)
            self._text_provider: Optional[Callable] = None
            self._text_cache: Optional[tuple] = None
            self.reset_attention()

        @torch.no_grad()
        def reset_attention(self) -> None:
            """open_clip's initialisation of the attention weights (the pre-trained weights replace it)."""
            for tower, width, layers in ((self.transformer, self.transformer.width, self.transformer.layers),
                                         (self.visual.transformer, self.visual.transformer.width,
                                          self.visual.transformer.layers)):
                proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
                for blk in tower.resblocks:
                    nn.init.normal_(blk.attn.in_proj_weight, std=width ** -0.5)
                    nn.init.zeros_(blk.attn.in_proj_bias)
                    nn.init.normal_(blk.attn.out_proj.weight, std=proj_std)
                    nn.init.zeros_(blk.attn.out_proj.bias)

        # ------------------------------------------------------------------------------------------------------
        # Encoders (features unnormalised, as OpenAI's).

        def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            return self.encode_text_embeddings(self.token_embedding(text), text.argmax(dim=-1), normalize)

        def encode_text_embeddings(self, embeds: torch.Tensor, eot_index: torch.Tensor,
                                   normalize: bool = False) -> torch.Tensor:
            """Text features from token embeddings [N, L, d] (no positions yet), pooled at ``eot_index`` [N]: the
            entry point of prompt learners, which replace some embeddings of a tokenised template."""
            x = embeds + self.positional_embedding.to(embeds.dtype)
            x = self.transformer(x, attn_mask=self.attn_mask)
            x = self.ln_final(x)
            x = x[torch.arange(x.shape[0], device=x.device), eot_index.to(x.device)] @ self.text_projection
            return F.normalize(x, dim=-1) if normalize else x

        def forward(self, image: torch.Tensor, text: torch.Tensor):
            """OpenAI's ``CLIP.forward``: (logits_per_image [B, T], logits_per_text [T, B]) =
            exp(logit_scale) x cosine similarities."""
            img = self.encode_image(image, normalize=True)
            txt = self.encode_text(text, normalize=True)
            logits_per_image = self.logit_scale.exp() * img @ txt.t()
            return logits_per_image, logits_per_image.t()

        # ------------------------------------------------------------------------------------------------------
        # Classification by class prompts.

        def class_text_features(self, classnames: Sequence[str], template: str,
                                image_features: Optional[torch.Tensor] = None) -> torch.Tensor:
            """Normalised text features of the classes: [K, D], or [B, K, D] when an installed prompt learner makes
            prompts per image (CoCoOp). Without a prompt learner, the hard prompt ``template.format(name)`` (each
            ``_`` of a name read as a space). In eval mode without gradients, image-independent features are computed
            once per class list (the cache is dropped by ``train()`` and when a method is installed)."""
            key = (tuple(classnames), template)
            caching = not self.training and not torch.is_grad_enabled()
            if caching and self._text_cache is not None and self._text_cache[0] == key:
                return self._text_cache[1]
            if self._text_provider is None:
                ids = tokenize([template.format(c.replace("_", " ")) for c in classnames],
                               self.context_length).to(self.attn_mask.device)
                feats = self.encode_text(ids, normalize=True)
            else:
                embeds, eot = self._text_provider(list(classnames), image_features)
                if embeds.dim() == 4:  # per-image prompts [B, K, L, d]
                    b, k = embeds.shape[:2]
                    feats = self.encode_text_embeddings(embeds.flatten(0, 1), eot.repeat(b), normalize=True)
                    return feats.reshape(b, k, -1)
                feats = self.encode_text_embeddings(embeds, eot, normalize=True)
            if caching:
                self._text_cache = (key, feats)
            return feats

        def classify(self, images: torch.Tensor, classnames: Sequence[str],
                     template: str = "a photo of a {}.") -> torch.Tensor:
            """Logits [B, K] = exp(logit_scale) * cos(image, class text)."""
            img = self.encode_image(images, normalize=True)
            txt = self.class_text_features(classnames, template, img)
            scale = self.logit_scale.exp()
            if txt.dim() == 3:
                return scale * torch.einsum("bd,bkd->bk", img, txt.to(img.dtype))
            return scale * img @ txt.to(img.dtype).t()

        def train(self, mode: bool = True):
            self._text_cache = None
            return super().train(mode)

        def install_text_prompts(self, provider: Optional[Callable]) -> None:
            self._text_cache = None
            self._text_provider = provider

        # ------------------------------------------------------------------------------------------------------
        def peft_spec(self) -> BackboneSpec:
            sites = []
            for tower in self.peft_towers:
                blocks = self.transformer.resblocks if tower == "text" else self.visual.transformer.resblocks
                prefix = "transformer" if tower == "text" else "visual.transformer"
                for i, blk in enumerate(blocks):
                    a, d = blk.attn, blk.attn.embed_dim
                    sites.append(AttentionSite(
                        name=f"{prefix}.resblocks.{i}.attn", dim=d, host=a, query_input=a, out_proj=a, branch=a,
                        q=LinearSlot(a.in_proj, slice(0, d)), k=LinearSlot(a.in_proj, slice(d, 2 * d)),
                        v=LinearSlot(a.in_proj, slice(2 * d, 3 * d)), install_extra_kv=attribute_setter(a),
                        kv_norm=blk.ln_1, ffn_out=blk.mlp.c_proj, kind="self"))
            text = TextPromptSite(
                name="text", dim=self.transformer.width, host=self, embed=self.token_embedding,
                tokenize=lambda texts: tokenize(texts, self.context_length),
                install=self.install_text_prompts, blocks=list(self.transformer.resblocks),
                context_length=self.context_length)
            visual = VisualPromptSite(
                name="visual", dim=self.visual.transformer.width, host=self.visual, ln_pre=self.visual.ln_pre,
                blocks=list(self.visual.transformer.resblocks), insert_at=1)
            g = self.geometry
            return BackboneSpec(
                attention_sites=sites, sequence_site=None, common_trainable=[],
                signature={"backbone": "clip", "towers": list(self.peft_towers), **g},
                prompt_sites=PromptSites(text=text, visual=visual, feature_dim=g["embed_dim"]))

    return CLIP


def _check_towers(towers) -> tuple:
    towers = (towers,) if isinstance(towers, str) else tuple(towers)
    if not towers or any(t not in TOWERS for t in towers):
        raise ValueError(f"peft_towers={towers!r}: expected a non-empty subset of {TOWERS}")
    return towers


_CLIP = None


def clip_class():
    global _CLIP
    if _CLIP is None:
        _CLIP = _clip_class()
    return _CLIP


def build_clip(geometry: dict, towers: Sequence[str] = ("text",)) -> nn.Module:
    """A CLIP of the given geometry (keys of ``VIT_B16``) with open_clip's random initialisation."""
    missing = sorted(set(VIT_B16) - set(geometry))
    if missing:
        raise ValueError(f"CLIP geometry lacks {missing} (expected the keys of VIT_B16)")
    return clip_class()(geometry, towers)


def infer_geometry(state_dict: dict, text_heads: Optional[int] = None, vision_heads: Optional[int] = None) -> dict:
    """The architecture of an OpenAI-format state dict, read from shapes as openai/CLIP's ``build_model`` does."""
    need = ["visual.conv1.weight", "visual.positional_embedding", "text_projection", "positional_embedding",
            "token_embedding.weight", "ln_final.weight"]
    missing = [k for k in need if k not in state_dict]
    if missing:
        raise KeyError(f"not an OpenAI-format ViT CLIP state dict: missing {missing} "
                       f"(first keys: {list(state_dict)[:5]})")
    vw = state_dict["visual.conv1.weight"].shape[0]
    patch = state_dict["visual.conv1.weight"].shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    tw = state_dict["ln_final.weight"].shape[0]
    g = dict(
        embed_dim=state_dict["text_projection"].shape[1], image_size=patch * grid, patch_size=patch,
        vision_width=vw,
        vision_layers=len([k for k in state_dict if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")]),
        vision_heads=vision_heads or vw // 64,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0], text_width=tw,
        text_layers=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks")}),
        text_heads=text_heads or tw // 64,
    )
    for key, width in (("vision_heads", vw), ("text_heads", tw)):
        if g[key] < 1 or width % g[key]:
            raise ValueError(f"{key}={g[key]} does not divide the width {width}: pass {key} explicitly")
    return g


def _read_state_dict(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CLIP weights not found: {path!r} (an OpenAI TorchScript archive or a state dict)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; OpenAI ships TorchScript
            archive = torch.jit.load(path, map_location="cpu")
        return archive.state_dict()
    except RuntimeError:
        pass  # not TorchScript: a plain state dict
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path!r} holds a {type(sd).__name__}, not a CLIP state dict")
    return sd


def load_clip(path_or_state_dict, text_heads: Optional[int] = None, vision_heads: Optional[int] = None,
              towers: Sequence[str] = ("text",)) -> nn.Module:
    """OpenAI-format CLIP weights (file path or state dict) -> the model in fp32, eval mode.

    ``towers``: where attention-site methods (APT, LoRA, adapters) attach: the text encoder (default, as the APT
    paper places APT), the vision encoder, or both."""
    sd = _read_state_dict(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) \
        else dict(path_or_state_dict)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    for k in JIT_ONLY_KEYS + BUILT_KEYS:
        sd.pop(k, None)
    model = build_clip(infer_geometry(sd, text_heads, vision_heads), towers)
    result = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KeyError(f"CLIP state dict does not fit the inferred architecture: missing {result.missing_keys}, "
                       f"unexpected {result.unexpected_keys}")
    return model.eval()


def num_image_tokens(geometry: dict) -> int:
    return (geometry["image_size"] // geometry["patch_size"]) ** 2 + 1


__all__ = ["ClipAttention", "VIT_B16", "build_clip", "clip_class", "infer_geometry", "load_clip", "num_image_tokens"]
