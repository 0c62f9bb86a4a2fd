"""Tuning-method configuration: one dataclass, validated, serialisable to JSON.

Defaults are the APT paper's settings (fact sheet apt.md): p = 200 prompts, APT rank 4, LoRA rank 4 on W_q and W_v,
adapter and scaled-PA bottleneck 96, scaled-PA scale 4.0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

METHODS = ("full", "classifier", "shallow_prompt", "deep_prompt", "lora", "adapter", "scaled_pa", "apt")
POLICIES_WITHOUT_MODULES = ("full", "classifier")

APT_VARIANTS = ("lowrank", "identity", "dense")
APT_ALPHA_MODES = ("token", "prompt", "global", "none")
PROMPT_PLACEMENTS = ("default", "append", "prepend")
DEEP_PROMPT_SITES = ("all", "cross")


class ConfigError(ValueError):
    """A method option is unknown or out of range."""


@dataclass
class PeftConfig:
    method: str = "apt"
    num_prompts: int = 200          # p: shallow / deep prompt tokens, APT prompts per module
    apt_rank: int = 4               # r of W1 (d x r) and W2 (r x d)
    apt_variant: str = "lowrank"    # Table 3: "lowrank" K = P'W1W2 + P'; "identity" K = P'; "dense" K = P' + Linear(P')
    apt_alpha: str = "token"        # alpha = row max of ReLU(XK^T) per input token (official); ablations: prompt/global/none
    apt_detach_alpha: bool = True   # official: alpha carries no gradient
    apt_train_scale: Any = None     # None: as the authors' code per backbone (ViLT trains s, METER's name filter
                                    # leaves it frozen); True (the paper: s is learnable) / False force it
    apt_dropout: float = 0.0        # dropout on A (the modules' attention dropout, 0 for ViLT and METER)
    apt_fast: bool = True           # use the fused kernel (same math as shared_apt.methods.apt.apt_delta)
    apt_gate: bool = False          # zero-start gate: dX is multiplied by a scalar g initialised to 0 (starts at the base)
    lora_rank: int = 4
    lora_dropout: float = 0.1
    lora_targets: tuple = ("q", "v")
    adapter_bottleneck: int = 96
    pa_bottleneck: int = 96
    pa_scale: float = 4.0
    prompt_placement: str = "default"  # shallow prompt: backbone default (ViLT append, METER prepend) or forced
    deep_prompt_sites: str = "all"     # deep prompt: every attention (paper) or "cross"-attentions only (METER official code)

    # --------------------------------------------------------------------------------------------------
    def __post_init__(self):
        if not isinstance(self.lora_targets, (list, tuple)):
            raise ConfigError(f"peft option lora_targets={self.lora_targets!r} is invalid: expected a list such as "
                              "['q', 'v']")
        self.lora_targets = tuple(self.lora_targets)
        self.validate()

    def validate(self) -> None:
        def need(cond, key, value, expected):
            if not cond:
                raise ConfigError(f"peft option {key}={value!r} is invalid: expected {expected}")

        # types first (bool is an int in Python, and a string compared with a number raises a bare TypeError)
        for f in fields(self):
            v = getattr(self, f.name)
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if kind == "int":
                need(isinstance(v, int) and not isinstance(v, bool), f.name, v, "an integer")
            elif kind == "float":
                need(isinstance(v, (int, float)) and not isinstance(v, bool), f.name, v, "a number")
            elif kind == "bool":
                need(isinstance(v, bool), f.name, v, "True or False")
            elif kind == "str":
                need(isinstance(v, str), f.name, v, "a string")

        need(self.method in METHODS, "method", self.method, f"one of {', '.join(METHODS)}")
        need(isinstance(self.num_prompts, int) and self.num_prompts >= 1, "num_prompts", self.num_prompts, "an integer >= 1")
        need(isinstance(self.apt_rank, int) and self.apt_rank >= 1, "apt_rank", self.apt_rank, "an integer >= 1")
        need(self.apt_variant in APT_VARIANTS, "apt_variant", self.apt_variant, f"one of {APT_VARIANTS}")
        need(self.apt_alpha in APT_ALPHA_MODES, "apt_alpha", self.apt_alpha, f"one of {APT_ALPHA_MODES}")
        need(self.apt_train_scale is None or isinstance(self.apt_train_scale, bool), "apt_train_scale", self.apt_train_scale,
             "None (the backbone's official choice), True or False")
        need(0.0 <= self.apt_dropout < 1.0, "apt_dropout", self.apt_dropout, "a probability in [0, 1)")
        need(isinstance(self.lora_rank, int) and self.lora_rank >= 1, "lora_rank", self.lora_rank, "an integer >= 1")
        need(0.0 <= self.lora_dropout < 1.0, "lora_dropout", self.lora_dropout, "a probability in [0, 1)")
        need(
            len(self.lora_targets) >= 1 and set(self.lora_targets) <= {"q", "k", "v", "o"},
            "lora_targets", self.lora_targets, "a non-empty subset of ('q', 'k', 'v', 'o')",
        )
        need(isinstance(self.adapter_bottleneck, int) and self.adapter_bottleneck >= 1,
             "adapter_bottleneck", self.adapter_bottleneck, "an integer >= 1")
        need(isinstance(self.pa_bottleneck, int) and self.pa_bottleneck >= 1,
             "pa_bottleneck", self.pa_bottleneck, "an integer >= 1")
        need(self.deep_prompt_sites in DEEP_PROMPT_SITES, "deep_prompt_sites", self.deep_prompt_sites,
             f"one of {DEEP_PROMPT_SITES}")
        need(self.prompt_placement in PROMPT_PLACEMENTS, "prompt_placement", self.prompt_placement,
             f"one of {PROMPT_PLACEMENTS}")

    # --------------------------------------------------------------------------------------------------
    @classmethod
    def from_kwargs(cls, method: str, **options: Any) -> "PeftConfig":
        """Build from ``apply(model, method, **options)``; ``rank`` and ``bottleneck`` are aliases for the active
        method's own option (``rank`` = apt_rank or lora_rank; ``bottleneck`` = adapter or PA bottleneck)."""
        options = dict(options)
        if "rank" in options:
            key = {"apt": "apt_rank", "lora": "lora_rank"}.get(method)
            if key is None:
                raise ConfigError(f"option rank={options['rank']!r} has no meaning for method {method!r} (apt, lora)")
            options[key] = options.pop("rank")
        if "bottleneck" in options:
            key = {"adapter": "adapter_bottleneck", "scaled_pa": "pa_bottleneck"}.get(method)
            if key is None:
                raise ConfigError(
                    f"option bottleneck={options['bottleneck']!r} has no meaning for method {method!r} (adapter, scaled_pa)"
                )
            options[key] = options.pop("bottleneck")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown peft option(s) {unknown}; known options: {sorted(known - {'method'})}")
        return cls(method=method, **options)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PeftConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown peft option(s) {unknown} in saved config")
        return cls(**d)

    def relevant(self) -> dict:
        """The options that change the attached modules (used to compare a saved file with a model)."""
        prefix = {
            "apt": ("num_prompts", "apt_"), "shallow_prompt": ("num_prompts", "prompt_placement"),
            "deep_prompt": ("num_prompts", "deep_prompt_sites"), "lora": ("lora_rank", "lora_targets"),
            "adapter": ("adapter_bottleneck",), "scaled_pa": ("pa_bottleneck", "pa_scale"),
        }.get(self.method, ())
        d = self.to_dict()
        out = {"method": self.method}
        for k, v in d.items():
            if any(k == p or (p.endswith("_") and k.startswith(p)) for p in prefix) and k != "apt_fast":
                out[k] = v
        return out


# Every option can also be a top-level key of a backbone's Sacred config (``with peft=apt num_prompts=200
# apt_rank=4``); None there means "the method's default". ``peft_options`` (a dict) is the other way to give them.
OPTION_KEYS = tuple(f.name for f in fields(PeftConfig) if f.name != "method")


def options_from_config(config: dict) -> dict:
    """The tuning-method options of a backbone config: ``peft_options`` overlaid with the top-level option keys."""
    options = dict(config.get("peft_options") or {})
    options.update({k: config[k] for k in OPTION_KEYS if config.get(k) is not None})
    return options
