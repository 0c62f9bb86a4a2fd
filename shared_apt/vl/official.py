"""Checkpoints saved by the APT authors' code (DoubtedSteam/APT): recognise them, read the method's sizes and variant
from their tensors, and convert their key names to this project's (and back).

The authors' code writes Lightning ``.ckpt`` files whose ``state_dict`` holds the whole model: the frozen backbone
under its upstream names (which this project keeps), the task heads, the class token ``token4classifier`` and the
method's tensors under names of its own (``...attn.APT.mm_tokens``, ``...q_lora.lora_A``, ``prompt``,
``prompts.0``...). Where those tensors live is backbone knowledge: a backbone declares it with
``official_layout() -> OfficialLayout`` (ViLT and METER do); this module only knows each method's own tensor names.

Orientation: ``nn.Linear`` weights are stored [out, in]. APT's ``mm.0`` / ``mm.1`` are Linears holding W1^T / W2^T,
while this project stores W1 [d, r] and W2 [r, d]: they are transposed. LoRA's ``lora_A`` [d, r] / ``lora_B`` [r, d]
are used as ``x @ A @ B`` in both codes; adapter and scaled-PA Linears are Linears in both.

    model = ViLTransformerSS(config)                       # any method or none
    shared_apt.load_official(model, "vqa_apt.ckpt")        # method, sizes and variant from the file
    shared_apt.export_official(model, "again.ckpt")        # the authors' key names, loadable by their code
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

CLASS_TOKEN = "token4classifier"

# Each method's own tensors, relative to the official prefix of one site: official name -> (project name inside the
# method module, transposed?).
_APT = {"mm_tokens": ("prompts", False), "mm.0.weight": ("w1", True), "mm.1.weight": ("w2", True),
        "scale": ("log_scale", False)}
_LORA = {f"{t}_lora.lora_{m}": (f"lora_{m}.{t}", False) for t in ("q", "v") for m in ("A", "B")}
_ADAPTER = {f"{o}_sampler.{w}": (f"body.{p}.{w}", False)
            for o, p in (("down", "down"), ("up", "up")) for w in ("weight", "bias")}
_PA = {"adapter_layer_norm_before.weight": ("norm.weight", False), "adapter_layer_norm_before.bias": ("norm.bias", False),
       **{f"{o}_proj.{w}": (f"body.{o}.{w}", False) for o in ("down", "up") for w in ("weight", "bias")}}

# Key fragments that only the authors' method files write (used to recognise their checkpoints and stray keys).
_METHOD_KEY = re.compile(r"(^|\.)(APT\.|q_lora\.|v_lora\.|adapter[01]?\.(down|up)_sampler\.|PA\.)")


class OfficialCheckpointError(RuntimeError):
    """A checkpoint of the authors' code does not fit the model or the options asked for."""


@dataclass
class OfficialSite:
    """Official key prefixes of one attention site's method tensors (without the trailing dot)."""

    apt: str            # holds APT.mm_tokens ...: ViLT "transformer.blocks.0.attn.APT"
    scaled_pa: str      # ViLT "transformer.blocks.0.attn.PA"
    lora: str           # holds q_lora / v_lora: ViLT "transformer.blocks.0.attn"
    adapter: str        # adapter on the attention output: ViLT "transformer.blocks.0.adapter0"
    adapter_ffn: Optional[str] = None  # adapter on the feed-forward output (sites that have ``ffn_out``)


@dataclass
class OfficialLayout:
    """Where a backbone's official checkpoints keep each method's tensors.

    ``sites``: AttentionSite.name -> OfficialSite. ``deep_prompt``: AttentionSite.name -> (key, index): the site's
    prompts are ``state_dict[key][index, 0]`` ([p, d]); sites absent there get none in the official variant.
    ``shallow_prompt``: SequenceSite.name -> (key, index). ``variants``: method -> PeftConfig options of the official
    variant when they differ from the defaults (METER: deep prompts in the cross-attention only, APT scale frozen)."""

    sites: Dict[str, OfficialSite]
    deep_prompt: Dict[str, Tuple[str, int]]
    shallow_prompt: Dict[str, Tuple[str, int]]
    variants: Dict[str, dict] = field(default_factory=dict)

    @property
    def prompt_keys(self) -> set:
        return {k for k, _ in list(self.deep_prompt.values()) + list(self.shallow_prompt.values())}


