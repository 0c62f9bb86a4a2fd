"""Reading upstream and project checkpoints safely, and loading state dicts with every difference named."""
from __future__ import annotations

import logging
import os
import pickle
from typing import Iterable

import torch
from torch import nn

from shared_apt.peft.atomic import atomic_write

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


class _AllowedStandIn:
    """Stand-in type for class references that official Lightning 1.x checkpoints pickle (the callbacks dict is keyed
    by callback classes). Only the reference is unpickled, never code."""


# Globals found in official ViLT / METER checkpoints (Lightning 1.1-1.3): callback classes used as dict keys, the
# hyper-parameter container, and numpy scalars in callback state.
_ALLOWED_NAMES = [
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
]


def _safe_globals() -> list:
    allowed: list = [(_AllowedStandIn, name) for name in _ALLOWED_NAMES]
    try:
        import numpy as np

        allowed += [np.dtype, np.core.multiarray.scalar if hasattr(np, "core") else None]
        allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64")]
    except Exception:  # numpy layout differs between versions; the tensors never need it
        pass
    return [a for a in allowed if a is not None]


def load_checkpoint(path: str, trust: bool = False, map_location="cpu") -> dict:
    """Load a ``.ckpt``/``.pt`` file with torch's weights-only unpickler and an explicit allowlist.

    ``trust=True`` falls back to full unpickling (only for files you made or trust: it can run code)."""
    if not path or not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise CheckpointError(f"checkpoint {path!r} is corrupt or not a PyTorch checkpoint: "
                                  f"{str(e).splitlines()[-3] if len(str(e).splitlines()) > 3 else e}") from e
        if trust:
            log.warning("checkpoint %s needs full unpickling (trust_checkpoint=True): %s", path, e)
            return torch.load(path, map_location=map_location, weights_only=False)
        glob = next((l.strip() for l in str(e).splitlines() if "Unsupported global" in l), str(e))
        raise CheckpointError(
            f"checkpoint {path!r} contains objects outside the safe allowlist ({glob}). If you trust this file, "
            "set trust_checkpoint=True to load it with full unpickling."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a PyTorch checkpoint: {e}") from e


def state_dict_of(ckpt, path: str = "<checkpoint>") -> dict:
    if isinstance(ckpt, dict) and "state_dict" in ckpt and isinstance(ckpt["state_dict"], dict):
        return ckpt["state_dict"]
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    keys = list(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(f"checkpoint {path!r} has no 'state_dict' entry (top-level: {keys})")


def load_state_dict_checked(model: nn.Module, state_dict: dict, source: str = "<state_dict>",
                            ignore: Iterable[str] = (), strict: bool = False):
    """Load like ``strict=False`` upstream, but name every difference: shape mismatches raise (listing all of them),
    missing and unexpected keys are logged by name (and raise when ``strict``). Returns (missing, unexpected)."""
    ignore = set(ignore)
    own = model.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        raise CheckpointError(f"{source}: {len(mismatched)} tensor(s) have other shapes than the model:\n  "
                              + "\n  ".join(mismatched))
    missing = sorted(k for k in own if k not in state_dict and k not in ignore)
    unexpected = sorted(k for k in state_dict if k not in own and k not in ignore)
    if strict and (missing or unexpected):
        raise CheckpointError(f"{source}: missing keys {missing}; unexpected keys {unexpected}")
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    if missing:
        log.info("%s: %d model tensor(s) not in the checkpoint (kept as initialised): %s", source, len(missing),
                 _short(missing))
    if unexpected:
        log.info("%s: %d checkpoint tensor(s) unused by this model: %s", source, len(unexpected), _short(unexpected))
    return missing, unexpected


def _short(names: list, n: int = 12) -> str:
    return ", ".join(names[:n]) + (f", ... (+{len(names) - n})" if len(names) > n else "")


def save_atomic(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves a half-written file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
