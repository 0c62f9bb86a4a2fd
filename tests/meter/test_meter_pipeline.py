"""METER on the shared training pipeline (docs/backbones.md, METER): the demo world with a tiny METER through
shared_apt.vl.training.run and METER/run.py — fit a few steps with APT and with LoRA, then evaluate the checkpoint with
test_only; METER's split tables, CLIP transforms and RGBA decoding, the tokenizer check, the learning rate applied
once (learning_rate x peft_lr_scale), NLVR2 model selection on dev, and every shell script with MODEL=meter."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import shared_apt
from shared_apt.vl.checkpoint import load_checkpoint
from shared_apt.vl.training.run import run

from meter.config import ex
from meter.datamodules import METER_SPLIT_NAMES, make_meter_datamodule, meter_data_config
from meter.modules import METERTransformerSS
from meter.modules.meter_module import check_tokenizer, text_encoder_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ("vqa", "nlvr", "f30k")
#: file-name prefix of each task's scripts (the APT authors' README names the Flickr30K ones F30K_*.sh)
SCRIPT = {"vqa": "vqa", "nlvr": "nlvr", "f30k": "F30K"}


def meter_demo_config(demo, log_dir, named=("task_finetune_vqa_clip_bert", "clip_randaug", "tiny_meter", "peft_apt"),
                      **updates):
    """The resolved Sacred config of METER (task config, then tiny_meter, then the method) on the demo world, with
    the demo tokenizer, as the shell scripts pass it; `updates` are Sacred updates (unknown keys are errors)."""
    cfg = {
        "data_root": demo["data_root"], "tokenizer": demo["tokenizer"], "vocab_size": demo["vocab_size"],
        "vqav2_label_size": demo["vqa_labels"], "cls_token_id": demo["cls_token_id"], "log_dir": str(log_dir),
        "accelerator": "cpu", "num_workers": 0, "per_gpu_batchsize": 4, "batch_size": 4, "num_gpus": 1,
        "max_steps": 3, "val_check_interval": 3, "drop_rate": 0.0,
    }
    cfg.update(updates)
    return ex.run("resolved_config", named_configs=list(named), config_updates=cfg,
                  options={"--loglevel": "ERROR"}).result


def meter_dm(cfg):
    return make_meter_datamodule(cfg, dist=True)


@pytest.mark.parametrize("method,options", [("apt", {"num_prompts": 4, "apt_rank": 2}), ("lora", {"lora_rank": 2})])
def test_fit_then_test_only_on_demo_vqa(demo, tmp_path, method, options):
    cfg = meter_demo_config(demo, tmp_path, named=("task_finetune_vqa_clip_bert", "clip_randaug", "tiny_meter",
                                                   f"peft_{method}"), peft_options=options)
    fit = run(cfg, METERTransformerSS, meter_dm)
    trainer, model, dm = fit["trainer"], fit["model"], fit["datamodule"]
    assert trainer.global_step == 3 and shared_apt.peft_config(model).method == method
    assert 0.0 <= fit["metrics"]["vqa/val/score_epoch"] <= 1.0 and "val/the_metric" in fit["metrics"]

    # METER's data: VQA trains on train + the whole val table and validates on val; CLIP transforms, RGBA decoding
    vqa = dm.dm_dicts["vqa"]
    assert vqa.train_dataset.names == ["vqav2_train", "vqav2_val"] and vqa.val_dataset.names == ["vqav2_val"]
    assert vqa.test_dataset.names == ["vqav2_test"]
    assert vqa.train_dataset.transform_keys == ["clip_randaug"] and vqa.val_dataset.transform_keys == ["clip"]
    assert vqa.train_dataset.image_mode == "RGBA"
    sample = vqa.val_dataset[0]
    assert sample["image"][0].shape == (3, cfg["image_size"], cfg["image_size"])

    # the learning rate is applied once: learning_rate x peft_lr_scale, the config keeps both as given
    assert (model.hparams.config["learning_rate"], model.hparams.config["peft_lr_scale"]) == (5e-6, 5)
    groups = {g["name"]: g["initial_lr"] for g in trainer.optimizers[0].param_groups}
    assert groups["base/decay"] == pytest.approx(2.5e-5)
    assert groups["cross_modal/decay"] == pytest.approx(2.5e-5 * 5)

    ckpt = fit["last_model_path"]
    assert os.path.isfile(ckpt) and os.path.isfile(os.path.join(fit["tuned_path"], "tuned.safetensors"))
    assert load_checkpoint(ckpt)["hyper_parameters"]["config"]["peft_lr_scale"] == 5

    ev = run({**cfg, "test_only": True, "load_path": ckpt}, METERTransformerSS, meter_dm)
    trained = {k: v for k, v in model.state_dict().items()}
    loaded = ev["model"].state_dict()
    assert trained.keys() == loaded.keys()
    for k in trained:
        torch.testing.assert_close(loaded[k], trained[k], rtol=0, atol=0, msg=k)
    assert "vqa/val/score_epoch" in ev["metrics"]
    submission = os.path.join(str(tmp_path), "vqa_submit_last.json")
    rows = json.load(open(submission))
    test_qids = {q for row in ev["datamodule"].test_dataset.datasets[0].table["question_id"].to_pylist() for q in row}
    assert sorted(r["question_id"] for r in rows) == sorted(test_qids)
    assert all(isinstance(r["answer"], str) and r["answer"] for r in rows)


def test_nlvr2_checkpoint_selection_uses_dev(demo, tmp_path):
    """docs/backbones.md, METER: val/the_metric for NLVR2 is the dev accuracy (ViLT keeps upstream's test-P)."""
    from vilt.modules.vilt_module import ViLTransformerSS

    assert METERTransformerSS.nlvr2_selection_split == "dev" and ViLTransformerSS.nlvr2_selection_split == "test"
    cfg = meter_demo_config(demo, tmp_path, named=("task_finetune_nlvr2_clip_bert", "tiny_meter", "peft_lora"),
                            max_steps=2, val_check_interval=2, peft_options={"lora_rank": 2})
    out = run(cfg, METERTransformerSS, meter_dm)
    m = out["metrics"]
    assert m["val/the_metric"] == pytest.approx(m["nlvr2/dev/accuracy_epoch"])
    assert "nlvr2/test/accuracy_epoch" in m   # test-P is still computed and logged
    # the checkpoint callback selected on that value
    assert float(out["trainer"].checkpoint_callback.best_model_score) == pytest.approx(m["nlvr2/dev/accuracy_epoch"])


def test_split_names_default_and_override(demo):
    cfg = meter_data_config({"dataset_split_names": {"vqa": {"val": ["vqav2_rest_val"]}}})
    assert cfg["dataset_split_names"]["vqa"] == {"val": ["vqav2_rest_val"]}   # a given key wins as a whole
    assert cfg["dataset_split_names"]["gcc"] == METER_SPLIT_NAMES["gcc"]
    sacred = meter_demo_config(demo, "unused")
    assert sacred["dataset_split_names"] == METER_SPLIT_NAMES


def _roberta_style_tokenizer(folder):
    """A tiny byte-level BPE tokenizer with roberta-base's special-token ids (<s> 0, <pad> 1, </s> 2, <unk> 3,
    <mask> 4), saved as vocab.json + merges.txt in a folder whose name contains "roberta"."""
    from tokenizers import ByteLevelBPETokenizer

    from shared_apt.vl.data.text import get_tokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a red circle left of a blue square", "is there a green triangle"] * 5, vocab_size=300,
                            min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            show_progress=False)
    os.makedirs(folder, exist_ok=True)
    bpe.save_model(folder)
    return get_tokenizer(folder)


