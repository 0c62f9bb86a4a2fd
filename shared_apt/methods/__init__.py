"""Every tuning method once. ``ATTACH[name](spec, config) -> list of TuningModule``."""
from . import adapter, apt, cocoop, coop, joint, lora, mlp_prompt, prompt, shared_prompt, upt, vpt, zeroshot
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

# Methods with their own option dataclass (prompt learners of CLIP-style backbones): name -> (options class, attach).
OPTION_METHODS = {
    "zeroshot": (zeroshot.ZeroShotConfig, zeroshot.attach),
    "coop": (coop.CoOpConfig, coop.attach),
    "cocoop": (cocoop.CoCoOpConfig, cocoop.attach),
    "vpt_shallow": (vpt.VPTShallowConfig, vpt.attach_shallow),
    "vpt_deep": (vpt.VPTDeepConfig, vpt.attach_deep),
    "upt": (upt.UPTConfig, upt.attach),
    "upt_deep": (upt.UPTDeepConfig, upt.attach_deep),
    "joint": (joint.JointConfig, joint.attach),
    "shared_prompt": (shared_prompt.SharedPromptConfig, shared_prompt.attach),
    "mlp_prompt": (mlp_prompt.MLPPromptConfig, mlp_prompt.attach),
}
ATTACH.update({name: attach for name, (_, attach) in OPTION_METHODS.items()})
