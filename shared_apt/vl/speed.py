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

A backbone lists its transformer layers in ``speed_layers()`` and calls them through :func:`call_layer`.

:func:`record_attention` reads the attention probabilities of a forward pass (the explicit path, forced while it
records); the figure tool (``shared_apt.harness.figures``, the APT paper's Fig. 3) draws them."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator, List

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from shared_apt.peft.sites import input_of

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


@dataclass
class AttentionRecord:
    """One call of an attention module inside :func:`record_attention`."""

    name: str               # the module's name in the model (``transformer.blocks.0.attn``)
    inputs: torch.Tensor    # its first input, the query-side hidden states X [B, N, C] (detached)
    probs: torch.Tensor     # its attention probabilities [B, heads, N, keys] (detached); keys beyond N are the
                            # extra keys/values a tuning method appended (deep prompts)


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[List[AttentionRecord]]:
    """Record the attention probabilities of every attention module of ``model`` (those with ``attention_impl``)
    while the block runs; yields the list the records are appended to, in call order.

    Inside the block the modules run their explicit path (SDPA does not return probabilities; the explicit path is
    upstream's math, within 1e-5 of SDPA), and each module must return ``(output, probabilities)`` there, as ViLT's
    ``Attention`` does; a module that returns something else is refused with an error naming it. Outputs are not
    changed. On exit the forward hooks are removed and every module's ``attention_impl`` is restored."""
    names = {m: n for n, m in model.named_modules() if hasattr(m, "attention_impl")}
    if not names:
        raise ValueError(f"{type(model).__name__} has no attention module with an attention_impl to record")
    records: List[AttentionRecord] = []

    def hook(module, args, kwargs, output):
        if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], torch.Tensor)):
            raise RuntimeError(
                f"record_attention: {names[module]} ({type(module).__name__}) did not return (output, attention "
                f"probabilities) from its explicit path; only such attention modules can be recorded")
        records.append(AttentionRecord(names[module], input_of(args, kwargs).detach(), output[1].detach()))

    saved = {m: m.attention_impl for m in names}
    handles = []
    try:
        for m in names:
            m.attention_impl = "explicit"
            handles.append(m.register_forward_hook(hook, with_kwargs=True))
        yield records
    finally:
        for h in handles:
            h.remove()
        for m, impl in saved.items():
            m.attention_impl = impl


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
