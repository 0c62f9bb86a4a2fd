"""Speed options of the vision-language backbones (config keys, the same in ViLT and METER):

* ``attention_impl``: ``"sdpa"`` (default) runs attention through :func:`scaled_dot_product_attention`, i.e.
  ``F.scaled_dot_product_attention`` (torch's fused kernels; fp32 outputs within 1e-5 of upstream's math) except on
  the CPU in bf16, where upstream's math in bf16 is faster than the fused CPU kernel; ``"explicit"`` keeps
  upstream's matmul / softmax / matmul; both apply the same padding mask and the tuning methods' extra keys/values;
* ``linear_impl`` (module attribute of :class:`Linear`, set with :func:`set_linear_impl`; not a config key):
  ``"onednn"`` (default) runs the frozen CPU products of the transformer layers' linear layers (fp32, or bf16 under
  CPU bf16 autocast) through oneDNN, ``"aten"`` through ``F.linear`` (ATen's BLAS);
* ``recompute_layers``: ``True`` recomputes each transformer layer's activations in the backward pass
  (``torch.utils.checkpoint``, non-reentrant, RNG state restored so dropout draws the same masks) instead of saving
  them: less training memory for more time, same gradients;
* ``compile_layers``: ``False`` (default), ``True`` (``torch.compile`` with its default backend, inductor) or the
  name of a ``torch.compile`` backend (e.g. ``"aot_eager"``): each transformer layer is compiled with the tuning
  method's hooks inside it. Off by default: a compiled layer runs its products through inductor's own (ATen) GEMMs,
  not the oneDNN ones above, each grad-mode / requires-grad combination compiles again (about a minute per graph
  for a ViLT-B block on a busy 2-core CPU), and inductor's RNG draws other dropout masks than eager (same
  distribution; ``torch._inductor.config.fallback_random = True`` gives eager's draws).

A backbone lists its transformer layers in ``speed_layers()`` and calls them through :func:`call_layer`.

:func:`record_attention` reads the attention probabilities of a forward pass (the explicit path, forced while it
records); the figure tool (``shared_apt.harness.figures``, the APT paper's Fig. 3) draws them."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator, List

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from shared_apt.peft.sites import input_of

ATTENTION_IMPLS = ("sdpa", "explicit")
LINEAR_IMPLS = ("onednn", "aten")


class _FrozenLinearOneDNN(torch.autograd.Function):
    """``x W^T + b`` for a frozen ``W`` and ``b`` through oneDNN's matrix product (``mkldnn._linear_pointwise``), and
    the input gradient ``g W`` through the same kernel (``W^T`` as a strided view). No gradient for ``W`` or ``b``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise RuntimeError("the oneDNN frozen linear (shared_apt.vl.speed.Linear, linear_impl='onednn') has no "
                               "double backward; set linear_impl='aten' (set_linear_impl) for higher-order gradients")
        (weight,) = ctx.saved_tensors
        gx = torch.ops.mkldnn._linear_pointwise(grad, weight.t(), None, "none", [], "") \
            if ctx.needs_input_grad[0] else None
        return gx, None, None


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) of the backbones' transformer layers.

    ``linear_impl = "onednn"`` (the default): while the weight and bias are frozen and the input is on the CPU, the
    product (and the input gradient) runs through oneDNN (``mkldnn._linear_pointwise``) instead of ATen's ``addmm`` /
    ``mm``:

    * fp32, autocast off: fp32 products with fp32 accumulation (only the summation order differs from ATen's BLAS).
      On this project's AMD EPYC machine MKL's fp32 GEMM is about 2.2x slower than oneDNN's at ViLT-B's sizes (README
      "Speed and memory");
    * under CPU bf16 autocast: what autocast does to ``F.linear`` (input, weight and bias cast to bf16, fp32
      accumulation, bf16 output, the input gradient in bf16), with the bias added inside the product instead of
      ATen's separate copy of the bias into the output (README "Speed and memory": measured 5-7 % less time per
      product on one core).

    ``"aten"`` is ``F.linear`` always. Trainable weights, other dtypes or autocast dtypes, GPUs, ``torch.compile``
    and torch builds without oneDNN always take ``F.linear``."""

    linear_impl = "onednn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear_impl == "onednn" and self._frozen_cpu(x):
            if not torch.is_autocast_enabled("cpu"):
                if x.dtype == self.weight.dtype == torch.float32:
                    return _FrozenLinearOneDNN.apply(x, self.weight, self.bias)
            elif torch.get_autocast_dtype("cpu") == torch.bfloat16 and x.is_floating_point() \
                    and self.weight.dtype == torch.float32:
                bf16 = torch.bfloat16
                return _FrozenLinearOneDNN.apply(x.to(bf16), self.weight.to(bf16),
                                                 None if self.bias is None else self.bias.to(bf16))
        if self.linear_impl not in LINEAR_IMPLS:
            raise ValueError(f"linear_impl={self.linear_impl!r}: expected one of {LINEAR_IMPLS}")
        return F.linear(x, self.weight, self.bias)

    def _frozen_cpu(self, x: torch.Tensor) -> bool:
        w, b = self.weight, self.bias
        return (x.device.type == "cpu" and not w.requires_grad and (b is None or not b.requires_grad)
                and not torch.compiler.is_compiling() and torch.backends.mkldnn.is_available())


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask=None,
                                 dropout_p: float = 0.0, scale: float | None = None) -> torch.Tensor:
    """The backbones' ``attention_impl = "sdpa"`` path: ``F.scaled_dot_product_attention``, except on the CPU in bf16
    (bf16 autocast on, or q, k, v in bf16, and not while ``torch.compile`` traces), where it runs the explicit math in
    bf16 as upstream's attention does under autocast: ``softmax(mask(q k^T * scale)) v`` with bf16 products (fp32
    accumulation), a bf16 softmax and the mask added in place (bool: ``-inf`` where False; float: as given). torch's
    fused CPU kernel is about 2.3x slower there (ViLT-B/32 sizes, forward + backward; README "Speed and memory"): it
    runs its softmax in fp32 on blocks, which is more accurate (max error against fp32 about 0.25x the explicit
    bf16 math's) but not what autocast gives upstream's attention. Same arguments as the torch function (no
    ``is_causal``)."""
    if not (q.device.type == "cpu" and not torch.compiler.is_compiling()
            and (torch.get_autocast_dtype("cpu") == torch.bfloat16 if torch.is_autocast_enabled("cpu")
                 else q.dtype == k.dtype == v.dtype == torch.bfloat16)):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
    bf16 = torch.bfloat16
    with torch.autocast("cpu", enabled=False):
        q, k, v = q.to(bf16), k.to(bf16), v.to(bf16)
        scores = torch.matmul(q, k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5 if scale is None else scale)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:  # as an additive mask (same values; one pass less than masked_fill_)
                attn_mask = torch.zeros(attn_mask.shape, dtype=bf16).masked_fill_(~attn_mask, float("-inf"))
            scores.add_(attn_mask.to(bf16))
        probs = scores.softmax(dim=-1)
        if dropout_p > 0.0:
            probs = F.dropout(probs, dropout_p)
        return torch.matmul(probs, v)


def set_linear_impl(model: nn.Module, impl: str) -> int:
    """Set ``linear_impl`` on every :class:`Linear` of ``model``; returns how many."""
    if impl not in LINEAR_IMPLS:
        raise ValueError(f"linear_impl={impl!r}: expected one of {LINEAR_IMPLS}")
    n = 0
    for m in model.modules():
        if isinstance(m, Linear):
            m.linear_impl = impl
            n += 1
    return n


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


# The fastest precision for a model of a given width. bf16 autocast pays off where matrix products dominate; on small
# models the casts around every product cost more than they save. Measured on a 2-core AMD EPYC with AVX512-BF16
# (training step, interleaved rounds, machine shared): hidden 64 (the demo's tiny ViLT, batch 32) bf16 1.14x SLOWER
# than fp32 (measured before the CPU bf16 path of Linear / scaled_dot_product_attention); hidden 768 (ViLT-B/32 +
# APT, batch 8, n 242, both precisions through oneDNN) bf16 training step 0.67x fp32's, inference 0.85x (README
# "Speed and memory"). The rule is for training runs (the demo, the NLVR bench).
BF16_MIN_HIDDEN = 512


def cpu_bf16_instructions() -> tuple:
    """This CPU's native bf16 dot-product instructions as torch detects them: ``"amx"`` (AMX tiles) and / or
    ``"avx512_bf16"``; empty where oneDNN would only emulate bf16 (no speed-up to expect)."""
    return tuple(name for name, has in (("amx", torch.cpu._is_amx_tile_supported()),
                                        ("avx512_bf16", torch.cpu._is_avx512_bf16_supported())) if has)


def fastest_precision(device_type: str, hidden_size: int) -> tuple:
    """``(precision, why)``: the ``precision`` config value of the fastest path for a model of ``hidden_size`` on
    ``device_type`` ("cpu" or "cuda"), and one line naming the path (precision and attention) and the reason.

    bf16 mixed precision (``"bf16"``) on a CPU with native bf16 instructions, fp16 mixed precision (``16``) on a CUDA
    GPU (not measured in this project), both only from ``BF16_MIN_HIDDEN`` on; 32 otherwise. Attention is the SDPA path in every case (the
    ``attention_impl`` default)."""
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"device_type={device_type!r}: expected 'cpu' or 'cuda'")
    if device_type == "cpu":
        found = cpu_bf16_instructions()
        if not found:
            return 32, "fp32 + SDPA attention (this CPU has no native bf16 instructions: bf16 would be emulated)"
        unit = "/".join(found)
        if hidden_size < BF16_MIN_HIDDEN:
            return 32, (f"fp32 + SDPA attention (the CPU has {unit}, but at hidden size {hidden_size} < "
                        f"{BF16_MIN_HIDDEN} bf16 autocast is slower than fp32)")
        return "bf16", f"bf16 autocast ({unit}) + SDPA attention"
    if hidden_size < BF16_MIN_HIDDEN:
        return 32, (f"fp32 + SDPA attention (hidden size {hidden_size} < {BF16_MIN_HIDDEN}: mixed precision "
                    "gains nothing)")
    return 16, "fp16 autocast + SDPA attention (CUDA)"
