"""The two registries of the project: tuning methods and backbones. Everything that lists methods or backbones
(the public API, the tuned-weights JSON, option validation, the Sacred keys and named configs, the command lines of
profile / bench / compare) reads them from here.

Methods (as PEFT's ``register_peft_method``)::

    register_method("apt", APTConfig, attach)   # config dataclass (shared_apt.peft.config.MethodConfig), attach()

``attach(spec, config) -> [TuningModule]`` adds the method's modules to the places a backbone declares
(:class:`shared_apt.peft.sites.BackboneSpec`). Built-in methods register in ``shared_apt.peft.methods``.

Backbones (as timm's ``register_model``)::

    register_backbone(Backbone(name="vilt-b32", build=..., default_seq_len=242, tiny={...}, ...))

A backbone package registers itself when imported; the harness imports the backbone packages listed in
``shared_apt.harness.backbones``. Nothing in this module imports a backbone. How to add either: docs/adding.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Dict, Optional

from .config import ConfigError, MethodConfig, cli_type


@dataclass(frozen=True)
class Method:
    name: str
    config: type                # a MethodConfig dataclass: the method's options
    attach: Callable            # attach(spec: BackboneSpec, config) -> list of TuningModule
    trains_backbone: bool = False   # "full": every parameter trains (no modules); else the common set + modules
    requires: tuple = ()            # BackboneSpec fields the method needs beyond attention / sequence sites
    #                                 (prompt learners: "prompt_sites"); such methods are not part of "all"


_METHODS: Dict[str, Method] = {}
_METHOD_LISTENERS: list = []


def register_method(name: str, config: type, attach: Callable, *, trains_backbone: bool = False,
                    requires: tuple = ()) -> Method:
    """Register a tuning method under ``name`` (the value of ``peft=`` in configs and ``--method`` on command
    lines). ``config`` is its options dataclass (subclass of MethodConfig), ``attach(spec, config)`` returns the
    modules it attached. ``requires``: the BackboneSpec fields it needs that not every backbone declares (the
    class-prompt learners need ``prompt_sites``); :func:`general_method_names` (``all``) leaves such methods out."""
    if not (isinstance(config, type) and issubclass(config, MethodConfig) and is_dataclass(config)):
        raise TypeError(f"method {name!r}: config must be a dataclass deriving from MethodConfig, got {config!r}")
    if name in _METHODS:
        raise ValueError(f"method {name!r} is already registered (by {_METHODS[name].config.__module__})")
    if config.method and config.method != name:
        raise ValueError(f"{config.__name__} is already the config of method {config.method!r}")
    for other in _METHODS.values():  # a flat key names one option wherever it appears
        for key, opt in config.flat_keys().items():
            theirs = other.config.flat_keys().get(key)
            if theirs is not None and theirs != opt:
                raise ValueError(f"method {name!r}: flat key {key!r} means option {opt!r} here but {theirs!r} in "
                                 f"method {other.name!r}")
    config.method = name
    entry = Method(name, config, attach, trains_backbone, tuple(requires))
    _METHODS[name] = entry
    for listener in list(_METHOD_LISTENERS):
        listener(entry)
    return entry


def unregister_method(name: str) -> None:
    """Remove a method (tests that register a toy method clean up with this)."""
    entry = _METHODS.pop(name)
    entry.config.method = ""


def on_method_registered(listener: Callable[[Method], None]) -> None:
    """Call ``listener(entry)`` for every method registered from now on (and for those already registered)."""
    _METHOD_LISTENERS.append(listener)
    for entry in list(_METHODS.values()):
        listener(entry)


def get_method(name: str) -> Method:
    _builtin()
    if name not in _METHODS:
        raise ConfigError(f"peft option method={name!r} is invalid: expected one of {', '.join(_METHODS)}")
    return _METHODS[name]


def method_names() -> tuple:
    _builtin()
    return tuple(_METHODS)


def general_method_names() -> tuple:
    """The methods every backbone supports (no ``requires``): what ``all`` means on the command lines."""
    _builtin()
    return tuple(name for name, m in _METHODS.items() if not m.requires)


def parse_methods(text: str) -> list:
    """'all' (every method without backbone requirements, :func:`general_method_names`) or a comma list of method
    names, each checked."""
    if text == "all":
        return list(general_method_names())
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in method_names()]
    if bad or not methods:
        raise ConfigError(f"unknown method(s) {bad or text!r}; choose from {', '.join(method_names())}")
    return methods


def owners_of(key: str) -> list:
    """Methods that have ``key`` as an option name or a flat key."""
    _builtin()
    return [m.name for m in _METHODS.values()
            if key in m.config.option_names() or key in m.config.flat_keys()]


def flat_option_keys() -> tuple:
    """Every method's flat (Sacred) keys, in registration order, without repeats."""
    _builtin()
    return tuple(dict.fromkeys(k for m in _METHODS.values() for k in m.config.flat_keys()))


