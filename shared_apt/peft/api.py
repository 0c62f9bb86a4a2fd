"""Public API, in the spirit of PEFT: apply a method to a backbone, list what trains, save/load only the tuned part.

    model = ViLTransformerSS(config)
    shared_apt.apply(model, "apt", num_prompts=200, rank=4)
    shared_apt.save_tuned(model, "run/tuned")          # tuned.safetensors + tuned_config.json
    shared_apt.load_tuned(other_model, "run/tuned")    # refuses another method, option or backbone shape
"""
from __future__ import annotations

import json
import os
from typing import Dict

import torch
from torch import nn

from .atomic import atomic_write, atomic_write_json
from .config import ConfigError, MethodConfig, config_from_dict, method_config
from .methods.base import TuningModule
from .registry import get_method
from .sites import backbone_spec

WEIGHTS_NAME = "tuned.safetensors"
CONFIG_NAME = "tuned_config.json"
FORMAT_VERSION = 2  # 2: "peft" holds the method's own options; 1: every method's options under flat keys


class TunedWeightsError(RuntimeError):
    """A tuned-weights file does not fit the model it is loaded into."""


def _state(model: nn.Module) -> dict:
    return model.__dict__.setdefault("_peft_state", {})


def peft_config(model: nn.Module) -> MethodConfig | None:
    return _state(model).get("config")


def tuning_modules(model: nn.Module) -> list:
    return list(_state(model).get("modules", []))


def apply(model: nn.Module, method: str | MethodConfig = "apt", **options) -> nn.Module:
    """Attach ``method`` to every place the backbone declares, then set ``requires_grad`` by the method's policy:

    * ``full``: every parameter trains, nothing is attached;
    * ``classifier``: only the backbone's common trainable set (task heads, poolers, modal-type embeddings, class
      token);
    * any other method: the common set plus the method's own parameters; everything else is frozen.
    Returns the model (modified in place)."""
    config = method if isinstance(method, MethodConfig) else method_config(method, **options)
    if isinstance(method, MethodConfig) and options:
        raise ConfigError("pass options either inside the PeftConfig or as keywords, not both")
    if peft_config(model) is not None:
        raise RuntimeError(f"a tuning method ({peft_config(model).method}) is already applied to this model")
    spec = backbone_spec(model)
    config = resolve_backbone_defaults(config, spec)
    if spec.prepare is not None:
        spec.prepare(config.method)
    modules = get_method(config.method).attach(spec, config)
    device = next((p.device for p in model.parameters()), None)
    if device is not None:  # method parameters live where the backbone lives (cuda, meta, ...)
        for m in modules:
            m.to(device)
    state = _state(model)
    state.update(config=config, modules=modules, signature=dict(spec.signature))
    set_trainable(model)
    return model


def resolve_backbone_defaults(config: MethodConfig, spec) -> MethodConfig:
    """Options left at None take the backbone's official value (``BackboneSpec.option_defaults``, keyed by flat key
    or option name), else the method's ``unset_defaults``: e.g. APT's ``train_scale`` (flat key
    ``apt_train_scale``) is True unless the backbone says otherwise (METER: False, as the authors' code)."""
    import dataclasses

    changes = {}
    for name, fallback in type(config).unset_defaults.items():
        if getattr(config, name) is None:
            keys = [k for k in (type(config).flat_key(name), name) if k in spec.option_defaults]
            changes[name] = spec.option_defaults[keys[0]] if keys else fallback
    return dataclasses.replace(config, **changes) if changes else config


def common_trainable_names(model: nn.Module) -> list:
    prefixes = tuple(backbone_spec(model).common_trainable)
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes)]


