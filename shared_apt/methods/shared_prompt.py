"""UPT paper's "shared prompts" ablation (#5): one prompt set for both modalities, no transformation. The paper does
not say how the widths (text 512, image 768) are reconciled; reading used here (the pattern of the released UPT): U
(n x text width) is the text context as is, and a learnable Linear(text width -> image width) of the same U gives the
visual prompts (shallow, before ``ln_pre``). ViT-B/16, n = 4: 2,048 + 393,984 = 396,032."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .options import MethodOptions, positive_int
from .prompt_learning import prompt_sites
from .upt import UnifiedPrompts


@dataclass
class SharedPromptConfig(MethodOptions):
    method = "shared_prompt"
    ctx_init: str = "a photo of a"   # template whose words the shared tokens replace (fixes n)
    n_ctx: Optional[int] = None

    def check(self) -> list:
        return [] if self.n_ctx is None or positive_int(self.n_ctx) else [
            ("n_ctx", self.n_ctx, "an integer >= 1 or None")]


def attach(spec, config: SharedPromptConfig) -> list:
    sites = prompt_sites(spec, config.method)
    return [UnifiedPrompts(config.method, sites, config.ctx_init, config.n_ctx, 0, None, shared=True).attach()]