def cli_options() -> Dict[str, dict]:
    """Command-line options of every method option: ``--<name>`` for the option's own name (shared by the methods
    that have it, e.g. ``--rank`` for APT and LoRA) and ``--<flat key>`` for a flat key that differs from it
    (``--apt-variant``). -> {dest: {"type", "help", "targets": {method: option}}}."""
    _builtin()
    out: Dict[str, dict] = {}
    for m in _METHODS.values():
        by_name = {f.name: f for f in fields(m.config)}
        keys = [(n, n) for n in by_name] + [(k, n) for k, n in m.config.flat_keys().items() if k != n]
        for dest, name in keys:
            f = by_name[name]
            slot = out.setdefault(dest, {"type": cli_type(f), "help": f.metadata.get("help", ""), "targets": {}})
            slot["targets"][m.name] = name
    return out


def _builtin() -> None:
    from . import methods  # noqa: F401  (registers the built-in methods)


# ---------------------------------------------------------------------------------------------------------------
# Backbones


@dataclass(frozen=True)
class Backbone:
    """What the harness needs to know about a backbone, registered once by the backbone's own package.

    ``build(method, size="base", **options)`` returns the model with the method applied (``size``: "base" = the
    paper's geometry, "tiny" = ``tiny``; ``device=`` where the benchmark needs it); ``forward(model, seq_len)`` runs
    the part of the model every method changes without gradient (FLOP counting); for the benchmark,
    ``tokens(model, seq_len, batch=1, device="meta")`` makes the token input of ``run_tokens(model, x, mask)`` and
    ``truncate(model, layers)`` keeps the first layers (per-layer benchmarks). ``default_seq_len`` is the length the paper's FLOPs imply, ``seq_len_note`` says so (``{n}`` is
    filled in), ``notes`` are per-method footnotes of the profile table. ``extras`` holds facts used by the layers
    above (e.g. the training experiment of the comparison harness) and is opaque here."""

    name: str
    build: Callable
    forward: Callable
    backbone_parameters: Callable
    head_parameters: Callable
    default_seq_len: int
    tokens: Optional[Callable] = None       # these three: the benchmark's token-level entry (None: profile only)
    run_tokens: Optional[Callable] = None
    truncate: Optional[Callable] = None
    seq_len_note: str = ""
    notes: Dict[str, str] = field(default_factory=dict)
    tiny: Dict[str, Any] = field(default_factory=dict)
    methods: tuple = ()                     # the methods it is profiled with (empty: every registered method)
    print_exact: bool = False               # the profile also prints the integer counts
    extras: Dict[str, Any] = field(default_factory=dict)


_BACKBONES: Dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    existing = _BACKBONES.get(backbone.name)
    if existing is not None and existing is not backbone:
        raise ValueError(f"backbone {backbone.name!r} is already registered")
    _BACKBONES[backbone.name] = backbone
    return backbone


def unregister_backbone(name: str) -> None:
    _BACKBONES.pop(name)


def get_backbone(name: str) -> Optional[Backbone]:
    """The registered backbone ``name`` (None if its package has not been imported: see
    shared_apt.harness.backbones.get_backbone, which imports the known packages)."""
    return _BACKBONES.get(name)


def backbone_names() -> tuple:
    return tuple(_BACKBONES)
