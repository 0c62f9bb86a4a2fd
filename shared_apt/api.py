"""Public API, in the spirit of PEFT: apply a method to a backbone, list what trains, save/load only the tuned part.

    model = ViLTransformerSS(config)
    shared_apt.apply(model, "apt", num_prompts=200, rank=4)
    shared_apt.save_tuned(model, "run/tuned")          # tuned.safetensors + tuned_config.json
    shared_apt.load_tuned(other_model, "run/tuned")    # refuses another method, option or backbone shape
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Dict

import torch
from torch import nn

from .config import ConfigError, PeftConfig
from .methods import ATTACH, OPTION_METHODS, LoRAModule, TuningModule
from .sites import backbone_spec

WEIGHTS_NAME = "tuned.safetensors"
CONFIG_NAME = "tuned_config.json"
FORMAT_VERSION = 1


class TunedWeightsError(RuntimeError):
    """A tuned-weights file does not fit the model it is loaded into."""


def _state(model: nn.Module) -> dict:
    return model.__dict__.setdefault("_peft_state", {})


def peft_config(model: nn.Module) -> PeftConfig | None:
    return _state(model).get("config")


def tuning_modules(model: nn.Module) -> list:
    return list(_state(model).get("modules", []))


def apply(model: nn.Module, method: str | PeftConfig = "apt", **options) -> nn.Module:
    """Attach ``method`` to every place the backbone declares, then set ``requires_grad`` by the method's policy:

    * ``full``: every parameter trains, nothing is attached;
    * ``classifier``: only the backbone's common trainable set (task heads, poolers, modal-type embeddings, class
      token);
    * any other method: the common set plus the method's own parameters; everything else is frozen.
    Returns the model (modified in place)."""
    config = method if not isinstance(method, str) else make_config(method, **options)
    if not isinstance(method, str) and options:
        raise ConfigError("pass options either inside the PeftConfig or as keywords, not both")
    if peft_config(model) is not None:
        raise RuntimeError(f"a tuning method ({peft_config(model).method}) is already applied to this model")
    spec = backbone_spec(model)
    if spec.prepare is not None:
        spec.prepare(config.method)
    modules = ATTACH[config.method](spec, config)
    device = next((p.device for p in model.parameters()), None)
    if device is not None:  # method parameters live where the backbone lives (cuda, meta, ...)
        for m in modules:
            m.to(device)
    state = _state(model)
    state.update(config=config, modules=modules, signature=dict(spec.signature))
    set_trainable(model)
    return model


def make_config(method: str, **options):
    """The options object of ``method``: its own dataclass for the methods in ``OPTION_METHODS``, else PeftConfig."""
    if method in OPTION_METHODS:
        return OPTION_METHODS[method][0].from_kwargs(**options)
    return PeftConfig.from_kwargs(method, **options)


def config_from_dict(d: dict):
    """Inverse of ``config.to_dict()`` (the ``peft`` entry of a tuned-weights JSON)."""
    method = d.get("method")
    if method in OPTION_METHODS:
        return OPTION_METHODS[method][0].from_dict(d)
    return PeftConfig.from_dict(d)


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
    if config.method == "full":
        for n, p in model.named_parameters():
            p.requires_grad_(not n.startswith(never) if never else True)
        return
    train = set(common_trainable_names(model)) | set(method_parameter_names(model))
    train = {n for n in train if not (never and n.startswith(never))}
    frozen_by_method = {id(p) for m in tuning_modules(model) for n, p in m.named_parameters()
                        if n == "log_scale" and not getattr(config, "apt_train_scale", True)}
    for n, p in model.named_parameters():
        p.requires_grad_(n in train and id(p) not in frozen_by_method)


def trainable_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    """Name -> parameter for every parameter that the applied policy trains."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def updated_parameter_count(model: nn.Module) -> int:
    """The APT paper's "Updated Parameter" column: the method's own parameters (the common trainable set is not
    counted, apt.md §2). ``full``: every parameter of the model; ``classifier``: 0."""
    config = peft_config(model)
    if config.method == "full":
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for m in tuning_modules(model) for p in m.parameters())


def merge(model: nn.Module) -> None:
    """Fold mergeable updates (LoRA) into the frozen weights: inference then costs exactly the backbone's FLOPs."""
    for m in tuning_modules(model):
        if isinstance(m, LoRAModule):
            m.merge()


def unmerge(model: nn.Module) -> None:
    for m in tuning_modules(model):
        if isinstance(m, LoRAModule):
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


def _atomic_write(path: str, write) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    _atomic_write(os.path.join(path, WEIGHTS_NAME), lambda tmp: save_file(tensors, tmp))

    def write_json(tmp):
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)

    _atomic_write(os.path.join(path, CONFIG_NAME), write_json)


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
    missing or unexpected tensors, and shape mismatches."""
    from safetensors.torch import load_file

    meta = read_tuned_config(path)
    saved_cfg = config_from_dict(meta["peft"])
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
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing:
        problems.append(f"missing tensors (the model trains them): {missing}")
    if unexpected:
        problems.append(f"unexpected tensors (not in the model): {unexpected}")
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
    for m in tuning_modules(model):
        if hasattr(m, "_key_cache"):
            m._key_cache = None
    return model


def describe(model: nn.Module) -> str:
    config = peft_config(model)
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in trainable_parameters(model).values())
    return (f"method={config.method if config else None} updated={updated_parameter_count(model) if config else 0:,} "
            f"trainable={train:,} total={total:,}")