def layout_of(model: nn.Module) -> OfficialLayout:
    if not hasattr(model, "official_layout"):
        raise TypeError(f"{type(model).__name__} declares no official_layout(): checkpoints of the authors' code "
                        "cannot be mapped onto it")
    return model.official_layout()


def is_official(state_dict: dict) -> bool:
    """True for a state dict saved by the authors' code (its class token, or a method tensor only they write)."""
    return CLASS_TOKEN in state_dict or any(_METHOD_KEY.search(k) for k in state_dict) \
        or "prompt" in state_dict or "prompts.0" in state_dict


def _shape(t) -> tuple:
    return tuple(t.shape)


def detect_method(layout: OfficialLayout, sd: dict, hint: Optional[str] = None) -> str:
    """The method of an official state dict, from its keys (and, for prompts, the number of prompt sets; ``hint``
    decides when one prompt set fits both, in a backbone with a single layer)."""
    found = set()
    for k in sd:
        if ".APT.mm_tokens" in k:
            found.add("apt")
        elif k.endswith("q_lora.lora_A"):
            found.add("lora")
        elif k.endswith("down_sampler.weight"):
            found.add("adapter")
        elif k.endswith("PA.down_proj.weight"):
            found.add("scaled_pa")
    prompt_keys = sorted(k for k in layout.prompt_keys if k in sd)
    if prompt_keys:
        deep_sets = 1 + max(i for _, i in layout.deep_prompt.values()) if layout.deep_prompt else 0
        n = sd[prompt_keys[0]].shape[0]
        if n == 1 and deep_sets == 1 and hint in ("deep_prompt", "shallow_prompt"):
            found.add(hint)
        elif n == 1 and deep_sets != 1:
            found.add("shallow_prompt")
        elif n == deep_sets and n != 1:
            found.add("deep_prompt")
        else:
            raise OfficialCheckpointError(
                f"official prompt tensor {prompt_keys[0]} has shape {_shape(sd[prompt_keys[0]])}: {n} prompt sets fit "
                f"neither shallow prompting (1) nor deep prompting ({deep_sets}) of this model")
    if len(found) > 1:
        raise OfficialCheckpointError(f"official checkpoint holds tensors of several methods: {sorted(found)}")
    if found:
        return found.pop()
    if CLASS_TOKEN in sd:
        return "classifier"
    raise OfficialCheckpointError("not a checkpoint of the authors' code (no token4classifier, no method tensors)")


def _first_key(layout: OfficialLayout, method: str) -> Tuple[str, int]:
    """The official key (and its size dimension) from which the method's size is read."""
    if method in ("deep_prompt", "shallow_prompt"):
        table = layout.deep_prompt if method == "deep_prompt" else layout.shallow_prompt
        return next(iter(table.values()))[0], 2
    site = next(iter(layout.sites.values()))
    return {"apt": (f"{site.apt}.mm_tokens", 0), "lora": (f"{site.lora}.q_lora.lora_A", 1),
            "adapter": (f"{site.adapter}.down_sampler.weight", 0),
            "scaled_pa": (f"{site.scaled_pa}.down_proj.weight", 0)}[method]


def inferred_options(layout: OfficialLayout, sd: dict, method: str) -> dict:
    """PeftConfig options of the official model that wrote ``sd``: sizes from the tensor shapes, and the official
    variant of the method on this backbone."""
    opts = dict(layout.variants.get(method, {}))
    if method in ("full", "classifier"):
        return opts
    key, dim = _first_key(layout, method)
    if key not in sd:
        raise OfficialCheckpointError(f"official {method} checkpoint lacks {key!r}, where this backbone's {method} "
                                      f"sizes are read")
    size = int(sd[key].shape[dim])
    name = {"apt": "num_prompts", "lora": "lora_rank", "adapter": "adapter_bottleneck", "scaled_pa": "pa_bottleneck",
            "deep_prompt": "num_prompts", "shallow_prompt": "num_prompts"}[method]
    opts[name] = size
    if method == "apt":
        rank_key = key.replace("mm_tokens", "mm.0.weight")
        if rank_key not in sd:
            raise OfficialCheckpointError(f"official apt checkpoint lacks {rank_key!r} (W1^T, [r, d])")
        opts["apt_rank"] = int(sd[rank_key].shape[0])
    return opts


