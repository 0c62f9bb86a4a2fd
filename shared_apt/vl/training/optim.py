"""Optimiser and learning-rate schedule of upstream ViLT / METER (vilt/modules/vilt_utils.py ``set_schedule``;
docs/backbones.md, ViLT), on Lightning 2.x.

* Parameter groups: for the base rule and for every multiplier rule, one group with weight decay and one without
  (ViLT: 4 groups; METER passes its cross-modal and head rules: 6 groups). A parameter belongs to the first rule whose
  name fragments it contains. Only parameters with ``requires_grad`` enter the optimiser (frozen backbone weights of
  parameter-efficient methods are left out entirely); tied parameters are listed once.
* ``AdamW`` re-implements transformers 4.2.1 AdamW: bias-corrected Adam step, THEN decoupled decay on the updated
  weights (p -= lr·wd·p); betas (0.9, 0.98), eps 1e-8 as upstream passes them.
* Total steps come from ``trainer.estimated_stepping_batches`` (real optimiser steps: gradient accumulation, max_steps,
  max_epochs, number of processes are all accounted for). A float ``warmup_steps`` is a fraction of that total.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight", "norm.bias", "norm.weight", "norm1.bias", "norm1.weight",
            "norm2.bias", "norm2.weight")


class AdamW(Optimizer):
    """transformers 4.2.1 ``AdamW`` (decoupled weight decay applied after the Adam update)."""

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, correct_bias: bool = True):
        if lr < 0.0:
            raise ValueError(f"AdamW: invalid learning rate {lr} (must be >= 0)")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"AdamW: invalid betas {betas} (each must be in [0, 1))")
        if eps < 0.0:
            raise ValueError(f"AdamW: invalid eps {eps} (must be >= 0)")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size = step_size * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


# ---------------------------------------------------------------------------------------------------------------
# Schedules (transformers 4.2.1 formulas; the factor multiplies each group's own initial lr)


def polynomial_factor(step: int, warmup: int, total: int, power: float = 1.0, lr_init: float = 1.0,
                      lr_end: float = 0.0) -> float:
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if step > total or total <= warmup:
        return lr_end / lr_init
    pct_remaining = 1 - (step - warmup) / (total - warmup)
    return ((lr_init - lr_end) * pct_remaining ** power + lr_end) / lr_init


def cosine_factor(step: int, warmup: int, total: int, num_cycles: float = 0.5) -> float:
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def warmup_steps_of(warmup, total: int) -> int:
    """int → steps; float → fraction of the total optimiser steps (int(total x fraction), as upstream)."""
    if isinstance(warmup, bool):
        raise ValueError(f"warmup_steps must be an int or a float fraction, got {warmup!r}")
    if isinstance(warmup, float):
        if not 0.0 <= warmup <= 1.0:
            raise ValueError(f"warmup_steps={warmup} as a fraction must lie in [0, 1]")
        return int(total * warmup)
    if isinstance(warmup, int):
        if warmup < 0:
            raise ValueError(f"warmup_steps={warmup} must be >= 0")
        return warmup
    raise ValueError(f"warmup_steps must be an int or a float fraction, got {warmup!r}")


# ---------------------------------------------------------------------------------------------------------------
# Parameter groups


def param_groups(named_parameters: Iterable[Tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float,
                 lr_rules: Sequence[Tuple[Sequence[str], float]],
                 no_decay: Sequence[str] = NO_DECAY) -> List[dict]:
    """Groups in upstream order: [base decay, base no-decay, rule 1 decay, rule 1 no-decay, ...]. Each group carries
    a ``name`` (used by the learning-rate monitor). Only trainable parameters; shared tensors appear once."""
    groups = [{"params": [], "weight_decay": weight_decay, "lr": lr, "name": "base/decay"},
              {"params": [], "weight_decay": 0.0, "lr": lr, "name": "base/no_decay"}]
    for names, mult in lr_rules:
        tag = "+".join(names)
        groups.append({"params": [], "weight_decay": weight_decay, "lr": lr * mult, "name": f"{tag}/decay"})
        groups.append({"params": [], "weight_decay": 0.0, "lr": lr * mult, "name": f"{tag}/no_decay"})
    seen = set()
    for n, p in named_parameters:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        rule = 0
        for i, (names, _) in enumerate(lr_rules):
            if any(h in n for h in names):
                rule = i + 1
                break
        nd = any(x in n for x in no_decay)
        groups[2 * rule + (1 if nd else 0)]["params"].append(p)
    return groups


def group_names(named_parameters, lr_rules, no_decay=NO_DECAY) -> List[List[str]]:
    """Names of the parameters in each group of :func:`param_groups` (for inspection and tests)."""
    named = list(named_parameters)
    ids = {id(p): n for n, p in reversed(named)}
    return [[ids[id(p)] for p in g["params"]] for g in param_groups(named, 1.0, 0.0, lr_rules, no_decay)]


def build_optimizer(groups: List[dict], optim_type: str, lr: float) -> Optimizer:
    if optim_type == "adamw":
        return AdamW(groups, lr=lr, eps=1e-8, betas=(0.9, 0.98))
    if optim_type == "adam":
        return torch.optim.Adam(groups, lr=lr, eps=1e-8, betas=(0.9, 0.98))
    if optim_type == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    raise ValueError(f"optim_type={optim_type!r} is not one of 'adamw', 'adam', 'sgd'")


def build_scheduler(optimizer: Optimizer, total: int, warmup: int, decay_power, end_lr: float, lr: float):
    if decay_power == "cosine":
        fn = lambda s: cosine_factor(s, warmup, total)  # noqa: E731
    else:
        if isinstance(decay_power, str):
            raise ValueError(f"decay_power={decay_power!r}: use a number (polynomial power) or 'cosine'")
        if end_lr > lr:
            raise ValueError(f"end_lr ({end_lr}) must be <= learning_rate ({lr})")
        fn = lambda s: polynomial_factor(s, warmup, total, float(decay_power), lr, end_lr)  # noqa: E731
    return LambdaLR(optimizer, fn)


def total_steps_of(pl_module) -> int:
    """Real number of optimiser steps of this fit (Lightning's estimate: accumulation, max_steps, epochs)."""
    trainer = pl_module.trainer
    total = trainer.estimated_stepping_batches
    if total is None or not math.isfinite(float(total)) or total <= 0:
        raise ValueError(f"cannot derive the number of optimiser steps (estimated_stepping_batches={total}); set "
                         "max_steps or max_epoch with a finite training set")
    return int(total)


def set_schedule(pl_module, lr_rules: Optional[Sequence[Tuple[Sequence[str], float]]] = None):
    """Upstream ``set_schedule`` → Lightning ``configure_optimizers`` return value. ``lr_rules`` defaults to
    ``pl_module.lr_rules()`` (ViLT: vqa_classifier / nlvr2_classifier at lr x lr_mult). The base learning rate is
    ``learning_rate x peft_lr_scale`` (``peft_lr_scale`` defaults to 1 when absent)."""
    config = pl_module.hparams.config
    # project key: PETL named configs keep the task's learning_rate and scale it (docs/methods.md, optimisation: x5)
    scale = config.get("peft_lr_scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"peft_lr_scale={scale!r}: expected a positive number (the optimiser's base learning rate "
                         "is learning_rate x peft_lr_scale)")
    lr = float(config["learning_rate"]) * float(scale)
    wd = float(config["weight_decay"])
    rules = pl_module.lr_rules() if lr_rules is None else lr_rules
    groups = param_groups(pl_module.named_parameters(), lr, wd, rules)
    if not any(g["params"] for g in groups):
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    optimizer = build_optimizer(groups, config["optim_type"], lr)
    total = total_steps_of(pl_module)
    warmup = warmup_steps_of(config["warmup_steps"], total)
    scheduler = build_scheduler(optimizer, total, warmup, config["decay_power"], float(config["end_lr"]), lr)
    pl_module.schedule_info = {"total_steps": total, "warmup_steps": warmup}
    return [optimizer], [{"scheduler": scheduler, "interval": "step", "frequency": 1}]
