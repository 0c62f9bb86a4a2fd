"""What every method module shares: the hooks it holds, and how it is attached to a host module."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..sites import input_of


class TuningModule(nn.Module):
    """A method's parameters at one place of a backbone, plus the forward hooks that make them act there.

    Modules are registered as children of the backbone module they act on (``host``), under ``peft_<method>``, so
    their parameters have stable names in ``state_dict`` (e.g. ``transformer.blocks.0.attn.peft_apt.prompts``)."""

    method: str = ""

    def __init__(self):
        super().__init__()
        self._handles: list = []
        self.fixed_parameters: tuple = ()  # names of own parameters no policy trains (APT's scale, official METER)

    def merge(self) -> None:
        """Fold the update into the frozen weights, where the method can (LoRA); others have nothing to fold."""

    def unmerge(self) -> None:
        """Undo :meth:`merge`."""

    def reset_caches(self) -> None:
        """Forget values derived from the parameters (called after they are overwritten, e.g. by load_tuned)."""

    def register(self, host: nn.Module, suffix: str = "") -> "TuningModule":
        name = f"peft_{self.method}{suffix}"
        if hasattr(host, name):
            raise RuntimeError(f"{type(host).__name__} already has a {name!r} module: a method is attached twice")
        host.add_module(name, self)
        return self

    def hook_output(self, module: nn.Module, fn: Callable) -> None:
        """``fn(inputs, output) -> new output`` runs after ``module.forward``."""
        self._handles.append(module.register_forward_hook(lambda m, args, out: fn(args, out)))

    def hook_input(self, module: nn.Module, fn: Callable[[torch.Tensor], None]) -> None:
        """``fn(x)`` sees the first input of ``module`` before it runs (the input is not changed)."""

        def pre(m, args, kwargs):
            fn(input_of(args, kwargs))
            return None

        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))

    def detach_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class InputStash:
    """Holds the query-side input X between the pre-hook of the attention module and the hook on its output.

    Attention modules run X -> ... -> O without re-entering themselves, so one slot per site suffices; it is cleared
    as soon as O is produced so no activation outlives the forward pass."""

    def __init__(self):
        self.x: Optional[torch.Tensor] = None

    def put(self, x: torch.Tensor) -> None:
        self.x = x

    def take(self) -> torch.Tensor:
        x, self.x = self.x, None
        if x is None:
            raise RuntimeError("attention output produced without its input having been seen: check the site's "
                               "query_input module")
        return x