def options_for(model: nn.Module, method: str, given: dict, sd: dict, source: str = "<checkpoint>") -> dict:
    """Options to build ``method`` with so that the official state dict ``sd`` fits: ``given`` completed with the
    sizes and variant read from ``sd``. ``given`` unchanged when ``sd`` is not an official checkpoint. Raises
    (naming both) when the file holds another method or ``given`` contradicts it."""
    if not is_official(sd):
        return dict(given)
    layout = layout_of(model)
    found = detect_method(layout, sd, hint=method)
    if method != found:
        raise OfficialCheckpointError(
            f"{source} was saved by the authors' code with method {found!r}, but the model is configured with "
            f"peft={method!r}: set peft={found}")
    inferred = inferred_options(layout, sd, method)
    conflicts = [f"{k}: configured {given[k]!r}, checkpoint {v!r}" for k, v in inferred.items()
                 if k in given and given[k] != v]
    if conflicts:
        raise OfficialCheckpointError(f"{source} (authors' {method} checkpoint) contradicts the configured options:\n  "
                                      + "\n  ".join(conflicts) + "\nremove these options: they are read from the file")
    return {**given, **inferred}


# ----------------------------------------------------------------------------------------------------------------
# The mapping itself: one entry per official tensor (or per slice of a stacked prompt tensor).


@dataclass
class _Entry:
    official: str
    index: Optional[int]   # prompt tensors: state_dict[official][index, 0]
    project: str
    transpose: bool


def _entries(model: nn.Module) -> List[_Entry]:
    from ..peft.api import peft_config
    from ..peft.sites import backbone_spec

    config = peft_config(model)
    layout = layout_of(model)
    names = {id(m): n for n, m in model.named_modules()}
    spec = backbone_spec(model)
    out = [_Entry(CLASS_TOKEN, None, "class_token", False)] if config.method != "full" else []

    def add(module, prefix, table):
        base = names[id(module)]
        out.extend(_Entry(f"{prefix}.{k}", None, f"{base}.{p}", t) for k, (p, t) in table.items())

    method = config.method
    if method in ("full", "classifier"):
        return out
    if method == "shallow_prompt":
        for site in spec.shallow_sites():
            key, i = layout.shallow_prompt[site.name]
            out.append(_Entry(key, i, f"{names[id(site.host.peft_shallow_prompt)]}.prompts", False))
        return out
    for site in spec.attention_sites:
        off = layout.sites[site.name]
        if method == "apt":
            add(site.host.peft_apt, off.apt, _APT)
        elif method == "lora":
            add(site.host.peft_lora, off.lora, _LORA)
        elif method == "scaled_pa":
            add(site.host.peft_scaled_pa, off.scaled_pa, _PA)
        elif method == "adapter":
            add(site.host.peft_adapter, off.adapter, _ADAPTER)
            if site.ffn_out is not None:
                add(site.host.peft_adapter_ffn, off.adapter_ffn, _ADAPTER)
        elif method == "deep_prompt" and hasattr(site.host, "peft_deep_prompt"):
            if site.name not in layout.deep_prompt:
                raise OfficialCheckpointError(f"the authors' deep prompts have no prompt set for {site.name}: build "
                                              f"the official variant {layout.variants.get('deep_prompt', {})}")
            key, i = layout.deep_prompt[site.name]
            out.append(_Entry(key, i, f"{names[id(site.host.peft_deep_prompt)]}.prompts", False))
    return out


def _check_supported(config) -> None:
    if config.method == "lora" and tuple(sorted(config.lora_targets)) != ("q", "v"):
        raise OfficialCheckpointError(f"the authors' LoRA adapts q and v; this model adapts {config.lora_targets}")
    if config.method == "apt" and config.apt_variant != "lowrank":
        raise OfficialCheckpointError(f"the authors' APT is the lowrank variant; this model has {config.apt_variant}")


