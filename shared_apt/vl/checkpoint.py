"""Reading upstream and project checkpoints safely, and loading state dicts with every difference named."""
from __future__ import annotations

import logging
import os
import pickle
import re
from typing import Iterable, Optional

import torch
from torch import nn

from shared_apt.peft.atomic import TEMP_PREFIX, atomic_write, remove_stale_temp_files  # noqa: F401  (re-exported)

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
        if "unsupported global" not in str(e).lower():   # "Unsupported global" / "unsupported GLOBAL ... blocked"
            raise CheckpointError(f"checkpoint {path!r} is corrupt or not a PyTorch checkpoint: "
                                  f"{str(e).splitlines()[-3] if len(str(e).splitlines()) > 3 else e}") from e
        if trust:
            log.warning("checkpoint %s needs full unpickling (trust_checkpoint=True): %s", path, e)
            return torch.load(path, map_location=map_location, weights_only=False)
        glob = next((l.strip() for l in str(e).splitlines() if "unsupported global" in l.lower()), str(e))
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


# ---- What a load may differ in (everything else is a CheckpointError unless strict_load=False) ----------------------
# Each entry is a key prefix. The list is the one place that says which differences are expected:
#
# * UPSTREAM_LEFTOVERS, either direction, any load: text position-id buffers that upstream's transformers versions
#   store in (or leave out of) checkpoints; they are fixed aranges, never learnt.
# * PRETRAINING_HEADS, unexpected, any load: MLM / ITM / MPP heads of a pre-training checkpoint that the task being
#   tuned or evaluated does not build (upstream drops them the same way).
# * FINETUNING_HEADS, unexpected, at the start of a tuning run: upstream loads ``load_path`` before it creates the
#   task heads, so heads in the file are not used and the run starts them fresh (reported as a warning).
# * the method's own parameters (``*.peft_<method>*``), unexpected, at the start of a tuning run with the same
#   method: the method is attached after loading, so they start fresh (reported as a warning). With another method
#   they are an error naming both methods.
# * ``rank_output``, missing, when ``itm_score`` is loaded: it is re-tied to ITM row 1 (upstream's initialisation).
# At evaluation (``test_only=True``) the model is complete when the file is loaded: nothing else may be missing, so
# an evaluation never runs on randomly initialised weights.
UPSTREAM_LEFTOVERS = ("text_embeddings.position_ids", "text_transformer.embeddings.position_ids")
PRETRAINING_HEADS = ("mlm_score.", "itm_score.", "mpp_score.")
FINETUNING_HEADS = ("vqa_classifier.", "nlvr2_classifier.", "rank_output.")
_METHOD_KEY = re.compile(r"(?:^|\.)peft_(shallow_prompt|deep_prompt|scaled_pa|adapter|lora|apt)(?:_[a-z0-9]+)?\.")


def method_of_key(key: str) -> Optional[str]:
    """The tuning method whose module holds ``key`` (``...peft_<method>[_suffix].<param>``), or None."""
    m = _METHOD_KEY.search(key)
    return m.group(1) if m else None


def method_in_hparams(ckpt) -> Optional[str]:
    """The tuning method recorded in a Lightning checkpoint of this project (``hyper_parameters.config.peft``)."""
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    cfg = hp.get("config") if isinstance(hp, dict) else None
    peft = cfg.get("peft") if isinstance(cfg, dict) else None
    return peft if isinstance(peft, str) else None


def _matches(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p if p.endswith(".") else p + ".") or key == p.rstrip(".")
               for p in prefixes)


def _grouped(keys: list, n: int = 20) -> str:
    """Keys grouped by prefix (up to the first numeric component, e.g. ``transformer.blocks.3``), one line each."""
    groups: dict = {}
    for k in keys:
        parts = k.split(".")
        cut = next((i + 1 for i, p in enumerate(parts[:-1]) if p.isdigit()), 1 if len(parts) > 1 else len(parts))
        groups.setdefault(".".join(parts[:cut]), []).append(k)
    lines = []
    for g, ks in groups.items():
        lines.append(f"{ks[0]}" if len(ks) == 1 else f"{g}.* ({len(ks)} keys: {_short([k[len(g) + 1:] for k in ks], 4)})")
    more = f"\n    ... (+{len(lines) - n} groups)" if len(lines) > n else ""
    return "\n    " + "\n    ".join(lines[:n]) + more