def method_parameter_names(model: nn.Module) -> list:
    ids = {id(p) for m in tuning_modules(model) for p in m.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def set_trainable(model: nn.Module) -> None:
    """(Re)apply the policy of the applied method to ``requires_grad``."""
    config = peft_config(model)
    if config is None:
        raise RuntimeError("no tuning method applied: call shared_apt.apply(model, method) first")
    never = tuple(backbone_spec(model).frozen)
    if get_method(config.method).trains_backbone:
        for n, p in model.named_parameters():
            p.requires_grad_(not n.startswith(never) if never else True)
        return
    train = set(common_trainable_names(model)) | set(method_parameter_names(model))
    train = {n for n in train if not (never and n.startswith(never))}
    frozen_by_method = {id(p) for m in tuning_modules(model) for n, p in m.named_parameters()
                        if n in m.fixed_parameters}
    for n, p in model.named_parameters():
        p.requires_grad_(n in train and id(p) not in frozen_by_method)


def trainable_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    """Name -> parameter for every parameter that the applied policy trains."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def updated_parameter_count(model: nn.Module) -> int:
    """The APT paper's "Updated Parameter" column: the method's own parameters (the common trainable set is not
    counted, docs/accounting.md). ``full``: every parameter of the model; ``classifier``: 0."""
    config = peft_config(model)
    if get_method(config.method).trains_backbone:
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for m in tuning_modules(model) for p in m.parameters())


def merge(model: nn.Module) -> None:
    """Fold mergeable updates (LoRA) into the frozen weights: inference then costs exactly the backbone's FLOPs.
    Inference only: the model must be in eval mode (``model.train()`` unmerges again); see ``LoRAModule``."""
    for m in tuning_modules(model):
        m.merge()


def unmerge(model: nn.Module) -> None:
    for m in tuning_modules(model):
        m.unmerge()


def remove(model: nn.Module) -> None:
    """Detach the method: its hooks are removed and its modules deleted; the backbone is as before ``apply``."""
    unmerge(model)
    for m in tuning_modules(model):
        m.detach_hooks()
    for name, module in list(model.named_modules()):
        for child in list(module._modules):
            if isinstance(module._modules[child], TuningModule):
                del module._modules[child]
    model.__dict__.pop("_peft_state", None)


# ----------------------------------------------------------------------------------------------------------------
# Tuned weights on disk: safetensors with the tuned tensors + JSON with the method config and backbone signature.


def tuned_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every trainable tensor (policy), detached, contiguous and unshared (rank_output may view the ITM head)."""
    return {n: p.detach().contiguous().clone() for n, p in trainable_parameters(model).items()}


def save_tuned(model: nn.Module, path: str) -> None:
    """Write ``path/tuned.safetensors`` and ``path/tuned_config.json`` (each atomically)."""
    from safetensors.torch import save_file

    config = peft_config(model)
    if config is None:
        raise RuntimeError("no tuning method applied: nothing to save")
    tensors = tuned_state_dict(model)
    meta = {
        "format_version": FORMAT_VERSION,
        "peft": config.to_dict(),
        "backbone": _state(model)["signature"],
        "tensors": {n: list(t.shape) for n, t in tensors.items()},
    }
    os.makedirs(path, exist_ok=True)
    atomic_write(os.path.join(path, WEIGHTS_NAME), lambda tmp: save_file(tensors, tmp))
    atomic_write_json(os.path.join(path, CONFIG_NAME), meta, indent=2, sort_keys=True)


def read_tuned_config(path: str) -> dict:
    cfg_path = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(cfg_path):
        raise TunedWeightsError(f"{cfg_path!r} not found: not a directory written by shared_apt.save_tuned")
    with open(cfg_path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise TunedWeightsError(f"{cfg_path!r} is not valid JSON: {e}") from e


def _differences(saved: dict, current: dict) -> list:
    keys = sorted(set(saved) | set(current))
    return [f"{k}: file has {saved.get(k, '<absent>')!r}, model has {current.get(k, '<absent>')!r}"
            for k in keys if saved.get(k) != current.get(k)]


def load_tuned(model: nn.Module, path: str) -> nn.Module:
    """Load tuned tensors written by :func:`save_tuned`. If the model has no method yet, the saved one is applied
    first. Refuses (TunedWeightsError listing every difference) another method or option, another backbone shape,
    missing or unexpected tensors, tensors of the frozen backbone, and shape mismatches; nothing is written then."""
    from safetensors.torch import load_file

    meta = read_tuned_config(path)
    version = meta.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise TunedWeightsError(f"{os.path.join(path, CONFIG_NAME)!r}: format_version {version!r} unknown "
                                f"(expected 1 or {FORMAT_VERSION})")
    try:
        saved_cfg = config_from_dict(meta["peft"], legacy_flat=version == 1)
    except ConfigError as e:
        raise TunedWeightsError(f"{os.path.join(path, CONFIG_NAME)!r}: {e}") from e
    if peft_config(model) is None:
        apply(model, saved_cfg)
    current_cfg = peft_config(model)
    problems = []
    problems += [f"method option {d}" for d in _differences(saved_cfg.relevant(), current_cfg.relevant())]
    problems += [f"backbone {d}" for d in _differences(meta["backbone"], _state(model)["signature"])]
    weights_path = os.path.join(path, WEIGHTS_NAME)
    if not os.path.isfile(weights_path):
        problems.append(f"{weights_path!r} not found")
        raise TunedWeightsError(f"cannot load tuned weights from {path!r}:\n  " + "\n  ".join(problems))
    try:
        tensors = load_file(weights_path)
    except Exception as e:  # safetensors raises its own error types
        raise TunedWeightsError(f"{weights_path!r} is not a readable safetensors file: {e}") from e
    params = dict(model.named_parameters())
    expected = trainable_parameters(model)
    # what a tuned file may write: the method's own parameters and the common trainable set (everything for full)
    allowed = set(expected) | set(method_parameter_names(model)) | set(common_trainable_names(model))
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    frozen = sorted(set(tensors) & set(params) - allowed)
    if missing:
        problems.append(f"missing tensors (the model trains them): {missing}")
    if unexpected:
        problems.append(f"unexpected tensors (not in the model): {unexpected}")
    if frozen:
        problems.append(f"tensors of the frozen backbone (neither method {current_cfg.method}'s own nor the common "
                        f"trainable set; a tuned file never writes them): {frozen}")
    shapes = [f"{n}: file {tuple(t.shape)}, model {tuple(params[n].shape)}"
              for n, t in tensors.items() if n in params and tuple(t.shape) != tuple(params[n].shape)]
    if shapes:
        problems.append(f"shape mismatches: {shapes}")
    if problems:
        raise TunedWeightsError(f"cannot load tuned weights from {path!r} into {type(model).__name__}:\n  "
                                + "\n  ".join(problems))
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)
    for m in tuning_modules(model):  # e.g. inside shared_apt.peft.methods.apt.cached_keys: drop the K computed before
        m.reset_caches()
    return model


def describe(model: nn.Module) -> str:
    config = peft_config(model)
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in trainable_parameters(model).values())
    return (f"method={config.method if config else None} updated={updated_parameter_count(model) if config else 0:,} "
            f"trainable={train:,} total={total:,}")
