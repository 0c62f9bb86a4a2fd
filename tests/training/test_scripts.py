"""Every shell entry point runs under `sh` (dash where /bin/sh is dash, as on Debian/Ubuntu) on the demo world: run
from the repository root, then eval as the authors' README does it (`cd ViLT; sh script/vqa_eval.sh`), with a space
in the repository path and in the cache path."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ("vqa", "nlvr", "f30k")
#: the file-name prefix of each task's scripts: the APT authors' README names the Flickr30K ones F30K_*.sh
PREFIX = {"vqa": "vqa", "nlvr": "nlvr", "f30k": "F30K"}
ENTRY_POINTS = [f"{PREFIX[t]}_{k}.sh" for t in TASKS for k in ("run", "eval")]


def _env(cache):
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "LOAD_PATH", "CKPT", "METHOD", "MODEL")}
    env.update({"DEMO_CACHE": cache, "DEMO_STEPS": "2", "PER_GPU_BATCHSIZE": "4", "OMP_NUM_THREADS": "1"})
    return env


@pytest.fixture
def spaced(demo, tmp_path):
    """(repository root, demo cache) both reached through paths containing a space; the cache holds the session's
    demo world (linked) and a fresh runs/ folder."""
    repo = tmp_path / "my repo"
    repo.symlink_to(ROOT, target_is_directory=True)
    cache = tmp_path / "my cache"
    cache.mkdir()
    world = os.path.dirname(demo["data_root"])                      # ensure_demo's layout: <cache>/<tag>/data
    (cache / os.path.basename(world)).symlink_to(world, target_is_directory=True)
    return str(repo), str(cache)


def test_no_two_tracked_files_differ_only_in_case():
    """On a case-insensitive file system (macOS, Windows defaults) two such files are one: a clone would keep only one
    of them (an alias script that execs its lower-case twin would exec itself)."""
    p = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    seen = {}
    for name in p.stdout.splitlines():
        seen.setdefault(name.lower(), []).append(name)
    assert [v for v in seen.values() if len(v) > 1] == []


def test_scripts_have_editable_variables():
    for task in TASKS:
        for kind in ("run", "eval"):
            text = open(os.path.join(ROOT, "script", f"{PREFIX[task]}_{kind}.sh")).read()
            for var in ("MODEL", "METHOD", "DATA_ROOT", "LOAD_PATH", "NUM_GPUS", "PER_GPU_BATCHSIZE"):
                assert f': "${{{var}:=' in text, (task, kind, var)
            if kind == "eval":
                assert ': "${CKPT:=' in text


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_every_script_parses_under_the_shell(shell):
    folders = {"script": None, "ViLT/script": "vilt", "METER/script": "meter"}
    for folder, model in folders.items():
        names = sorted(os.listdir(os.path.join(ROOT, folder)))
        if folder != "script":
            assert names == sorted(ENTRY_POINTS), folder
            for n in names:
                assert f"MODEL={model}\n" in open(os.path.join(ROOT, folder, n)).read(), (folder, n)
        for n in names:
            p = subprocess.run([shell, "-n", os.path.join(ROOT, folder, n)], capture_output=True, text=True)
            assert p.returncode == 0, f"{shell} -n {folder}/{n}: {p.stderr}"


def test_run_then_eval_scripts_on_the_demo_world(spaced):
    repo, cache = spaced
    env = _env(cache)
    # the three run scripts in parallel with `sh` from the root, then the three eval scripts with `sh` from ViLT/
    # (the authors' file names; they pick up the runs' last.ckpt)
    for kind in ("run", "eval"):
        if kind == "run":
            cmds = {t: (["sh", f"script/{PREFIX[t]}_run.sh"], repo) for t in TASKS}
        else:
            cmds = {t: (["sh", f"script/{PREFIX[t]}_eval.sh"], os.path.join(repo, "ViLT"))
                    for t in TASKS}
        procs = {t: subprocess.Popen(c, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for t, (c, cwd) in cmds.items()}
        for t, p in procs.items():
            out, _ = p.communicate(timeout=400)
            assert p.returncode == 0, f"{cmds[t][0]} ({kind}) failed:\n{out[-4000:]}"
            if kind == "eval":
                assert "load_path=" + os.path.join(cache, "runs", "vilt") in out
    runs = os.path.join(cache, "runs", "vilt")
    assert os.path.isfile(os.path.join(runs, "vqa_submit_last.json"))
    for exp in ("finetune_vqa_randaug", "finetune_nlvr2_randaug", "finetune_irtr_f30k_randaug"):
        assert os.path.isfile(os.path.join(runs, f"{exp}_seed0_from_", "version_0", "checkpoints", "last.ckpt"))
        assert os.path.isfile(os.path.join(runs, f"{exp}_seed0_from_", "version_0", "tuned", "tuned.safetensors"))


def test_folder_sets_the_model_and_eval_refuses_to_run_without_a_checkpoint(spaced):
    """METER/script/ sets MODEL=meter whatever the environment says; with no METER checkpoint in the cache the
    evaluation stops (it never evaluates randomly initialised weights)."""
    repo, cache = spaced
    env = _env(cache)
    env["MODEL"] = "vilt"
    p = subprocess.run(["sh", os.path.join(repo, "METER", "script", "vqa_eval.sh")], env=env, cwd=cache,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "tiny meter" in p.stderr and "no demo checkpoint of finetune_vqa" in p.stderr


def test_script_rejects_unknown_method(demo):
    env = _env(os.path.dirname(os.path.dirname(demo["data_root"])))
    env["METHOD"] = "prefix_tuning"
    p = subprocess.run(["sh", "script/vqa_run.sh"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "METHOD=prefix_tuning" in p.stderr
