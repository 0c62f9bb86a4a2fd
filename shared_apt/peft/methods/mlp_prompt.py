"""UPT paper's "MLP" ablation (#6): the prompts are generated from U by two MLP layers instead of theta. Hidden size
and activation are unstated; reading used here: token-wise Linear(d -> hidden) -> ReLU -> Linear(hidden -> d) with
hidden = d, then UPT's split and visual Linear. ViT-B/16, 4 + 4 tokens: 4,096 + 525,312 + 393,984 = 923,392."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ..config import OPTIONAL_POSITIVE_INT, POSITIVE_INT, MethodConfig, option
from ..registry import register_method
from .prompt_learning import PROMPT_SITES, prompt_sites
from .upt import TokenMLP, UnifiedPrompts


@dataclass
class MLPPromptConfig(MethodConfig):
    """Flat (Sacred) keys ``mlp_prompt_<option>``."""

    legacy_prefix: ClassVar[str] = "mlp_prompt_"

    ctx_init: str = option("a photo of a", None, "template whose words the text tokens replace (fixes n_ctx)")
    n_ctx: Optional[int] = option(None, OPTIONAL_POSITIVE_INT, "text tokens (None: from ctx_init)", type=int)
    num_prompts: int = option(4, POSITIVE_INT, "visual prompt tokens")
    hidden: Optional[int] = option(None, OPTIONAL_POSITIVE_INT, "MLP hidden width (None: the text width)", type=int)


def attach(spec, config: MLPPromptConfig) -> list:
    sites = prompt_sites(spec, config.method)
    d = sites.text.dim
    mlp = TokenMLP(d, config.hidden or d, device=sites.text.embed.weight.device)
    return [UnifiedPrompts(config.method, sites, config.ctx_init, config.n_ctx, config.num_prompts, mlp).attach()]


register_method("mlp_prompt", MLPPromptConfig, attach, requires=PROMPT_SITES)
