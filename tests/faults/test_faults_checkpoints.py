"""Fault injection on checkpoints and tuned files (tiny ViLT): every bad file ends with an error naming the file and
the keys, or loads bit-identically; nothing is silently substituted."""
import logging
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import shared_apt
from shared_apt.vl.checkpoint import (CheckpointError, atomic_write, load_checkpoint, remove_stale_temp_files,
                                   save_atomic)
from tiny import vilt_config
from vilt.modules import ViLTransformerSS

APT = {"peft": "apt", "peft_options": {"num_prompts": 4, "apt_rank": 2}}


def _save(model, path, state_dict=None):
    """An upstream-style Lightning checkpoint (top-level entries + state_dict) with this project's config."""
    torch.save({"epoch": 0, "global_step": 10, "state_dict": model.state_dict() if state_dict is None else state_dict,
                "hyper_parameters": {"config": dict(model.hparams.config)}}, path)
    return str(path)


def _same(a, b, keys):
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_block_missing_and_stray_key_is_an_error_naming_both(tmp_path):
    torch.manual_seed(0)
    src = ViLTransformerSS(vilt_config())
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("transformer.blocks.1.")}
    sd["stray.weight"] = torch.zeros(3)
    path = _save(src, tmp_path / "broken.ckpt", sd)
    with pytest.raises(CheckpointError) as e:
        ViLTransformerSS(vilt_config(load_path=path))
    msg = str(e.value)
    assert path in msg and "strict_load=False" in msg
    assert "transformer.blocks.1.*" in msg          # grouped by prefix
    assert "stray.weight" in msg
    assert "transformer.blocks.0" not in msg        # what is there is not listed


def test_strict_load_false_loads_what_fits_and_warns(tmp_path, caplog):
    torch.manual_seed(0)
    src = ViLTransformerSS(vilt_config())
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("transformer.blocks.1.")}
    sd["stray.weight"] = torch.zeros(3)
    path = _save(src, tmp_path / "broken.ckpt", sd)
    torch.manual_seed(1)
    with caplog.at_level(logging.WARNING, logger="shared_apt"):
        model = ViLTransformerSS(vilt_config(load_path=path, strict_load=False))
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "transformer.blocks.1.*" in text and "stray.weight" in text and path in text
    got = model.state_dict()
    loaded = [k for k in sd if k in got and not k.startswith("vqa_classifier")]
    assert loaded and _same(got, sd, loaded)
    assert not torch.equal(got["transformer.blocks.1.attn.qkv.weight"], src.state_dict()["transformer.blocks.1.attn.qkv.weight"])


def test_model_prefix_under_test_only_is_an_error_with_a_hint(tmp_path):
    torch.manual_seed(0)
    src = ViLTransformerSS(vilt_config())
    path = _save(src, tmp_path / "prefixed.ckpt", {f"model.{k}": v for k, v in src.state_dict().items()})
    with pytest.raises(CheckpointError) as e:
        ViLTransformerSS(vilt_config(load_path=path, test_only=True))
    msg = str(e.value)
    assert path in msg and "randomly initialised" in msg
    assert "hint" in msg and "'model.'" in msg


def test_eval_of_an_apt_checkpoint_as_lora_names_both_methods(tmp_path):
    torch.manual_seed(0)
    src = ViLTransformerSS(vilt_config(**APT))
    path = _save(src, tmp_path / "apt.ckpt")
    with pytest.raises(CheckpointError) as e:
        ViLTransformerSS(vilt_config(load_path=path, test_only=True, peft="lora", peft_options={"lora_rank": 2}))
    msg = str(e.value)
    assert path in msg and "made with method apt" in msg and "uses method lora" in msg
    assert "peft_apt" in msg and "peft_lora" in msg   # the dropped APT tensors and the fresh LoRA ones


def test_a_classifier_checkpoint_evaluated_as_apt_names_both_methods(tmp_path):
    torch.manual_seed(0)
    src = ViLTransformerSS(vilt_config(peft="classifier"))
    path = _save(src, tmp_path / "cls.ckpt")
    with pytest.raises(CheckpointError, match="made with method classifier but this run uses method apt"):
        ViLTransformerSS(vilt_config(load_path=path, test_only=True, **APT))


def test_matching_checkpoint_under_test_only_loads_bit_identically(tmp_path):
    torch.manual_seed(0)
    src = ViLTransformerSS(vilt_config(**APT))
    path = _save(src, tmp_path / "apt.ckpt")
    torch.manual_seed(1)
    model = ViLTransformerSS(vilt_config(load_path=path, test_only=True, **APT))
    want = src.state_dict()
    assert model.state_dict().keys() == want.keys() and _same(model.state_dict(), want, want)


def test_load_tuned_refuses_a_backbone_tensor_and_writes_nothing(tmp_path):
    torch.manual_seed(0)
    src = ViLTransformerSS(vilt_config(**APT))
    shared_apt.save_tuned(src, str(tmp_path / "tuned"))
    f = tmp_path / "tuned" / "tuned.safetensors"
    tensors = load_file(str(f))
    key = "transformer.blocks.0.mlp.fc1.weight"
    tensors[key] = torch.full_like(src.state_dict()[key], 7.0)
    save_file(tensors, str(f))
    torch.manual_seed(1)
    dst = ViLTransformerSS(vilt_config(**APT))
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(shared_apt.TunedWeightsError) as e:
        shared_apt.load_tuned(dst, str(tmp_path / "tuned"))
    assert key in str(e.value) and "frozen backbone" in str(e.value) and str(tmp_path / "tuned") in str(e.value)
    assert _same(dst.state_dict(), before, before)


class _Mkdir:
    """A pickle that runs code on load (os.mkdir of a marker folder)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": _Mkdir(str(marker))}, path)
    with pytest.raises(CheckpointError, match="trust_checkpoint=True") as e:
        load_checkpoint(str(path))
    assert str(path) in str(e.value) and not marker.exists()
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        ViLTransformerSS(vilt_config(load_path=str(path)))
    assert not marker.exists()


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_checkpoints_and_tuned_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        save_atomic({"w": torch.ones(1)}, str(tmp_path / "a.ckpt"))
        torch.manual_seed(0)
        shared_apt.save_tuned(ViLTransformerSS(vilt_config(**APT)), str(tmp_path / "tuned"))
    finally:
        os.umask(old)
    want = 0o666 & ~mask
    for p in (tmp_path / "a.ckpt", tmp_path / "tuned" / "tuned.safetensors", tmp_path / "tuned" / "tuned_config.json"):
        assert os.stat(p).st_mode & 0o777 == want, (p, oct(os.stat(p).st_mode))


def test_temp_files_of_a_dead_writer_are_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".tmp-{dead_pid}-last.ckpt.abc123"
    live = tmp_path / f".tmp-{os.getpid()}-last.ckpt.def456"
    other = tmp_path / "last.ckpt"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert remove_stale_temp_files(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()
    # and a failed write leaves nothing behind
    with pytest.raises(ZeroDivisionError):
        atomic_write(str(tmp_path / "b.ckpt"), lambda tmp: 1 / 0)
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])