def test_tokenizer_must_match_the_text_encoder(demo, tmp_path):
    from shared_apt.vl.data.text import get_tokenizer

    wordpiece = get_tokenizer(demo["tokenizer"])        # [PAD] 0, [CLS] 2
    cfg = meter_demo_config(demo, tmp_path)
    check_tokenizer(cfg, wordpiece)                     # demo mode: BERT text encoder (pad 0), cls_token_id from demo
    assert text_encoder_config(cfg).model_type == "bert"

    with pytest.raises(ValueError, match="cls_token_id=2"):
        check_tokenizer({**cfg, "cls_token_id": None}, wordpiece)       # BERT's [CLS] 101 is not the demo's
    check_tokenizer({**cfg, "cls_token_id": None, "peft": "full"}, wordpiece)   # full tuning has no class token
    with pytest.raises(ValueError, match=r"pad_token_id is 1 \(set text_encoder_config.pad_token_id=0\)"):
        # a RoBERTa text encoder fed the WordPiece ids: positions would count its pads
        check_tokenizer({**cfg, "tokenizer": "roberta-base"}, wordpiece)
    with pytest.raises(ValueError, match="max_text_len=600"):
        check_tokenizer({**cfg, "max_text_len": 600}, wordpiece)

    roberta = _roberta_style_tokenizer(str(tmp_path / "tiny_roberta_bpe"))
    assert (roberta.pad_token_id, roberta.cls_token_id) == (1, 0)
    rcfg = {**cfg, "tokenizer": str(tmp_path / "tiny_roberta_bpe"), "cls_token_id": None}
    assert text_encoder_config(rcfg).model_type == "roberta"
    check_tokenizer(rcfg, roberta)                     # pad 1 and <s> 0 are roberta-base's
    with pytest.raises(ValueError, match="unknown key"):
        text_encoder_config({**cfg, "text_encoder_config": {"hiden_size": 64}})


