"""shared_apt: every parameter-efficient tuning method of the APT paper once, for any backbone that declares its
attention layers (see shared_apt.sites)."""
from . import logs as _logs

_logs.configure()  # the project's loggers, not the root logger's level, decide what is shown (shared_apt.logs)
from .api import (apply, describe, load_tuned, merge, peft_config, remove, save_tuned, set_trainable,
                  trainable_parameters, tuned_state_dict, tuning_modules, unmerge, updated_parameter_count,
                  TunedWeightsError)
from .official import OfficialCheckpointError, export_official, load_official
from .config import METHODS, ConfigError, PeftConfig
from .sites import AttentionSite, BackboneSpec, LinearSlot, SequenceSite

__all__ = [
    "apply", "describe", "load_tuned", "merge", "peft_config", "remove", "save_tuned", "set_trainable",
    "trainable_parameters", "tuned_state_dict", "tuning_modules", "unmerge", "updated_parameter_count",
    "TunedWeightsError", "METHODS", "ConfigError", "PeftConfig", "AttentionSite", "BackboneSpec", "LinearSlot",
    "SequenceSite", "load_official", "export_official", "OfficialCheckpointError",
]
