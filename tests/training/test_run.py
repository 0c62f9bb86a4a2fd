"""The training driver on the demo world with a tiny ViLT: exact resume, DDP equivalence, evaluation coverage,
checkpoint content, config errors."""
import glob
import json
import os
import subprocess
import sys
import types

import pytest
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DistributedSampler, Subset

import shared_apt
from shared_apt.vl.checkpoint import load_checkpoint
from shared_apt.vl.data.datamodules import MTDataModule, UnpaddedDistributedSampler
from shared_apt.vl.training import run as run_mod
from shared_apt.vl.training.run import run
from vilt.modules.vilt_module import ViLTransformerSS

from training_helpers import demo_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SmallDM(MTDataModule):
    """The demo VQA datamodule cut to 24 training / 13 validation / 13 test questions (6 batches of 4 per epoch)."""

    def setup(self, stage=None):
        first = not self.setup_flag
        super().setup(stage)
        if first:
            self.train_dataset = Subset(self.train_dataset, range(24))
            self.val_dataset = Subset(self.val_dataset, range(13))
            self.test_dataset = Subset(self.test_dataset, range(13))
            if self.train_sampler is not None:
                self.train_sampler = DistributedSampler(self.train_dataset, shuffle=True, seed=int(self.config["seed"]))
                self.val_sampler = UnpaddedDistributedSampler(self.val_dataset)
                self.test_sampler = UnpaddedDistributedSampler(self.test_dataset)


def small_dm(cfg):
    return SmallDM(cfg, dist=True)


class Crash(Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError(f"simulated crash at step {self.at_step}")


class Record(Callback):
    """Per rank: training losses per step and the question ids seen in validation/test, written to JSON."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.losses, self.val_qids, self.test_qids = [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val_qids.append([int(q) for q in batch["qid"]])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.test_qids += [int(q) for q in batch["qid"]]

    def _dump(self, trainer):
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"losses": self.losses, "val_qids": self.val_qids, "test_qids": self.test_qids}, f)

    def on_train_end(self, trainer, pl_module):
        self._dump(trainer)

    def on_test_end(self, trainer, pl_module):
        self._dump(trainer)


def _load(out_dir, world):
    return [json.load(open(os.path.join(out_dir, f"rank{r}.json"))) for r in range(world)]


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


RESUME_OVERRIDES = dict(max_steps=9, peft="lora", peft_options={"lora_rank": 2}, learning_rate=1e-3)


@pytest.fixture(scope="module")
def uninterrupted(demo, tmp_path_factory):
    full = run(demo_config(demo, tmp_path_factory.mktemp("full"), **RESUME_OVERRIDES), ViLTransformerSS, small_dm)
    assert full["trainer"].global_step == 9
    return _weights(full["model"])


@pytest.mark.parametrize("crash_at", [5, 7], ids=["mid_epoch", "epoch_end"])
def test_resume_from_last_checkpoint_equals_uninterrupted_run(demo, tmp_path, uninterrupted, crash_at):
    # 6 batches per epoch, checkpoints every 2 steps: crash at 5 resumes mid-epoch from step 4; crash at 7 resumes
    # from the checkpoint written at the last batch of epoch 0 (step 6). LoRA dropout 0.1 is on: random draws must
    # repeat too.
    overrides = RESUME_OVERRIDES
    reference = uninterrupted

    cfg = demo_config(demo, tmp_path / "crash", **overrides)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, ViLTransformerSS, small_dm, callbacks=[Crash(crash_at)])
    last = glob.glob(str(tmp_path / "crash" / "*" / "version_0" / "checkpoints" / "last.ckpt"))
    assert len(last) == 1
    assert load_checkpoint(last[0])["global_step"] == crash_at - 1
    assert not glob.glob(str(tmp_path / "crash" / "**" / ".tmp-*"), recursive=True)

    resumed = run({**cfg, "resume_from": "last"}, ViLTransformerSS, small_dm)
    assert resumed["trainer"].global_step == 9
    assert resumed["last_model_path"].startswith(os.path.dirname(last[0]))  # same version folder continued
    assert _max_diff(_weights(resumed["model"]), reference) < 1e-6


KILL_CHILD = r"""
import os, signal, sys
import torch
sys.path[:0] = [{tests!r}, {training!r}]
torch.set_num_threads(1)
from pytorch_lightning.callbacks import Callback
from test_run import RESUME_OVERRIDES, small_dm
from training_helpers import demo_config
from shared_apt.vl.training.run import run
from vilt.modules.vilt_module import ViLTransformerSS

real_save = torch.save


def save(obj, f, *args, **kwargs):
    # kill -9 half-way through writing last.ckpt at step 4: a partial temporary file is left behind
    if isinstance(obj, dict) and obj.get("global_step") == 4 and "last.ckpt" in os.path.basename(str(f)):
        with open(f, "wb") as h:
            h.write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)


