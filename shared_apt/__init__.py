"""shared_apt: every parameter-efficient tuning method of the APT paper once, for any backbone that declares its
attention layers. Three layers, imports pointing down only:

* :mod:`shared_apt.peft`: the method library (registries, sites, methods, API, accounting), torch only;
* :mod:`shared_apt.vl`: the vision-language framework ViLT and METER train with (data, training, heads, checkpoints,
  the APT authors' checkpoint layout);
* :mod:`shared_apt.harness`: profile / bench command lines and the experiments.

The public API below is the method library's (plus ``load_official`` / ``export_official``, imported from
``shared_apt.vl.official`` on first use); how to add a method or a backbone: docs/adding.md."""
from . import logs as _logs

_logs.configure()  # the project's loggers, not the root logger's level, decide what is shown (shared_apt.logs)
from .peft.api import (apply, describe, load_tuned, merge, peft_config, remove, save_tuned, set_trainable,  # noqa: E402
                       trainable_parameters, tuned_state_dict, tuning_modules, unmerge, updated_parameter_count,
                       TunedWeightsError)
from .peft.config import ConfigError, MethodConfig, PeftConfig, option  # noqa: E402
from .peft.registry import (Backbone, general_method_names, get_method, method_names, register_backbone,  # noqa: E402
                            register_method, unregister_method)
from .peft.sites import AttentionSite, BackboneSpec, LinearSlot, PromptSites, SequenceSite  # noqa: E402

# The APT paper's methods (the built-in registrations that every backbone supports), in table order;
# method_names() also lists the class-prompt learners (CLIP) and methods registered later.
METHODS = general_method_names()

_FROM_VL = {"load_official", "export_official", "OfficialCheckpointError"}


def __getattr__(name):
    """The authors'-checkpoint functions live in the vision-language layer; importing them lazily keeps
    ``import shared_apt`` (the method library) free of it."""
    if name in _FROM_VL:
        from .vl import official

        return getattr(official, name)
    raise AttributeError(f"module 'shared_apt' has no attribute {name!r}")


__all__ = [
    "apply", "describe", "load_tuned", "merge", "peft_config", "remove", "save_tuned", "set_trainable",
    "trainable_parameters", "tuned_state_dict", "tuning_modules", "unmerge", "updated_parameter_count",
    "TunedWeightsError", "METHODS", "ConfigError", "MethodConfig", "PeftConfig", "option", "Backbone",
    "general_method_names", "get_method", "method_names", "register_backbone", "register_method", "unregister_method", "AttentionSite",
    "BackboneSpec", "LinearSlot", "PromptSites", "SequenceSite", "load_official", "export_official", "OfficialCheckpointError",
]
