"""The backbones the harness knows: the one list of backbone packages to import. Each registers itself with
:func:`shared_apt.peft.registry.register_backbone` when imported (ViLT in ``vilt/profiling.py``, METER in
``meter/profiling.py``, CLIP in ``clip_apt/profiling.py``, Stable Diffusion in ``sd_apt/profiling.py``); a new
backbone adds its module here (docs/adding.md)."""
from __future__ import annotations

import importlib

from ..peft import registry

BACKBONE_MODULES = ("vilt.profiling", "meter.profiling", "clip_apt.profiling", "sd_apt.profiling")


class BackboneUnavailable(RuntimeError):
    """The backbone is unknown, or its package is not importable in this checkout."""


_errors: dict = {}


def load_all() -> None:
    """Import every known backbone package (those that fail are reported by :func:`get_backbone`)."""
    for module in BACKBONE_MODULES:
        if module in _errors:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:
            _errors[module] = e


def backbone_names() -> tuple:
    load_all()
    return registry.backbone_names()


def get_backbone(name: str) -> registry.Backbone:
    load_all()
    bb = registry.get_backbone(name)
    if bb is None:
        broken = "".join(f"; {m} failed to import: {e}" for m, e in _errors.items())
        raise BackboneUnavailable(f"unknown backbone {name!r}; choose from {sorted(registry.backbone_names())}"
                                  f"{broken}")
    return bb