def _prefix_hint(missing: list, unexpected: list) -> str:
    """A hint when one leading component of all keys on one side (``model.``, ``module.``...) explains the other."""
    for side, other, where in ((unexpected, set(missing), "checkpoint's"), (missing, set(unexpected), "model's")):
        heads = {k.split(".", 1)[0] for k in side}
        if len(heads) != 1 or not other:
            continue
        head = heads.pop()
        explained = sum(k.split(".", 1)[1] in other for k in side if "." in k)
        if explained:
            return (f"\n  hint: all the {where} differing keys start with {head + '.'!r}; without that prefix "
                    f"{explained} of them match (a wrapper such as DataParallel ``module.`` or a Lightning "
                    f"``model.`` attribute was saved around the model: remove the prefix from the keys)")
    return ""


def load_state_dict_checked(model: nn.Module, state_dict: dict, source: str = "<state_dict>",
                            ignore: Iterable[str] = (), strict: bool = True, stage: str = "load",
                            method: Optional[str] = None, checkpoint_method: Optional[str] = None):
    """Load ``state_dict`` into ``model`` with every difference named.

    Shape mismatches always raise (listing all). Missing and unexpected keys raise a CheckpointError that lists
    them grouped by prefix (with a hint when a common prefix explains them), except the documented differences
    above: ``stage`` is ``"train"`` (start of a tuning run: loaded before the task heads and the method exist),
    ``"eval"`` (``test_only``: the model is complete) or ``"load"`` (plain: only ``ignore`` and the leftovers).
    ``method``: the tuning method of the run; keys of another method's modules are an error naming both (the file's
    method comes from its keys, or ``checkpoint_method`` when known). ``strict=False`` (``strict_load=False``) loads
    what fits and logs the rest as a warning. Returns (missing, unexpected) after the tolerated ones."""
    if stage not in ("train", "eval", "load"):
        raise ValueError(f"stage={stage!r}; expected 'train', 'eval' or 'load'")
    own = model.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        raise CheckpointError(f"{source}: {len(mismatched)} tensor(s) have other shapes than the model:\n  "
                              + "\n  ".join(mismatched))
    ignore = tuple(ignore) + UPSTREAM_LEFTOVERS
    missing = sorted(k for k in own if k not in state_dict and not _matches(k, ignore))
    unexpected = sorted(k for k in state_dict if k not in own and not _matches(k, ignore))

    file_methods = sorted({m for m in map(method_of_key, state_dict) if m} | ({checkpoint_method} - {None}))
    problems, notes = [], []
    if method is not None and file_methods and file_methods != [method]:
        foreign = sorted(k for k in unexpected if method_of_key(k) not in (None, method))
        problems.append(f"the checkpoint was made with method {', '.join(file_methods)} but this run uses method "
                        f"{method} (set peft / METHOD to {file_methods[0]})"
                        + (f"; its {len(foreign)} method tensor(s):{_grouped(foreign)}" if foreign else ""))
        unexpected = [k for k in unexpected if k not in set(foreign)]
    fresh_heads = [k for k in unexpected if _matches(k, FINETUNING_HEADS)] if stage == "train" else []
    fresh_method = [k for k in unexpected if method_of_key(k) == method] if stage == "train" else []
    if fresh_heads:
        notes.append(f"task head(s) in the checkpoint start fresh (created after loading, as upstream):"
                     f"{_grouped(fresh_heads)}")
    if fresh_method:
        notes.append(f"method {method} parameters in the checkpoint start fresh (the method is attached after "
                     f"loading; resume a run with resume_from to keep them):{_grouped(fresh_method)}")
    tolerated = set(fresh_heads) | set(fresh_method)
    tolerated |= {k for k in unexpected if _matches(k, PRETRAINING_HEADS)}
    if any(k.startswith("itm_score.") for k in state_dict):
        tolerated |= {k for k in missing if k.startswith("rank_output.")}
    missing = [k for k in missing if k not in tolerated]
    unexpected = [k for k in unexpected if k not in tolerated]
    if missing:
        what = "evaluation would use randomly initialised weights for them" if stage == "eval" else \
            "they would stay randomly initialised"
        problems.append(f"{len(missing)} model tensor(s) are not in the checkpoint ({what}):{_grouped(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint tensor(s) do not exist in this model:{_grouped(unexpected)}")
    if problems:
        hint = _prefix_hint(missing, unexpected)
        msg = f"{source}: the checkpoint does not fit the model:\n  " + "\n  ".join(problems) + hint
        if strict:
            raise CheckpointError(msg + "\n  (strict_load=False loads what fits and reports the rest)")
        log.warning("%s\n  strict_load=False: loading what fits, skipping the rest", msg)
    for n in notes:
        log.warning("%s: %s", source, n)
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    return missing, unexpected


def _short(names: list, n: int = 12) -> str:
    return ", ".join(names[:n]) + (f", ... (+{len(names) - n})" if len(names) > n else "")


def save_atomic(obj, path: str) -> None:
    """torch.save through :func:`shared_apt.peft.atomic.atomic_write` (a crash never leaves a half-written file)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
