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
    lora_rank = None  # noqa: F841
    lora_dropout = None  # noqa: F841
    lora_targets = None  # noqa: F841
    adapter_bottleneck = None  # noqa: F841
    pa_bottleneck = None  # noqa: F841
    pa_scale = None  # noqa: F841
    prompt_placement = None  # noqa: F841
