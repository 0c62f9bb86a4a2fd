"""Every shell entry point runs on the demo world on a fresh cache (DATA_ROOT unset): run, then eval."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ("vqa", "nlvr", "f30k")


def _env(cache):
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "LOAD_PATH", "CKPT", "METHOD", "MODEL")}
    env.update({"DEMO_CACHE": cache, "DEMO_STEPS": "2", "PER_GPU_BATCHSIZE": "4", "OMP_NUM_THREADS": "1"})
    return env


def test_scripts_have_editable_variables():
    for task in TASKS:
        for kind in ("run", "eval"):
            text = open(os.path.join(ROOT, "script", f"{task}_{kind}.sh")).read()
            for var in ("MODEL", "METHOD", "DATA_ROOT", "LOAD_PATH", "NUM_GPUS", "PER_GPU_BATCHSIZE"):
                assert f': "${{{var}:=' in text, (task, kind, var)
            if kind == "eval":
                assert ': "${CKPT:=' in text


def test_run_then_eval_scripts_on_the_demo_world(demo):
    cache = os.path.dirname(os.path.dirname(demo["data_root"]))     # ensure_demo's layout: <cache>/<tag>/data
    env = _env(cache)
    # the three run scripts in parallel, then the three eval scripts (which pick up the runs' last.ckpt)
    for kind in ("run", "eval"):
        procs = {t: subprocess.Popen([os.path.join(ROOT, "script", f"{t}_{kind}.sh")], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for t in TASKS}
        for t, p in procs.items():
            out, _ = p.communicate(timeout=400)
            assert p.returncode == 0, f"script/{t}_{kind}.sh failed:\n{out[-4000:]}"
            if kind == "eval":
                assert "no demo checkpoint" not in out, out[-2000:]
                assert "load_path=" in out
    runs = os.path.join(cache, "runs", "vilt")
    assert os.path.isfile(os.path.join(runs, "vqa_submit_last.json"))
    for exp in ("finetune_vqa_randaug", "finetune_nlvr2_randaug", "finetune_irtr_f30k_randaug"):
        assert os.path.isfile(os.path.join(runs, f"{exp}_seed0_from_", "version_0", "checkpoints", "last.ckpt"))
        assert os.path.isfile(os.path.join(runs, f"{exp}_seed0_from_", "version_0", "tuned", "tuned.safetensors"))


def test_script_rejects_unknown_method(demo):
    env = _env(os.path.dirname(os.path.dirname(demo["data_root"])))
    env["METHOD"] = "prefix_tuning"
    p = subprocess.run([os.path.join(ROOT, "script", "vqa_run.sh")], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "METHOD=prefix_tuning" in p.stderr
