"""Training / evaluation driver shared by ViLT/run.py and METER/run.py (upstream run.py on Lightning 2.x; docs/backbones.md, ViLT).

    from shared_apt.vl.training.run import run
    run(config, ViLTransformerSS, lambda cfg: MTDataModule(cfg, dist=True))

The Sacred entry points (ViLT/run.py, METER/run.py) call :func:`sacred_main`, which adds the unknown-key check and
returns the numeric metrics.

What it does, in order: checks the config, seeds, builds the datamodule and the model, derives gradient accumulation
(``max(1, batch_size // (per_gpu_batchsize x num_gpus x num_nodes))``), builds the Trainer (precision, DDP over
``num_gpus`` x ``num_nodes`` processes, atomic checkpoint files, TensorBoard logger named as upstream), then either
``trainer.test`` (``test_only``) or ``trainer.fit`` (resuming from ``resume_from``; ``"last"`` finds the newest
``last.ckpt`` of this experiment), and finally writes the tuned weights alone (``shared_apt.save_tuned``) next to the
checkpoints when ``save_tuned_weights``.

Differences from upstream (Lightning 1.1) that are deliberate:

* accumulate_grad_batches is at least 1 (upstream divided by zero when the per-step global batch exceeded
  ``batch_size``);
* the schedule's total steps are the real optimiser steps (see ``optim.set_schedule``);
* ``accelerator="cpu"`` runs ``num_gpus`` CPU processes (gloo, forked) so DDP can be exercised without GPUs;
  ``precision=16`` (mixed half precision) becomes bf16 mixed precision on a CPU where oneDNN multiplies bf16
  matrices (AVX512 / AVX512-BF16 / AMX; fp16 autocast has no fast CPU kernels), 32 on other CPUs (with a warning);
* checkpoints are written to a temporary file and renamed (a crash never leaves a truncated ``last.ckpt``);
* the training loader is resumable: a run resumed from a mid-epoch checkpoint continues with the batches the
  interrupted run had not trained on yet, in the same order (and with the same per-batch random seeds when
  ``num_workers == 0``);
* DDP does not broadcast buffers (the only buffers are constant position ids and the per-process metric sums, which
  must not be overwritten by rank 0's) and finds unused parameters (heads built but not executed, ``loss_names``
  values in (0, 1)).
"""
from __future__ import annotations

import copy
import glob
import logging
import math
import os
import re
import warnings
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

import shared_apt
from shared_apt.vl.checkpoint import remove_stale_temp_files, save_atomic
from shared_apt.vl.data.bad_images import BadImageAccounting
from shared_apt.vl.data.datamodules import DEFAULTS as DATA_DEFAULTS

from .module import seed_all, step_seed
from .nonfinite import NonFiniteGuard

log = logging.getLogger(__name__)


class RunConfigError(ValueError):
    """A run config key is missing or has an invalid value."""


# ---------------------------------------------------------------------------------------------------------------
# Config helpers


