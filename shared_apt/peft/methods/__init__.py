"""Every tuning method once. ``ATTACH[name](spec, config) -> list of TuningModule``."""
from . import adapter, apt, lora, prompt
from .adapter import Adapter, ScaledParallelAdapter
from .apt import APTModule, apt_delta, apt_delta_fused
from .base import TuningModule
from .lora import LoRAModule
from .prompt import DeepPrompt, ShallowPrompt

ATTACH = {
    "full": lambda spec, config: [],
    "classifier": lambda spec, config: [],
    "shallow_prompt": prompt.attach_shallow,
    "deep_prompt": prompt.attach_deep,
    "lora": lora.attach,
    "adapter": adapter.attach_adapter,
    "scaled_pa": adapter.attach_scaled_pa,
    "apt": apt.attach,
}
