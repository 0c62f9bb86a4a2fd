"""Sacred config scope shared by every backbone's config: the tuning-method options as top-level keys.

``ex.config(peft_option_keys)`` lets users write ``with peft=apt num_prompts=200 apt_rank=4``; None means "the
method's default" (shared_apt.config.options_from_config overlays these on ``peft_options``). The names are
shared_apt.PeftConfig's fields; a test keeps the two lists equal."""


def peft_option_keys():
    num_prompts = None  # noqa: F841  (Sacred reads the locals of this function)
    apt_rank = None  # noqa: F841
    apt_variant = None  # noqa: F841
    apt_alpha = None  # noqa: F841
    apt_detach_alpha = None  # noqa: F841
    apt_train_scale = None  # noqa: F841
    apt_dropout = None  # noqa: F841
    apt_fast = None  # noqa: F841
    apt_gate = None  # noqa: F841
    lora_rank = None  # noqa: F841
    lora_dropout = None  # noqa: F841
    lora_targets = None  # noqa: F841
    adapter_bottleneck = None  # noqa: F841
    pa_bottleneck = None  # noqa: F841
    pa_scale = None  # noqa: F841
    prompt_placement = None  # noqa: F841
    deep_prompt_sites = None  # noqa: F841


# The tuning methods with the APT paper's settings (apt.md §1.7, §2), the same for every backbone: PETL methods train
# at 5x the task's upstream learning rate (peft_lr_scale, so the order of named configs does not matter); full tuning
# keeps the upstream recipe.
PEFT_METHOD_OPTIONS = {
    "full": {}, "classifier": {}, "shallow_prompt": {"num_prompts": 200}, "deep_prompt": {"num_prompts": 200},
    "lora": {"lora_rank": 4, "lora_dropout": 0.1}, "adapter": {"adapter_bottleneck": 96},
    "scaled_pa": {"pa_bottleneck": 96, "pa_scale": 4.0}, "apt": {"num_prompts": 200, "apt_rank": 4},
}


def add_peft_named_configs(ex) -> None:
    """Named configs ``peft_<method>`` for every method."""
    for method, options in PEFT_METHOD_OPTIONS.items():
        ex.add_named_config(f"peft_{method}", dict(peft=method, peft_options=dict(options),
                                                   peft_lr_scale=1 if method == "full" else 5))