def to_project(model: nn.Module, sd: dict, source: str = "<checkpoint>") -> dict:
    """The project state dict of an official one (``sd`` itself when it is not official). Every official method
    tensor must be used and fit: otherwise OfficialCheckpointError names each missing, stray or misshaped key."""
    from ..peft.api import peft_config

    if not is_official(sd):
        return sd
    config = peft_config(model)
    layout = layout_of(model)
    found = detect_method(layout, sd, hint=None if config is None else config.method)
    if config is None or config.method != found:
        have = None if config is None else config.method
        raise OfficialCheckpointError(
            f"{source} was saved by the authors' code with method {found!r} but the model has method {have!r}: build "
            f"it with peft={found} (and test_only=True, so the file is loaded after the method exists)")
    _check_supported(config)
    own = model.state_dict()
    entries = _entries(model)
    used, problems = set(), []
    out = {k: v for k, v in sd.items() if not (k == CLASS_TOKEN or k in layout.prompt_keys or _METHOD_KEY.search(k))}
    for e in entries:
        if e.project not in own:
            raise OfficialCheckpointError(f"{type(model).__name__} has no tensor {e.project!r}, where "
                                          f"{e.official} belongs: the {config.method} module names changed")
        if e.official not in sd:
            problems.append(f"missing {e.official} (for {e.project} {tuple(own[e.project].shape)})")
            continue
        used.add(e.official)
        t = sd[e.official]
        if e.index is not None:
            if t.dim() != 4 or t.shape[1] != 1 or t.shape[0] <= e.index:
                problems.append(f"{e.official}: shape {_shape(t)}, expected [>{e.index}, 1, p, d] prompt sets")
                continue
            t = t[e.index, 0]
        elif e.transpose:
            t = t.t()
        if _shape(t) != tuple(own[e.project].shape):
            want = tuple(own[e.project].shape)
            shown = _shape(sd[e.official])
            want_off = want[::-1] if e.transpose else want
            problems.append(f"{e.official}: shape {shown}, the model expects "
                            f"{want_off if e.index is None else f'[n, 1, {want[0]}, {want[1]}]'} (for {e.project})")
            continue
        out[e.project] = t.contiguous()
    stray = sorted(k for k in sd if k not in used and (k == CLASS_TOKEN or k in layout.prompt_keys
                                                        or _METHOD_KEY.search(k)))
    if stray:
        problems.append("keys that fit no tensor of this model's "
                        f"{config.method}: " + ", ".join(f"{k} {_shape(sd[k])}" for k in stray))
    if problems:
        raise OfficialCheckpointError(f"{source}: the authors' {config.method} checkpoint does not fit this model:\n  "
                                      + "\n  ".join(problems))
    return out


def to_official(model: nn.Module) -> dict:
    """The model's state dict under the authors' key names (inverse of :func:`to_project`)."""
    entries = _entries(model)
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    by_project = {e.project for e in entries}
    out = {k: v for k, v in own.items() if k not in by_project}
    stacks: Dict[str, dict] = {}
    for e in entries:
        t = own[e.project]
        if e.index is not None:
            stacks.setdefault(e.official, {})[e.index] = t
        else:
            out[e.official] = t.t().contiguous() if e.transpose else t
    for key, parts in stacks.items():
        if sorted(parts) != list(range(len(parts))):
            raise OfficialCheckpointError(f"prompt sets of {key} are not numbered 0..{len(parts) - 1}: {sorted(parts)}")
        out[key] = torch.stack([parts[i] for i in range(len(parts))]).unsqueeze(1)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Public API


def load_official(model: nn.Module, path_or_state_dict, trust: bool = False) -> nn.Module:
    """Load a checkpoint of the authors' code into ``model``. A model without a method (or with ``full`` and nothing
    attached) gets the file's method, sizes and variant first; a model with a method must match the file."""
    from ..peft import api
    from .checkpoint import load_checkpoint, load_state_dict_checked, state_dict_of

    source = path_or_state_dict if isinstance(path_or_state_dict, str) else "<state_dict>"
    if isinstance(path_or_state_dict, str):
        sd = dict(state_dict_of(load_checkpoint(path_or_state_dict, trust=trust), path_or_state_dict))
    else:
        sd = dict(path_or_state_dict)
    if not is_official(sd):
        raise OfficialCheckpointError(f"{source} is not a checkpoint of the authors' code (no token4classifier, no "
                                      "method tensors)")
    config = api.peft_config(model)
    if config is None or (config.method == "full" and not api.tuning_modules(model)):
        method = detect_method(layout_of(model), sd)
        if config is not None:
            api.remove(model)
        api.apply(model, method, **options_for(model, method, {}, sd, source))
    if hasattr(model, "load_upstream"):  # the backbone's own loading (converts, resizes positions, ties heads)
        model.load_upstream(source, sd)
    else:
        load_state_dict_checked(model, to_project(model, sd, source), source=source, strict=True)
    return model


def export_official(model: nn.Module, path: str) -> None:
    """Write ``{"state_dict": ...}`` with the authors' key names (a Lightning-style ``.ckpt`` their code loads)."""
    from .checkpoint import save_atomic

    save_atomic({"state_dict": to_official(model)}, path)
