"""script/clip_{base2new,fewshot,xd,eval}.sh run under `sh` (dash on Debian/Ubuntu) on the CLIP demo: a small shapes
world and a tiny CLIP (random weights: these tests check the plumbing, not accuracy) placed where the scripts' demo
mode finds them, one epoch, 2 shots. The evaluation script reloads the tuned weights and reproduces the run's
accuracies."""
import json
import os
import shutil
import subprocess

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ("clip_base2new.sh", "clip_fewshot.sh", "clip_xd.sh", "clip_eval.sh")
SHELL = shutil.which("dash") or "sh"


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    from clip_apt.datasets.demo_coop import make_coop_root
    from clip_apt.datasets.demo_world import make_world
    from clip_apt.modules.clip_model import build_clip
    from clip_apt.pretrain import DEMO_GEOMETRY

    cache = tmp_path_factory.mktemp("clip cache")  # a space in the path
    world = make_world(str(cache / "clip" / "world"), per_class=(3, 2, 2), pretrain_per_class=0)
    make_coop_root(world, str(cache / "clip" / "coop_root"))
    torch.manual_seed(0)
    torch.save(build_clip(DEMO_GEOMETRY).state_dict(), str(cache / "clip" / "tiny_clip.pt"))
    return str(cache)


def _env(cache, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATA_ROOT", "CLIP_PATH", "METHOD", "DATASET", "CKPT", "LOAD_PATH", "OUTPUT_DIR", "EXTRA")}
    env.update(DEMO_CACHE=cache, DEMO_EPOCHS="1", SHOTS="2", OMP_NUM_THREADS="1", **extra)
    return env


def test_scripts_have_the_variables_at_the_top():
    for name in SCRIPTS:
        text = open(os.path.join(ROOT, "script", name)).read()
        for var in ("METHOD", "DATASET", "SHOTS", "SEED", "DATA_ROOT", "CLIP_PATH"):
            assert f': "${{{var}:=' in text, (name, var)
        p = subprocess.run([SHELL, "-n", os.path.join(ROOT, "script", name)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    assert ': "${CKPT:=' in open(os.path.join(ROOT, "script", "clip_eval.sh")).read()


def test_protocol_scripts_then_eval_on_the_demo(demo_cache):
    runs = os.path.join(demo_cache, "clip", "script_runs")
    procs = {name: subprocess.Popen([SHELL, os.path.join("script", name)], cwd=ROOT, env=_env(demo_cache, **extra),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, extra in (("clip_base2new.sh", {}), ("clip_fewshot.sh", {"METHOD": "vpt_shallow"}),
                                 ("clip_xd.sh", {"PROTOCOL": "dg", "LABEL": "coop (dg)"}))}
    for name, p in procs.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, f"{name}:\n{out[-3000:]}"
    run_dir = os.path.join(runs, "base2new", "world", "shots_2", "clip_coop_seed1")
    b2n = json.load(open(os.path.join(run_dir, "results.json")))
    assert (b2n["method"], b2n["method_label"], b2n["dataset"], b2n["protocol"], b2n["num_shots"], b2n["seed"]) == \
        ("coop", "coop", "world", "base2new", 2, 1)
    assert {"base_acc", "new_acc", "harmonic_mean", "trainable_params"} <= set(b2n)
    few = json.load(open(os.path.join(runs, "fewshot", "world", "shots_2", "clip_vpt_shallow_seed1", "results.json")))
    assert few["protocol"] == "fewshot" and 0 <= few["acc"] <= 100 and few["trainable_params"] > 0
    dg = json.load(open(os.path.join(runs, "dg", "imagenet", "shots_2", "coop__dg__coop_seed1", "results.json")))
    assert dg["method_label"] == "coop (dg)" and dg["dataset"] == "imagenet"
    assert sorted(dg["target_accs"]) == ["imagenet_a", "imagenet_r", "imagenet_sketch", "imagenetv2"]
    # the evaluation script reloads the tuned weights and reproduces the run
    p = subprocess.run([SHELL, os.path.join(ROOT, "script", "clip_eval.sh")], cwd=demo_cache,
                       env=_env(demo_cache), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ev = json.load(open(os.path.join(run_dir, "eval_results.json")))
    assert ev["load_path"] == os.path.join(run_dir, "tuned")
    assert (ev["base_acc"], ev["new_acc"]) == (b2n["base_acc"], b2n["new_acc"])
    # without a run to evaluate, the eval script refuses (never untrained weights)
    p = subprocess.run([SHELL, os.path.join(ROOT, "script", "clip_eval.sh")], cwd=demo_cache,
                       env=_env(demo_cache, SEED="7"), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no tuned weights" in p.stderr and "clip_base2new.sh" in p.stderr
