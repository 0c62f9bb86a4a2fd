"""Fault injection in training: bad config values, a diverging learning rate (NaN), non-finite steps skipped or
stopping, ``last.ckpt`` at the final step; warnings visible under the Sacred CLI."""
import glob
import math
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from shared_apt.vl.checkpoint import load_checkpoint
from shared_apt.peft.config import ConfigError, PeftConfig
from shared_apt.vl.training import run as run_mod
from shared_apt.vl.training.nonfinite import NonFiniteError, NonFiniteGuard
from shared_apt.vl.training.run import run
from training_helpers import demo_config
from vilt.modules.vilt_module import ViLTransformerSS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("method,key,value,expected", [
    ("apt", "num_prompts", True, "an integer"), ("apt", "apt_dropout", "abc", "a number"),
    ("apt", "apt_rank", 2.0, "an integer"), ("apt", "apt_fast", "yes", "True or False"),
    ("lora", "lora_targets", "qv", "a list")])  # each option is validated by the method it belongs to
def test_mistyped_peft_options_name_the_key(method, key, value, expected):
    with pytest.raises(ConfigError) as e:
        PeftConfig.from_kwargs(method, **{key: value})
    assert f"{key}={value!r}" in str(e.value) and expected in str(e.value)


@pytest.mark.parametrize("lr", [-1, 0, float("nan"), "abc", True])
def test_bad_learning_rate_names_the_key(tmp_path, lr):
    base = {**{k: 1 for k in run_mod.REQUIRED_KEYS}, "data_root": str(tmp_path), "test_only": False, "learning_rate": lr}
    with pytest.raises(run_mod.RunConfigError, match=r"learning_rate="):
        run_mod.check_config(base)


def test_test_only_without_load_path_is_an_error(tmp_path):
    base = {**{k: 1 for k in run_mod.REQUIRED_KEYS}, "data_root": str(tmp_path), "test_only": True, "load_path": ""}
    with pytest.raises(run_mod.RunConfigError, match="test_only=True needs load_path"):
        run_mod.check_config(base)


# ---- the guard on a two-parameter model: batch 2 (of 5) has a NaN loss -------------------------------------------


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def training_step(self, batch, batch_idx):
        x = batch[0]
        return (self.w * x).sum() ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _Weights(pl.Callback):
    def __init__(self):
        self.before, self.after = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before.append(pl_module.w.detach().clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append(pl_module.w.detach().clone())


def _fit(guard, tmp_path):
    xs = torch.ones(5, 2)
    xs[2, 0] = float("nan")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs), batch_size=1)
    rec = _Weights()
    trainer = pl.Trainer(max_steps=5, callbacks=[guard, rec], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         accelerator="cpu")
    model = _Tiny()
    trainer.fit(model, loader)
    return model, rec, trainer


def test_skip_mode_leaves_the_weights_of_a_nan_step_untouched(tmp_path):
    model, rec, trainer = _fit(NonFiniteGuard("skip", max_skips=1), tmp_path)
    assert torch.equal(rec.before[2], rec.after[2])                        # batch 2: no update
    assert all(not torch.equal(rec.before[i], rec.after[i]) for i in (0, 1, 3, 4))
    assert torch.isfinite(model.w).all()


@pytest.mark.parametrize("guard,extra", [(NonFiniteGuard("stop"), ""),
                                         (NonFiniteGuard("skip", max_skips=0), "after 0 skipped step(s)")])
def test_stop_mode_names_the_step(tmp_path, guard, extra):
    with pytest.raises(NonFiniteError) as e:
        _fit(guard, tmp_path)
    msg = str(e.value)
    assert "non-finite loss (nan) at step 3 " in msg and "no checkpoint had been written yet" in msg and extra in msg


# ---- the real driver on the demo world ----------------------------------------------------------------------------


def test_last_checkpoint_holds_the_final_step(demo, tmp_path):
    out = run(demo_config(demo, tmp_path, max_steps=3, val_check_interval=2, peft="apt",
                          peft_options={"num_prompts": 4, "apt_rank": 2}), ViLTransformerSS,
              lambda cfg: __import__("test_run").small_dm(cfg))
    ckpt = load_checkpoint(out["last_model_path"])
    assert ckpt["global_step"] == 3
    sd = out["model"].state_dict()
    assert all(torch.equal(ckpt["state_dict"][k], sd[k]) for k in sd)


def test_cli_diverging_run_stops_naming_the_step_and_shows_warnings(demo, tmp_path):
    """learning_rate=1e30 through ViLT/run.py: non-zero exit, the step named, no checkpoint with non-finite weights;
    and a project warning (strict_load=False skipping a stray key) is visible although Sacred sets the root logger."""
    named = ["task_finetune_vqa", "tiny_vilt"]
    keys = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "drop_rate": 0.0}
    src = ViLTransformerSS(demo_config(demo, tmp_path, named=list(named), **keys))
    sd = dict(src.state_dict())
    sd["stray_head.weight"] = torch.zeros(2)
    start = tmp_path / "start.ckpt"
    torch.save({"state_dict": sd}, start)
    cfg = demo_config(demo, tmp_path, named=list(named), **keys)
    args = [f"{k}={cfg[k]}" for k in ("data_root", "tokenizer", "vocab_size", "vqav2_label_size", "cls_token_id",
                                       "log_dir")]
    args += [f"{k}={v}" for k, v in keys.items()]
    args += ["accelerator=cpu", "num_workers=0", "per_gpu_batchsize=4", "batch_size=4", "max_steps=8",
             "val_check_interval=2", "learning_rate=1e30", "warmup_steps=0", f"load_path={start}",
             "strict_load=False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, os.path.join(ROOT, "ViLT", "run.py"), "with", *named, *args], env=env,
                       capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert "NonFiniteError" in out and "non-finite" in out and " at step " in out, out[-3000:]
    assert "stray_head.weight" in out and "strict_load=False" in out, out[-3000:]   # the warning is visible
    written = glob.glob(str(tmp_path / "**" / "*.ckpt"), recursive=True)
    for f in written:
        if f == str(start):
            continue
        state = load_checkpoint(f)["state_dict"]
        assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()), f


def test_a_non_finite_checkpoint_is_refused_naming_the_tensor_and_the_last_finite_one():
    from types import SimpleNamespace

    trainer = SimpleNamespace(global_step=6, current_epoch=1,
                              checkpoint_callback=SimpleNamespace(last_model_path="run/last.ckpt", best_model_path=""))
    guard = NonFiniteGuard()
    guard.on_save_checkpoint(trainer, None, {"state_dict": {"a": torch.ones(2), "n": torch.tensor([1, 2])}})
    with pytest.raises(NonFiniteError) as e:
        guard.on_save_checkpoint(trainer, None, {"state_dict": {"a": torch.ones(2), "b": torch.tensor([1.0, math.inf])}})
    assert "weight b is not finite" in str(e.value) and "step 7" in str(e.value) and "run/last.ckpt" in str(e.value)
