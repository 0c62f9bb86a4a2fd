"""Speed options of the vision-language backbones (config keys, the same in ViLT and METER):

* ``attention_impl``: ``"sdpa"`` (default) runs attention through ``F.scaled_dot_product_attention`` (torch's fused
  kernels; fp32 outputs within 1e-5 of upstream's math), ``"explicit"`` keeps upstream's matmul / softmax / matmul;
  both apply the same padding mask and the tuning methods' extra keys/values;
* ``recompute_layers``: ``True`` recomputes each transformer layer's activations in the backward pass
  (``torch.utils.checkpoint``, non-reentrant, RNG state restored so dropout draws the same masks) instead of saving
  them: less training memory for more time, same gradients;
* ``compile_layers``: ``False`` (default), ``True`` (``torch.compile`` with its default backend, inductor) or the
  name of a ``torch.compile`` backend (e.g. ``"aot_eager"``): each transformer layer is compiled with the tuning
  method's hooks inside it.

A backbone lists its transformer layers in ``speed_layers()`` and calls them through :func:`call_layer`."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

ATTENTION_IMPLS = ("sdpa", "explicit")


def set_attention_impl(model: nn.Module, impl: str) -> int:
    """Set ``attention_impl`` on every attention module of ``model`` that has one; returns how many."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl={impl!r}: expected one of {ATTENTION_IMPLS}")
    n = 0
    for m in model.modules():
        if hasattr(m, "attention_impl"):
            m.attention_impl = impl
            n += 1
    return n


def call_layer(layer: nn.Module, *args):
    """``layer(*args)``, with its activations recomputed in backward when ``layer.recompute`` is set (training
    with gradients only)."""
    if getattr(layer, "recompute", False) and layer.training and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)


def apply_speed_options(layers: Iterable[nn.Module], model: nn.Module, attention_impl: str = "sdpa",
                        recompute_layers: bool = False, compile_layers=False) -> None:
    """The three config keys above, on ``model`` and its transformer ``layers``."""
    set_attention_impl(model, attention_impl)
    if not isinstance(recompute_layers, bool):
        raise TypeError(f"recompute_layers={recompute_layers!r}: expected True or False")
    if not (isinstance(compile_layers, (bool, str)) and compile_layers != ""):
        raise TypeError(f"compile_layers={compile_layers!r}: expected False, True or a torch.compile backend name")
    if isinstance(compile_layers, str) and compile_layers not in torch._dynamo.list_backends(exclude_tags=()):
        raise ValueError(f"compile_layers={compile_layers!r}: not a torch.compile backend; known: "
                         f"{sorted(torch._dynamo.list_backends(exclude_tags=()))}")
    for layer in layers:
        layer.recompute = recompute_layers
        if compile_layers:
            layer.compile(**({} if compile_layers is True else {"backend": compile_layers}))
