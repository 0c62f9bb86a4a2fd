"""The built-in tuning methods, one file per method family, each registering its methods (config dataclass +
attach) with shared_apt.peft.registry. Import order = registration order = the order of tables and ``all``."""
from . import policies  # noqa: F401  full, classifier
from . import prompt  # noqa: F401  shallow_prompt, deep_prompt
from . import lora  # noqa: F401
from . import adapter  # noqa: F401  adapter, scaled_pa
from . import apt  # noqa: F401
# Class-prompt learners (require BackboneSpec.prompt_sites: CLIP), not part of "all".
from . import zeroshot, coop, cocoop, vpt, upt, joint, shared_prompt, mlp_prompt  # noqa: F401,E401
from .adapter import Adapter, AdapterConfig, ScaledPAConfig, ScaledParallelAdapter
from .apt import APTConfig, APTModule, apt_delta, apt_delta_fused
from .base import TuningModule
from .lora import LoRAConfig, LoRAModule
from .policies import ClassifierConfig, FullConfig
from .prompt import DeepPrompt, DeepPromptConfig, ShallowPrompt, ShallowPromptConfig
