"""UPT paper's "shared prompts" ablation (#5): one prompt set for both modalities, no transformation. The paper does
not say how the widths (text 512, image 768) are reconciled; reading used here (the pattern of the released UPT): U
(n x text width) is the text context as is, and a learnable Linear(text width -> image width) of the same U gives the
visual prompts (shallow, before ``ln_pre``). ViT-B/16, n = 4: 2,048 + 393,984 = 396,032."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ..config import OPTIONAL_POSITIVE_INT, MethodConfig, option
from ..registry import register_method
from .prompt_learning import PROMPT_SITES, prompt_sites
from .upt import UnifiedPrompts


@dataclass
class SharedPromptConfig(MethodConfig):
    """Flat (Sacred) keys ``shared_prompt_<option>``."""

    legacy_prefix: ClassVar[str] = "shared_prompt_"

    ctx_init: str = option("a photo of a", None, "template whose words the shared tokens replace (fixes n)")
    n_ctx: Optional[int] = option(None, OPTIONAL_POSITIVE_INT, "shared tokens (None: from ctx_init)", type=int)


def attach(spec, config: SharedPromptConfig) -> list:
    sites = prompt_sites(spec, config.method)
    return [UnifiedPrompts(config.method, sites, config.ctx_init, config.n_ctx, 0, None, shared=True).attach()]


register_method("shared_prompt", SharedPromptConfig, attach, requires=PROMPT_SITES)
