"""Zero-shot CLIP (Radford et al. 2021; CoOp's ``ZeroshotCLIP``): the hand-written template per class, nothing
attached, nothing trained."""
from __future__ import annotations

from dataclasses import dataclass

from .options import MethodOptions
from .prompt_learning import prompt_sites


@dataclass
class ZeroShotConfig(MethodOptions):
    method = "zeroshot"


def attach(spec, config: ZeroShotConfig) -> list:
    prompt_sites(spec, config.method)
    return []