def test_datamodule_rejects_a_mismatched_tokenizer(demo, tmp_path):
    cfg = meter_demo_config(demo, tmp_path, cls_token_id=7)
    with pytest.raises(ValueError, match="does not match the METER text encoder"):
        make_meter_datamodule(cfg)


def test_unknown_key_on_the_command_line_is_an_error(demo):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "METER", "run.py"), "with",
                           "task_finetune_vqa_clip_bert", "tiny_meter", "learning_rat=1e-3", "per_gpu_batchsize=2",
                           f"data_root={demo['data_root']}", f"tokenizer={demo['tokenizer']}"],
                          capture_output=True, text=True, timeout=300)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "learning_rat" in out and ("ConfigAddedError" in out or "UnknownConfigKeyError" in out), out[-2000:]


def test_command_line_added_keys_for_both_experiments():
    """The shared check finds misspelt keys even where Sacred's own bookkeeping misses them (ViLT's config has two
    scopes, and Sacred intersects "added" over scopes)."""
    import types

    from shared_apt.vl.training.run import command_line_added_keys
    from vilt.config import ex as vilt_ex

    for experiment, task in ((vilt_ex, "task_finetune_vqa"), (ex, "task_finetune_vqa_clip_bert")):
        fake = types.SimpleNamespace(
            config_modifications=types.SimpleNamespace(added=set()),
            meta_info={"options": {"UPDATE": [task, "learning_rat=1e-3", "learning_rate=1e-4",
                                              "peft_options.num_prompts=4", "loss_names.vqa=2"]}})
        assert command_line_added_keys(experiment, fake) == {"learning_rat", "peft_options.num_prompts"}


def test_scripts_run_then_eval_with_model_meter(demo):
    cache = os.path.dirname(os.path.dirname(demo["data_root"]))     # ensure_demo's layout: <cache>/<tag>/data
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "LOAD_PATH", "CKPT", "METHOD")}
    env.update({"MODEL": "meter", "DEMO_CACHE": cache, "DEMO_STEPS": "2", "PER_GPU_BATCHSIZE": "4",
                "OMP_NUM_THREADS": "1"})
    # the three run scripts in parallel, then the three eval scripts (which pick up the runs' last.ckpt)
    for kind in ("run", "eval"):
        procs = {t: subprocess.Popen([os.path.join(ROOT, "script", f"{SCRIPT[t]}_{kind}.sh")], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for t in TASKS}
        for t, p in procs.items():
            out, _ = p.communicate(timeout=400)
            assert p.returncode == 0, f"MODEL=meter script/{SCRIPT[t]}_{kind}.sh failed:\n{out[-4000:]}"
            assert "METER/run.py with task_finetune_" in out and "tiny_meter" in out
            if kind == "eval":
                assert "no demo checkpoint" not in out, out[-2000:]
                assert f"load_path={cache}/runs/meter/" in out
    runs = os.path.join(cache, "runs", "meter")
    rows = json.load(open(os.path.join(runs, "vqa_submit_last.json")))
    assert rows and {"question_id", "answer"} == set(rows[0])
    for exp in ("finetune_vqa", "finetune_nlvr2", "finetune_irtr_f30k"):
        version = os.path.join(runs, f"{exp}_seed0_from_", "version_0")
        assert os.path.isfile(os.path.join(version, "checkpoints", "last.ckpt"))
        assert os.path.isfile(os.path.join(version, "tuned", "tuned.safetensors"))
        cfg = load_checkpoint(os.path.join(version, "checkpoints", "last.ckpt"))["hyper_parameters"]["config"]
        assert cfg["peft"] == "apt" and cfg["image_size"] == 64
