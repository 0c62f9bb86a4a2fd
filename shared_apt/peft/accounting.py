"""FLOPs in the APT paper's convention, measured with torch's own counter on the real modules.

The paper's "Additional FLOPs" follow fvcore's defaults (docs/accounting.md): one multiply-accumulate counts 1, LayerNorm
counts 5 per element, element-wise ops (softmax, ReLU, GELU, max, exp, add, mul) count 0. torch.utils.flop_counter
counts 2 per multiply-accumulate and skips LayerNorm; ``count_macs`` converts (halves) and adds LayerNorm."""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def _layer_norm_flops(input_shape, normalized_shape, *args, out_shape=None, **kwargs) -> int:
    numel = 1
    for s in input_shape:
        numel *= int(s)
    return 2 * 5 * numel  # halved below like every other op: 5 per element


CUSTOM = {torch.ops.aten.native_layer_norm: _layer_norm_flops}


def count_macs(fn: Callable, *args, **kwargs) -> int:
    """Run ``fn(*args, **kwargs)`` (e.g. on the meta device) and return its cost in fvcore-convention MACs."""
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM)
    with counter:
        fn(*args, **kwargs)
    total = counter.get_total_flops()
    return total // 2