def plain(obj):
    """Deep copy with plain dict / list / tuple types (Sacred's ReadOnlyDict / ReadOnlyList are not loadable by
    torch's weights-only unpickler, so they must not end up in checkpoints)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return copy.deepcopy(obj)


def resolve_config(experiment, named: Sequence[str] = (), updates: Optional[Mapping[str, Any]] = None) -> dict:
    """The one way a resolved config is made outside ``python run.py``: the experiment's config scopes with the
    ``named`` configs applied left to right (Sacred's own resolution, as on the command line), as a plain dict, then
    ``updates`` laid over it (whole values replaced)."""
    sacred_run = experiment._create_run(command_name="print_config", named_configs=list(named), config_updates={},
                                        options={"--loglevel": "ERROR", "--force": True})
    config = plain(dict(sacred_run.config))
    config.update(plain(dict(updates or {})))
    return config


REQUIRED_KEYS = ("exp_name", "seed", "loss_names", "batch_size", "per_gpu_batchsize", "num_gpus", "num_nodes",
                 "precision", "max_epoch", "max_steps", "log_dir", "load_path", "test_only", "resume_from",
                 "val_check_interval", "learning_rate", "optim_type", "warmup_steps", "decay_power", "end_lr",
                 "weight_decay", "data_root")


def check_config(config: Mapping[str, Any]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise RunConfigError(f"config lacks key(s) {missing}")
    for key in ("per_gpu_batchsize", "num_gpus", "num_nodes", "batch_size"):
        v = config[key]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            hint = " (upstream's default 0 must be set on the command line, e.g. per_gpu_batchsize=32)" \
                if key == "per_gpu_batchsize" else ""
            raise RunConfigError(f"{key}={v!r}: expected a positive integer{hint}")
    if not config["data_root"]:
        raise RunConfigError("data_root is empty: set data_root=<folder with the .arrow files>")
    if not os.path.isdir(str(config["data_root"])):
        raise RunConfigError(f"data_root={config['data_root']!r} is not a directory")
    if config["max_steps"] is None and (not isinstance(config["max_epoch"], int) or config["max_epoch"] <= 0):
        raise RunConfigError(f"max_epoch={config['max_epoch']!r} must be a positive integer when max_steps is None")
    if config["test_only"] and not config["load_path"]:
        raise RunConfigError("test_only=True needs load_path=<checkpoint to evaluate> (an evaluation never runs on "
                             "randomly initialised weights)")
    lr = config["learning_rate"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise RunConfigError(f"learning_rate={lr!r}: expected a finite number > 0")
    if config.get("on_nonfinite", "stop") not in ("stop", "skip"):
        raise RunConfigError(f"on_nonfinite={config['on_nonfinite']!r}: expected 'stop' or 'skip'")
    skips = config.get("max_nonfinite_skips", 0)
    if isinstance(skips, bool) or not isinstance(skips, int) or skips < 0:
        raise RunConfigError(f"max_nonfinite_skips={skips!r}: expected an integer >= 0")


# Config entries whose CONTENT is free-form (method options, dataset overrides): new sub-keys are allowed there.
OPEN_DICT_KEYS = ("peft_options", "dataset_class_overrides", "dataset_split_names")


class UnknownConfigKeyError(RunConfigError):
    """A command-line (or named-config) assignment names a key the configuration does not have."""


def check_cli_modifications(modifications, open_keys: Sequence[str] = OPEN_DICT_KEYS) -> None:
    """Sacred only warns about ``with foo=1`` when ``foo`` is not a config key; make it an error. ``modifications``
    is Sacred's ``_run.config_modifications`` (its ``added`` holds the dotted paths of new entries)."""
    added = sorted(getattr(modifications, "added", ()) or ())
    bad = [k for k in added if k.split(".")[0] not in open_keys]
    if bad:
        raise UnknownConfigKeyError(
            f"unknown config key(s) {bad}: not in the configuration (check the spelling; "
            f"'python run.py print_config' lists every key)")


def _has_path(config: Mapping[str, Any], dotted: str) -> bool:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def command_line_added_keys(experiment, sacred_run) -> set:
    """Dotted keys assigned on the command line (``with ... key=value``) that the configuration does not have:
    Sacred's ``config_modifications.added``, plus every update key missing from the configuration built from the
    same named configs without the updates. (Sacred intersects "added" over its config scopes, so an experiment with
    more than one scope, e.g. ``ex.add_config`` next to ``@ex.config``, reports nothing.)"""
    from sacred.arg_parser import get_config_updates
    from sacred.utils import iterate_flattened

    added = set(getattr(sacred_run.config_modifications, "added", ()) or ())
    words = (sacred_run.meta_info.get("options") or {}).get("UPDATE") or []
    updates, named = get_config_updates(list(words))
    if updates:
        base = resolve_config(experiment, named)
        added |= {key for key, _ in iterate_flattened(updates) if not _has_path(base, key)}
    return added


def sacred_main(experiment, sacred_run, model_cls, datamodule_factory, open_keys: Sequence[str] = OPEN_DICT_KEYS,
                callbacks: Sequence[Callback] = ()) -> Dict[str, float]:
    """Body of an upstream-style ``@ex.automain`` (``python run.py with ...``): reject keys the configuration does
    not have (sub-keys of ``open_keys`` entries are allowed), run on a copy of the config, return the numeric
    metrics (Sacred's run result)."""
    check_cli_modifications(SimpleNamespace(added=command_line_added_keys(experiment, sacred_run)), open_keys)
    result = run(plain(sacred_run.config), model_cls, datamodule_factory, callbacks)
    return {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}


def accumulate_grad_batches(config: Mapping[str, Any]) -> int:
    per_step = config["per_gpu_batchsize"] * config["num_gpus"] * config["num_nodes"]
    if per_step <= 0:
        raise RunConfigError(f"per_gpu_batchsize x num_gpus x num_nodes = {per_step}: per_gpu_batchsize must be set")
    acc = max(1, config["batch_size"] // per_step)
    if config["batch_size"] % per_step:
        log.warning("batch_size %d is not a multiple of per_gpu_batchsize x num_gpus x num_nodes = %d: the effective "
                    "global batch is %d", config["batch_size"], per_step, per_step * acc)
    return acc


def logger_name(config: Mapping[str, Any]) -> str:
    """Upstream: f"{exp_name}_seed{seed}_from_{basename(load_path)[:-5]}"."""
    return f'{config["exp_name"]}_seed{config["seed"]}_from_{str(config["load_path"]).split("/")[-1][:-5]}'


def resolve_accelerator(config: Mapping[str, Any]) -> str:
    acc = str(config.get("accelerator", "auto")).lower()
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if acc in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise RunConfigError(f"accelerator={config.get('accelerator')!r} but no CUDA device is available "
                                 "(use accelerator=cpu or auto)")
        return "gpu"
    if acc == "cpu":
        return "cpu"
    raise RunConfigError(f"accelerator={config.get('accelerator')!r}: expected 'auto', 'gpu' or 'cpu'")


def cpu_has_bf16() -> bool:
    """Whether oneDNN multiplies bf16 matrices on this CPU (its own check: AVX512 core or newer)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision, accelerator: str):
    p = str(precision).lower()
    if p in ("16", "16-mixed", "fp16"):
        if accelerator == "cpu":
            if cpu_has_bf16():
                log.info("precision=%s on CPU: bf16 mixed precision (the CPU's half-precision matrix products)",
                         precision)
                return "bf16-mixed"
            log.warning("precision=%s on CPU: running in 32-bit (this CPU has no bf16 matrix products)", precision)
            return "32-true"
        return "16-mixed"
    if p in ("bf16", "bf16-mixed"):
        return "bf16-mixed"
    if p in ("32", "32-true", "fp32"):
        return "32-true"
    if p in ("64", "64-true"):
        return "64-true"
    raise RunConfigError(f"precision={precision!r}: expected 16, 32, 'bf16' or 64")


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO writing through a temporary file in the target folder and ``os.replace``."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not accept storage_options (got {storage_options!r})")
        save_atomic(checkpoint, str(path))


class UpstreamModelCheckpoint(ModelCheckpoint):
    """``save_last`` as in Lightning 1.1 (upstream): ``last.ckpt`` is rewritten at EVERY checkpoint event
    (validation end, or train epoch end without validation), not only when a new top-k file was written (the
    Lightning 2.x behaviour, which would leave a stale last.ckpt to resume from)."""

    def _refresh_last(self, trainer, skip: bool) -> None:
        if not skip and self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module) -> None:
        skip = self._should_skip_saving_checkpoint(trainer) or self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer, skip)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        skip = self._should_skip_saving_checkpoint(trainer) or not self._should_save_on_train_epoch_end(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer, skip)

    def on_train_end(self, trainer, pl_module) -> None:
        """``last.ckpt`` holds the final step (steps after the last validation would otherwise be only in
        ``tuned/``). Not reached when training stopped with an exception."""
        super().on_train_end(trainer, pl_module)
        if self.save_last and not trainer.fast_dev_run and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _version_of(path: str) -> Optional[int]:
    m = re.search(r"version_(\d+)", os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path)))))
    return int(m.group(1)) if m else None


def find_last_checkpoint(log_dir: str, name: str) -> str:
    """Newest ``<log_dir>/<name>/version_*/checkpoints/last.ckpt``."""
    pattern = os.path.join(log_dir, name, "version_*", "checkpoints", "last*.ckpt")
    found = glob.glob(pattern)
    if not found:
        raise RunConfigError(f"resume_from='last' but no checkpoint matches {pattern!r}")
    return max(found, key=lambda p: (os.path.getmtime(p), p))


def resolve_resume(config: Mapping[str, Any]):
    """(checkpoint path or None, logger version to continue or None)."""
    r = config.get("resume_from")
    if not r:
        return None, None
    name = logger_name(config)
    path = find_last_checkpoint(config["log_dir"], name) if r == "last" else str(r)
    if not os.path.isfile(path):
        raise RunConfigError(f"resume_from={r!r}: checkpoint {path!r} not found")
    experiment_dir = os.path.abspath(os.path.join(config["log_dir"], name))
    version = _version_of(path)
    in_this_experiment = os.path.abspath(path).startswith(experiment_dir + os.sep)
    return path, (version if in_this_experiment else None)


class SaveTunedWeights(Callback):
    """After fit, rank 0 writes the tuned tensors alone (``shared_apt.save_tuned``) to ``<version dir>/tuned``."""

    def __init__(self):
        self.path: Optional[str] = None

    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank != 0 or shared_apt.peft_config(pl_module) is None:
            return
        ckpt = trainer.checkpoint_callback
        base = os.path.dirname(ckpt.dirpath) if ckpt is not None and ckpt.dirpath else trainer.default_root_dir
        self.path = os.path.join(base, "tuned")
        shared_apt.save_tuned(pl_module, self.path)
        log.info("tuned weights written to %s", self.path)


# ---------------------------------------------------------------------------------------------------------------
# Resumable training loader


def _rank_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _EpochProxy:
    """What Lightning sees as ``loader.sampler``: records the epoch and forwards ``set_epoch``."""

    def __init__(self, owner: "ResumableLoader"):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.epoch = int(epoch)
        inner = self.owner.loader.sampler
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(int(epoch))


class ResumableLoader:
    """Wraps the training ``DataLoader``: the order of an epoch is a pure function of (seed, epoch) — a
    ``DistributedSampler``'s own order, or for a single process the same permutation ``DistributedSampler`` would
    give with one replica — and the loader implements Lightning's ``state_dict`` / ``load_state_dict`` protocol, so a
    run resumed from a mid-epoch checkpoint skips exactly the batches already trained on. With ``num_workers == 0``
    the global random generators are re-seeded from (seed, epoch, batch, rank) before each batch is loaded, so random
    data transforms and negative draws repeat too."""

    def __init__(self, loader: DataLoader, seed: int):
        self.loader = loader
        self.seed = int(seed)
        self.dataset = loader.dataset
        self.sampler = _EpochProxy(self)
        self.batch_sampler = None
        self.epoch = 0
        self._yielded = 0
        self._resume: Optional[dict] = None

    def __len__(self) -> int:
        return len(self.loader)

    def _indices(self) -> List[int]:
        inner = self.loader.sampler
        if isinstance(inner, DistributedSampler):
            return list(iter(inner))
        if isinstance(inner, RandomSampler):
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            return torch.randperm(len(self.dataset), generator=g).tolist()
        return list(iter(inner))

    def _batches(self) -> List[List[int]]:
        idx = self._indices()
        bs = self.loader.batch_size
        batches = [idx[i:i + bs] for i in range(0, len(idx), bs)]
        if self.loader.drop_last and batches and len(batches[-1]) < bs:
            batches = batches[:-1]
        return batches

    def __iter__(self):
        skip = 0
        if self._resume is not None:
            if int(self._resume.get("epoch", -1)) == self.epoch:
                skip = int(self._resume.get("batches_yielded", 0))
            self._resume = None
        batches = self._batches()[skip:]
        self._yielded = skip
        if not batches:
            return
        rank, _ = _rank_world()
        ld = self.loader
        g = torch.Generator()
        g.manual_seed(step_seed(self.seed, self.epoch, rank, salt=skip + 3))
        loader = DataLoader(ld.dataset, batch_sampler=batches, num_workers=ld.num_workers, collate_fn=ld.collate_fn,
                            pin_memory=ld.pin_memory, timeout=ld.timeout, worker_init_fn=ld.worker_init_fn,
                            generator=g, multiprocessing_context=ld.multiprocessing_context)
        reseed = ld.num_workers == 0
        it = iter(loader)
        b = skip
        while True:
            if reseed:
                seed_all(step_seed(self.seed, self.epoch * 1_000_003 + b, rank, salt=5))
            try:
                batch = next(it)
            except StopIteration:
                return
            self._yielded += 1
            b += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_yielded": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)


class RestoreLoaderState(Callback):
    """Hands the training loader its state from the resumed checkpoint. Lightning 2.6 loads loader states only in
    ``FitLoop.setup_data``, which returns early when the loader was already built for
    ``estimated_stepping_batches`` (as ``set_schedule`` does) — so the states would never be applied."""

    def on_train_start(self, trainer, pl_module):
        fit_loop = trainer.fit_loop
        states = getattr(fit_loop, "_combined_loader_states_to_load", None)
        loader = getattr(fit_loop, "_combined_loader", None)
        if states and loader is not None:
            loader._load_state_dicts(states)
            fit_loop._combined_loader_states_to_load = []


def make_train_loader_resumable(datamodule, seed: int) -> None:
    original = datamodule.train_dataloader

    def train_dataloader():
        loader = original()
        return ResumableLoader(loader, seed) if isinstance(loader, DataLoader) else loader

    datamodule.train_dataloader = train_dataloader


# ---------------------------------------------------------------------------------------------------------------
# Trainer


def build_trainer(config: Mapping[str, Any], callbacks: Sequence[Callback] = (), logger_version=None):
    accelerator = resolve_accelerator(config)
    precision = resolve_precision(config["precision"], accelerator)
    world = config["num_gpus"] * config["num_nodes"]
    if world > 1:
        kwargs = dict(find_unused_parameters=True, broadcast_buffers=False,
                      checkpoint_io=AtomicCheckpointIO())
        if accelerator == "cpu":
            strategy = DDPStrategy(start_method="fork", process_group_backend="gloo", **kwargs)
        else:
            strategy = DDPStrategy(**kwargs)
        plugins = None
    else:
        strategy = "auto"
        plugins = [AtomicCheckpointIO()]

    checkpoint_callback = UpstreamModelCheckpoint(monitor="val/the_metric", mode="max", save_top_k=1, save_last=True,
                                          verbose=True)
    guard = NonFiniteGuard(config.get("on_nonfinite", "stop"), config.get("max_nonfinite_skips", 0))
    # the guard first: it refuses a non-finite checkpoint before the checkpoint callback records it
    all_callbacks = [guard, checkpoint_callback, LearningRateMonitor(logging_interval="step"), RestoreLoaderState(),
                     BadImageAccounting(config.get("max_bad_image_fraction", DATA_DEFAULTS["max_bad_image_fraction"]))]
    if config.get("save_tuned_weights", True):
        all_callbacks.append(SaveTunedWeights())
    all_callbacks += list(callbacks)
    logger = TensorBoardLogger(save_dir=config["log_dir"], name=logger_name(config), version=logger_version)
    max_steps = config["max_steps"]
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=config["num_gpus"],
        num_nodes=config["num_nodes"],
        strategy=strategy,
        plugins=plugins,
        precision=precision,
        deterministic="warn",
        max_epochs=config["max_epoch"] if max_steps is None else 1000,
        max_steps=-1 if max_steps is None else int(max_steps),
        accumulate_grad_batches=accumulate_grad_batches(config),
        log_every_n_steps=10,
        use_distributed_sampler=False,
        val_check_interval=config["val_check_interval"],
        fast_dev_run=config.get("fast_dev_run", False),
        callbacks=all_callbacks,
        logger=logger,
        enable_model_summary=True,
        enable_progress_bar=bool(config.get("progress_bar", False)),
    )
    return trainer


def run(config: Mapping[str, Any], model_cls: Callable[[dict], pl.LightningModule],
        datamodule_factory: Callable[[dict], pl.LightningDataModule], callbacks: Sequence[Callback] = ()) -> dict:
    """Train (or, with ``test_only``, evaluate) ``model_cls(config)`` on ``datamodule_factory(config)``.

    Returns {"trainer", "model", "datamodule", "best_model_path", "last_model_path", "tuned_path", "metrics"}."""
    config = plain(config)
    check_config(config)
    pl.seed_everything(config["seed"], verbose=False)
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    dm = datamodule_factory(config)
    make_train_loader_resumable(dm, config["seed"])
    model = model_cls(config)

    ckpt_path, version = (None, None) if config["test_only"] else resolve_resume(config)
    if not config["test_only"]:
        for folder in glob.glob(os.path.join(glob.escape(str(config["log_dir"])), glob.escape(logger_name(config)),
                                             "version_*", "*")):
            remove_stale_temp_files(folder)      # checkpoints/ and tuned/ of a run killed while writing
    trainer = build_trainer(config, callbacks, logger_version=version)
    if config["test_only"]:
        trainer.test(model, datamodule=dm)
    else:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)

    tuned = [c for c in trainer.callbacks if isinstance(c, SaveTunedWeights)]
    tuned_path = tuned[0].path if tuned else None
    if tuned and tuned_path is None and not config["test_only"] and trainer.checkpoint_callback is not None:
        # forked processes wrote it; the folder is known from the checkpoint directory
        d = trainer.checkpoint_callback.dirpath
        candidate = os.path.join(os.path.dirname(d), "tuned") if d else None
        tuned_path = candidate if candidate and os.path.isdir(candidate) else None
    ckpt = trainer.checkpoint_callback
    return {
        "trainer": trainer,
        "model": model,
        "datamodule": dm,
        "best_model_path": ckpt.best_model_path if ckpt is not None else None,
        "last_model_path": ckpt.last_model_path if ckpt is not None else None,
        "tuned_path": tuned_path,
        "metrics": {k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
                    for k, v in trainer.callback_metrics.items()},
    }
