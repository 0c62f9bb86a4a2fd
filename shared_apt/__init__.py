"""shared_apt: every parameter-efficient tuning method of the APT paper once, for any backbone that declares its
attention layers. Three layers, imports pointing down only:

* :mod:`shared_apt.peft`: the method library (registries, sites, methods, API, accounting), torch only;
* :mod:`shared_apt.vl`: the vision-language framework ViLT and METER train with (data, training, heads, checkpoints);
* :mod:`shared_apt.harness`: profile / bench command lines and the experiments.

The public API below is the method library's; how to add a method or a backbone: docs/adding.md."""
from .peft.api import (apply, describe, load_tuned, merge, peft_config, remove, save_tuned, set_trainable,
                       trainable_parameters, tuned_state_dict, tuning_modules, unmerge, updated_parameter_count,
                       TunedWeightsError)
from .peft.config import ConfigError, MethodConfig, PeftConfig, option
from .peft.registry import (Backbone, get_method, method_names, register_backbone, register_method,
                            unregister_method)
from .peft.sites import AttentionSite, BackboneSpec, LinearSlot, SequenceSite

# The APT paper's methods (the built-in registrations), in table order; method_names() also lists methods
# registered later.
METHODS = method_names()

__all__ = [
    "apply", "describe", "load_tuned", "merge", "peft_config", "remove", "save_tuned", "set_trainable",
    "trainable_parameters", "tuned_state_dict", "tuning_modules", "unmerge", "updated_parameter_count",
    "TunedWeightsError", "METHODS", "ConfigError", "MethodConfig", "PeftConfig", "option", "Backbone",
    "get_method", "method_names", "register_backbone", "register_method", "unregister_method", "AttentionSite",
    "BackboneSpec", "LinearSlot", "SequenceSite",
]
