"""UPT paper's "joint training" ablation (#4, Fig. 5 / Table 2): CoOp (text context) and VPT (visual prompts) trained
together with independent parameters. ViT-B/16, CoOp m = 4 + VPT-deep n = 4: 2,048 + 36,864 = 38,912
(``vpt_deep=False``: VPT-shallow, 5,120)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ..config import OPTIONAL_POSITIVE_INT, POSITIVE_INT, MethodConfig, option
from ..registry import register_method
from . import coop, vpt
from .prompt_learning import PROMPT_SITES, prompt_sites


@dataclass
class JointConfig(MethodConfig):
    """CoOp + VPT options; flat (Sacred) keys ``joint_<option>``."""

    legacy_prefix: ClassVar[str] = "joint_"

    n_ctx: Optional[int] = option(None, OPTIONAL_POSITIVE_INT, "text context tokens (None: from ctx_init)", type=int)
    ctx_init: str = option("a photo of a", None, "CoOp init words")
    num_prompts: int = option(4, POSITIVE_INT, "visual prompt tokens")
    vpt_deep: bool = option(True, None, "VPT-deep (True) or VPT-shallow (False)")


def attach(spec, config: JointConfig) -> list:
    sites = prompt_sites(spec, config.method)
    text = coop.CoOp(sites.text, coop.CoOpConfig(n_ctx=config.n_ctx, ctx_init=config.ctx_init)).attach()
    visual = vpt.VisualPrompts(sites.visual, config.num_prompts, deep=config.vpt_deep).attach()
    return [text, visual]


register_method("joint", JointConfig, attach, requires=PROMPT_SITES)
