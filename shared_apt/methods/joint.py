"""UPT paper's "joint training" ablation (#4, Fig. 5 / Table 2): CoOp (text context) and VPT (visual prompts) trained
together with independent parameters. ViT-B/16, CoOp m = 4 + VPT-deep n = 4: 2,048 + 36,864 = 38,912
(``vpt_deep=False``: VPT-shallow, 5,120)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import coop, vpt
from .options import MethodOptions, positive_int
from .prompt_learning import prompt_sites


@dataclass
class JointConfig(MethodOptions):
    method = "joint"
    n_ctx: Optional[int] = None
    ctx_init: str = "a photo of a"
    num_prompts: int = 4
    vpt_deep: bool = True

    def check(self) -> list:
        bad = [] if positive_int(self.num_prompts) else [("num_prompts", self.num_prompts, "an integer >= 1")]
        if self.n_ctx is not None and not positive_int(self.n_ctx):
            bad.append(("n_ctx", self.n_ctx, "an integer >= 1 or None"))
        return bad


def attach(spec, config: JointConfig) -> list:
    sites = prompt_sites(spec, config.method)
    text = coop.CoOp(sites.text, coop.CoOpConfig(n_ctx=config.n_ctx, ctx_init=config.ctx_init)).attach()
    visual = vpt.VisualPrompts(sites.visual, config.num_prompts, deep=config.vpt_deep).attach()
    return [text, visual]
