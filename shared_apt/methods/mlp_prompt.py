"""UPT paper's "MLP" ablation (#6): the prompts are generated from U by two MLP layers instead of theta. Hidden size
and activation are unstated; reading used here: token-wise Linear(d -> hidden) -> ReLU -> Linear(hidden -> d) with
hidden = d, then UPT's split and visual Linear. ViT-B/16, 4 + 4 tokens: 4,096 + 525,312 + 393,984 = 923,392."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .options import MethodOptions, positive_int
from .prompt_learning import prompt_sites
from .upt import TokenMLP, UnifiedPrompts


@dataclass
class MLPPromptConfig(MethodOptions):
    method = "mlp_prompt"
    ctx_init: str = "a photo of a"
    n_ctx: Optional[int] = None
    num_prompts: int = 4
    hidden: Optional[int] = None     # None: the text width

    def check(self) -> list:
        bad = [] if positive_int(self.num_prompts) else [("num_prompts", self.num_prompts, "an integer >= 1")]
        for k in ("n_ctx", "hidden"):
            v = getattr(self, k)
            if v is not None and not positive_int(v):
                bad.append((k, v, "an integer >= 1 or None"))
        return bad


def attach(spec, config: MLPPromptConfig) -> list:
    sites = prompt_sites(spec, config.method)
    d = sites.text.dim
    mlp = TokenMLP(d, config.hidden or d, device=sites.text.embed.weight.device)
    return [UnifiedPrompts(config.method, sites, config.ctx_init, config.n_ctx, config.num_prompts, mlp).attach()]
