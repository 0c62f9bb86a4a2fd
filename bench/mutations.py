"""Mutation check of the wiring tests: each mutation below is a small textual patch that puts one method in the wrong
place (or gives it a wrong initialisation / constant); the test suite must fail on every one of them.

Run from the repository root (with the project's virtual environment):

    .venv/bin/python bench/mutations.py                 # every mutation
    .venv/bin/python bench/mutations.py apt_pre_ln lora_qk   # some of them, by name
    .venv/bin/python bench/mutations.py --list

For each mutation the repository's tracked and untracked source files (not .venv, .git, caches) are copied to a
temporary directory, the patch is applied there (the patch text must be found exactly once, else the mutation is
reported as STALE), and the relevant test files run with that copy first on the Python path. A mutation is KILLED
when pytest fails, SURVIVED when it passes. Exit status 1 if any mutation survives or is stale.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = ["tests/test_fidelity.py", "tests/test_methods.py"]
VILT = "ViLT/vilt/modules/vilt_module.py"
METER = "METER/meter/modules/meter_module.py"
APT = "shared_apt/peft/methods/apt.py"
LORA = "shared_apt/peft/methods/lora.py"

# name -> (description, [(file, old, new), ...])
MUTATIONS = {
    "apt_pre_ln": ("ViLT APT reads the pre-LN block input", [
        (VILT, "query_input=a, out_proj=a.proj,", "query_input=blk, out_proj=a.proj,")]),
    "apt_after_proj_drop": ("ViLT APT after proj_drop", [
        (VILT, "query_input=a, out_proj=a.proj,", "query_input=a, out_proj=a.proj_drop,")]),
    "lora_doubled": ("LoRA update doubled", [
        (LORA, "d = (self.dropouts[name](x) @ self.lora_A[name]) @ self.lora_B[name]",
         "d = 2 * (self.dropouts[name](x) @ self.lora_A[name]) @ self.lora_B[name]")]),
    "lora_qk": ("LoRA on q,k instead of q,v", [
        (LORA, 'targets: tuple = option(("q", "v")', 'targets: tuple = option(("q", "k")')]),
    "lora_shared_mask": ("one LoRA dropout mask for q and v of a fused qkv", [
        (LORA, "        pieces, cursor, total = [], 0, out.shape[-1]\n",
         "        pieces, cursor, total = [], 0, out.shape[-1]\n        hx = next(iter(self.dropouts.values()))(x)\n"),
        (LORA, "d = (self.dropouts[name](x) @ self.lora_A[name])", "d = (hx @ self.lora_A[name])")]),
    "adapter_init_x10": ("adapter init std x10", [
        ("shared_apt/peft/methods/adapter.py", "Bottleneck(dim, bottleneck, std=0.01)",
         "Bottleneck(dim, bottleneck, std=0.1)")]),
    "lora_A_std_0.02": ("LoRA A std 0.02", [
        (LORA, "nn.init.normal_(self.lora_A[name], std=1.0)", "nn.init.normal_(self.lora_A[name], std=0.02)")]),
    "prompt_init_x10": ("shallow/deep prompt init x10", [
        ("shared_apt/peft/methods/prompt.py", "nn.init.uniform_(self.prompts, -v, v)",
         "nn.init.uniform_(self.prompts, -10 * v, 10 * v)")]),
    "apt_prompt_init_x10": ("APT prompt init x10", [
        (APT, "nn.init.normal_(self.prompts, std=0.02)", "nn.init.normal_(self.prompts, std=0.2)")]),
    "pa_scale_1": ("scaled PA scale 4 -> 1", [
        ("shared_apt/peft/methods/adapter.py", 'scale: float = option(4.0,', 'scale: float = option(1.0,')]),
    "vilt_shallow_prepend": ("ViLT shallow prompts prepended", [
        (VILT, 't.install_extra_tokens, "append")', 't.install_extra_tokens, "prepend")')]),
    "apt_dropout_after_max": ("APT attention dropout after the row max", [
        (APT, "    if dropout_p > 0.0:\n        a = F.dropout(a, dropout_p, training)\n",
         "    a_undropped = a\n    if dropout_p > 0.0:\n        a = F.dropout(a, dropout_p, training)\n"),
        (APT, "        scale = a.amax(dim=-1, keepdim=True)",
         "        scale = a_undropped.amax(dim=-1, keepdim=True)")]),
    "vilt_adapter_before_mlp_drop": ("ViLT FFN adapter before the MLP's final dropout", [
        (VILT, "ffn_out=blk.mlp,", "ffn_out=blk.mlp.fc2,")]),
    "vilt_adapter_before_proj_drop": ("ViLT attention adapter before the projection dropout", [
        (VILT, "adapter_out=a, kv_norm", "adapter_out=a.proj, kv_norm")]),
    "meter_pa_before_ln": ("METER scaled PA before dropout and LayerNorm", [
        (METER, "branch=att.output, adapter_out", "branch=att.output.dense, adapter_out")]),
    "vilt_segment_frozen": ("ViLT BERT segment embedding left out of the trainable set", [
        (VILT, ' "text_embeddings.token_type_embeddings",', "")]),
    "meter_scale_trained": ("METER APT scale trained by default", [
        (METER, 'option_defaults={"apt_train_scale": False}', 'option_defaults={"apt_train_scale": True}')]),
    "apt_autocast_unsafe": ("fused APT forward as before the fix: autocast on inside, inputs not cast", [
        (APT, "        with _autocast_off(x.device.type):\n            a = torch.relu",
         "        with contextlib.nullcontext():\n            a = torch.relu"),
        (APT, "    dtype = compute_dtype(x, keys, prompts)\n    return _FusedAPT",
         "    dtype = torch.promote_types(x.dtype, keys.dtype)\n    return _FusedAPT")]),
    "apt_alpha_not_detached_reference": ("reference APT alpha not detached", [
        (APT, "    if detach_alpha:\n        scale = scale.detach()\n", "")]),
}

IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.pyc", ".pytest_cache", "result", "results")


def copy_repo(dst: str) -> None:
    for name in os.listdir(ROOT):
        if name in (".venv", ".git", "shared") or name.startswith("."):
            continue
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dst, name), ignore=IGNORE)
        elif os.path.isfile(src):
            shutil.copy2(src, os.path.join(dst, name))


def apply_patch(root: str, patches: list) -> str | None:
    for rel, old, new in patches:
        path = os.path.join(root, rel)
        with open(path) as f:
            text = f.read()
        if text.count(old) != 1:
            return f"{rel}: patch text found {text.count(old)} times (expected once): {old!r}"
        with open(path, "w") as f:
            f.write(text.replace(old, new))
    return None


def run(names: list, tests: list) -> int:
    python = sys.executable
    bad = 0
    print(f"{'mutation':32s} {'result':9s} {'time':>6s}  description")
    for name in names:
        desc, patches = MUTATIONS[name]
        with tempfile.TemporaryDirectory(prefix="apt-mutation-") as tmp:
            copy_repo(tmp)
            problem = apply_patch(tmp, patches)
            if problem:
                print(f"{name:32s} {'STALE':9s} {0:6.0f}  {desc}: {problem}")
                bad += 1
                continue
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([tmp, os.path.join(tmp, "ViLT"), os.path.join(tmp, "METER")])
            t0 = time.time()
            proc = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                  cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            dt = time.time() - t0
            killed = proc.returncode != 0
            first = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")), "")
            print(f"{name:32s} {'KILLED' if killed else 'SURVIVED':9s} {dt:6.0f}  {desc}"
                  + (f"  [{first[7:][:90]}]" if first else ""), flush=True)
            bad += not killed
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--tests", default=",".join(TESTS), help="comma-separated test files (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.list:
        for name, (desc, _) in MUTATIONS.items():
            print(f"{name:32s} {desc}")
        return 0
    unknown = [n for n in args.names if n not in MUTATIONS]
    if unknown:
        ap.error(f"unknown mutation(s) {unknown}; see --list")
    return run(args.names or list(MUTATIONS), args.tests.split(","))


if __name__ == "__main__":
    sys.exit(main())
