"""Sacred glue for the method registry, shared by every backbone's config: the tuning-method options as top-level
keys and the named configs ``peft_<method>``, both derived from shared_apt.peft.registry (a method registered
later, even after the backbone's config module was imported, gets its keys and named config too).

    add_peft_config(ex)   # in a backbone's config module, after its main config scope

* top-level keys: every method's flat keys (``with peft=apt num_prompts=200 apt_rank=4``), default None = "the
  method's default" (shared_apt.peft.config.options_from_config overlays them on ``peft_options``);
* ``peft_<method>``: ``peft=<method>``, ``peft_options`` = the method's paper settings (its ``paper_options`` under
  their flat keys) and ``peft_lr_scale``: methods that train only their own modules train at 5x the task's upstream
  learning rate (the APT paper's setting, docs/methods.md); full tuning keeps the upstream recipe."""
from __future__ import annotations

from sacred.config.config_dict import ConfigDict
from sacred.config.utils import normalize_or_die
from sacred.utils import iterate_flattened

from shared_apt.peft.registry import flat_option_keys, on_method_registered

PEFT_LR_SCALE = 5


class _FlatKeys(ConfigDict):
    """A config entry whose keys are read from the registry each time a run is created."""

    def __init__(self):
        super().__init__(self._keys())

    @staticmethod
    def _keys() -> dict:
        return {k: None for k in flat_option_keys()}

    def __call__(self, fixed=None, preset=None, fallback=None):
        self._conf = normalize_or_die(self._keys())
        summary = super().__call__(fixed, preset, fallback)
        # Sacred reports a command-line key as unknown when no config entry has it: it intersects the entries'
        # "added" sets, so this entry reports every key it does not define (ConfigDict would report none).
        summary.added = {k for k, _ in iterate_flattened(fixed or {}) if k.split(".")[0] not in self._conf}
        return summary


def named_peft_config(entry) -> dict:
    return dict(peft=entry.name, peft_options=entry.config.paper_settings(),
                peft_lr_scale=1 if entry.trains_backbone else PEFT_LR_SCALE)


def add_peft_config(ex) -> None:
    """Top-level option keys and the ``peft_<method>`` named configs of every registered method (now and later)."""
    ex.configurations.append(_FlatKeys())

    def add(entry):
        if f"peft_{entry.name}" not in ex.named_configs:
            ex.add_named_config(f"peft_{entry.name}", named_peft_config(entry))

    on_method_registered(add)