class KillAtStep5(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 5:
            os.kill(os.getpid(), signal.SIGKILL)


if {mode!r} == "write":
    torch.save = save
run(demo_config({demo!r}, {log_dir!r}, **RESUME_OVERRIDES), ViLTransformerSS, small_dm,
    callbacks=[KillAtStep5()] if {mode!r} == "train" else [])
"""


@pytest.mark.parametrize("mode", ["write", "train"])
def test_kill_9_then_resume_equals_uninterrupted_run(demo, tmp_path, uninterrupted, mode):
    """kill -9 half-way through writing last.ckpt at step 4 ("write"), or after step 5 ("train")."""
    log_dir = str(tmp_path / "killed")
    here = os.path.dirname(os.path.abspath(__file__))
    code = KILL_CHILD.format(tests=os.path.dirname(here), training=here, demo=dict(demo), log_dir=log_dir,
                                    mode=mode)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    ckpt_dir = glob.glob(os.path.join(log_dir, "*", "version_0", "checkpoints"))[0]
    stale = glob.glob(os.path.join(ckpt_dir, ".tmp-*last.ckpt*"))
    assert len(stale) == (1 if mode == "write" else 0)       # the interrupted write's temporary file
    # "write": the old last.ckpt is intact; "train": the one of step 4
    assert load_checkpoint(os.path.join(ckpt_dir, "last.ckpt"))["global_step"] == (2 if mode == "write" else 4)

    resumed = run({**demo_config(demo, log_dir, **RESUME_OVERRIDES), "resume_from": "last"}, ViLTransformerSS,
                  small_dm)
    assert resumed["trainer"].global_step == 9
    assert not glob.glob(os.path.join(ckpt_dir, ".tmp-*"))   # removed at the start of the resumed run
    assert _max_diff(_weights(resumed["model"]), uninterrupted) == 0


def test_checkpoint_carries_config_and_tuned_weights_are_saved(demo, tmp_path):
    cfg = demo_config(demo, tmp_path, max_steps=2, peft="apt", peft_options={"num_prompts": 3, "apt_rank": 2})
    out = run(cfg, ViLTransformerSS, small_dm)
    ckpt = load_checkpoint(out["last_model_path"])          # weights-only loader: plain types only
    config = ckpt["hyper_parameters"]["config"]
    assert config["peft"] == "apt" and config["data_root"] == demo["data_root"]
    rebuilt = ViLTransformerSS(config)
    rebuilt.load_state_dict(ckpt["state_dict"])
    assert _max_diff(_weights(rebuilt), _weights(out["model"])) == 0
    # the tuned tensors alone, loadable into a fresh model
    assert out["tuned_path"] and os.path.isfile(os.path.join(out["tuned_path"], "tuned.safetensors"))
    fresh = ViLTransformerSS(config)
    shared_apt.load_tuned(fresh, out["tuned_path"])
    for n, p in shared_apt.trainable_parameters(out["model"]).items():
        assert torch.equal(dict(fresh.named_parameters())[n], p)
    # upstream logger name pattern and upstream metric names
    assert os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(out["last_model_path"])))) == \
        "finetune_vqa_seed0_from_"
    for name in ("vqa/train/score", "vqa/val/score_epoch", "val/the_metric"):
        assert name in out["metrics"]


def test_ddp_two_cpu_processes_match_one_process(demo, tmp_path):
    # SGD: Adam normalises each coordinate, so a parameter whose true gradient is ~0 (float noise) would move by
    # +-lr depending on the sign of that noise, making a weight comparison meaningless
    # (and no LoRA dropout: the processes draw different random masks than the single process)
    common = dict(max_steps=4, batch_size=4, learning_rate=1e-2, optim_type="sgd", peft="lora",
                  peft_options={"lora_rank": 2, "lora_dropout": 0.0})
    one = run(demo_config(demo, tmp_path / "one", per_gpu_batchsize=4, num_gpus=1, **common), ViLTransformerSS,
              small_dm, callbacks=[Record(str(tmp_path / "rec1"))])
    two = run(demo_config(demo, tmp_path / "two", per_gpu_batchsize=2, num_gpus=2, **common), ViLTransformerSS,
              small_dm, callbacks=[Record(str(tmp_path / "rec2"))])
    (r1,) = _load(tmp_path / "rec1", 1)
    r2a, r2b = _load(tmp_path / "rec2", 2)
    assert len(r1["losses"]) == len(r2a["losses"]) == len(r2b["losses"]) == 4
    # same global batch per step: the 1-process loss is the mean of the two per-process losses
    for l1, la, lb in zip(r1["losses"], r2a["losses"], r2b["losses"]):
        assert l1 == pytest.approx((la + lb) / 2, rel=1e-5, abs=1e-6)
    # weights recovered from the worker processes equal the 1-process weights
    assert _max_diff(_weights(one["model"]), _weights(two["model"])) < 1e-5
    # validation: every question exactly once over the two processes (13 = 7 + 6, uneven batch counts)
    seen_one = [q for batch in r1["val_qids"][:4] for q in batch]
    n_batches = [len(r["val_qids"]) // 2 for r in (r2a, r2b)]
    seen_two = [q for r, n in zip((r2a, r2b), n_batches) for batch in r["val_qids"][:n] for q in batch]
    assert len(seen_one) == 13 and sorted(seen_two) == sorted(seen_one)
    for key in ("vqa/val/score_epoch", "val/the_metric"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-6)


def test_ddp_test_only_writes_one_submission_with_every_question(demo, tmp_path):
    cfg = demo_config(demo, tmp_path / "train", max_steps=2)
    trained = run(cfg, ViLTransformerSS, small_dm)
    results = {}
    for world in (1, 2):
        log_dir = tmp_path / f"test{world}"
        test_cfg = demo_config(demo, log_dir, test_only=True, load_path=trained["last_model_path"], num_gpus=world,
                               per_gpu_batchsize=2)
        out = run(test_cfg, ViLTransformerSS, small_dm, callbacks=[Record(str(tmp_path / f"rec{world}"))])
        files = sorted(os.path.basename(p) for p in glob.glob(str(log_dir / "*.json")))
        assert files == ["vqa_submit_last.json"]           # no per-rank leftovers
        rows = json.load(open(log_dir / "vqa_submit_last.json"))
        assert set(rows[0]) == {"question_id", "answer"}
        qids = [r["question_id"] for r in rows]
        seen = [q for r in _load(tmp_path / f"rec{world}", world) for q in r["test_qids"]]
        assert len(qids) == len(set(qids)) == 13 and sorted(qids) == sorted(seen)
        results[world] = (sorted((r["question_id"], r["answer"]) for r in rows), out["metrics"]["vqa/val/loss_epoch"])
    assert results[1][0] == results[2][0]


def test_config_errors_name_the_key():
    fake = types.SimpleNamespace(added={"peft_options.num_prompts", "loss_names.foo"})
    with pytest.raises(run_mod.UnknownConfigKeyError, match="loss_names.foo"):
        run_mod.check_cli_modifications(fake)
    run_mod.check_cli_modifications(types.SimpleNamespace(added={"peft_options.apt_rank"}))
    base = {k: 1 for k in run_mod.REQUIRED_KEYS}
    with pytest.raises(run_mod.RunConfigError, match="per_gpu_batchsize=0"):
        run_mod.check_config({**base, "per_gpu_batchsize": 0})
    with pytest.raises(run_mod.RunConfigError, match="data_root"):
        run_mod.check_config({**base, "data_root": ""})
    assert run_mod.accumulate_grad_batches({"batch_size": 256, "per_gpu_batchsize": 64, "num_gpus": 8,
                                            "num_nodes": 1}) == 1   # upstream would get 0
    assert run_mod.accumulate_grad_batches({"batch_size": 256, "per_gpu_batchsize": 32, "num_gpus": 2,
                                            "num_nodes": 1}) == 4
    assert run_mod.logger_name({"exp_name": "finetune_vqa", "seed": 0, "load_path": "w/vilt_200k_mlm_itm.ckpt"}) \
        == "finetune_vqa_seed0_from_vilt_200k_mlm_itm"


def test_unknown_key_on_the_command_line_is_an_error():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "ViLT", "run.py"), "with", "task_finetune_vqa",
                           "learning_rat=1e-3", "per_gpu_batchsize=2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "learning_rat" in out
    # rejected as an unknown key (Sacred's check, or ours), not by a later failure
    assert "Added new config entry" in out or "unknown config key" in out, out[-2000:]


def test_atomic_checkpoint_write_keeps_the_old_file_on_failure(tmp_path):
    io = run_mod.AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(Exception):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "bad": lambda: 0}, path)  # unpicklable
    assert torch.equal(torch.load(path)["state_dict"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["last.ckpt"]
