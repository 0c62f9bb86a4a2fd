"""The registries and the layering: a method defined in THIS file only is usable from apply, the Sacred config and
the profile command line; the method library imports nothing above it; no file refers to a document outside the
repository."""
import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

import shared_apt
from shared_apt.peft.config import NUMBER, MethodConfig, option
from shared_apt.peft.methods.base import TuningModule
from shared_apt.peft.sites import map_output
from tiny import vilt_batch, vilt_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------------------
# A toy method: a learnable bias added to every attention output. Its whole definition:


@dataclass
class ToyConfig(MethodConfig):
    legacy_prefix: ClassVar[str] = "toy_"
    paper_options: ClassVar[tuple] = ("init",)

    init: float = option(0.5, NUMBER, "initial value of the bias")


class ToyBias(TuningModule):
    method = "toy"

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.bias = nn.Parameter(torch.full((dim,), float(init)))

    def attach(self, site):
        self.register(site.host)
        self.hook_output(site.out_proj, lambda args, out: map_output(out, lambda t: t + self.bias))
        return self


def attach_toy(spec, config: ToyConfig) -> list:
    return [ToyBias(site.dim, config.init).attach(site) for site in spec.attention_sites]


@pytest.fixture
def toy():
    shared_apt.register_method("toy", ToyConfig, attach_toy)
    yield
    shared_apt.unregister_method("toy")


def _tiny_vilt(**cfg):
    from vilt.modules import ViLTransformerSS

    torch.manual_seed(0)
    return ViLTransformerSS(vilt_config(**cfg)).eval()


def test_toy_method_through_apply_and_tuned_weights(toy, tmp_path):
    model = _tiny_vilt(peft="classifier")
    base = _tiny_vilt(peft="classifier")
    shared_apt.remove(model)
    shared_apt.apply(model, "toy", toy_init=0.25)  # its flat key works as for the built-in methods
    assert shared_apt.peft_config(model).init == 0.25 and shared_apt.peft_config(model).toy_init == 0.25
    # d = 32, 2 layers, one attention module per layer: 2 x 32 parameters
    assert shared_apt.updated_parameter_count(model) == 2 * 32
    biases = {n for n in shared_apt.trainable_parameters(model) if ".peft_toy." in n}
    assert biases == {f"transformer.blocks.{i}.attn.peft_toy.bias" for i in range(2)}
    batch = vilt_batch(model.hparams.config)
    with torch.no_grad():
        for m in shared_apt.tuning_modules(model):
            m.bias.zero_()
        # same patch order in both calls (ViLT draws it): bit-equality needs the same summation order
        torch.manual_seed(1)
        ours = model.infer(batch)["cls_feats"]
        torch.manual_seed(1)
        assert torch.equal(ours, base.infer(batch)["cls_feats"])
        for m in shared_apt.tuning_modules(model):
            m.bias.copy_(torch.linspace(-1.0, 1.0, 32))  # not uniform: LayerNorm removes a uniform shift
        assert not torch.allclose(model.infer(batch)["cls_feats"], base.infer(batch)["cls_feats"])
    shared_apt.save_tuned(model, str(tmp_path))
    meta = json.loads((tmp_path / "tuned_config.json").read_text())
    assert meta["peft"] == {"method": "toy", "init": 0.25}
    other = _tiny_vilt(peft="classifier")
    shared_apt.remove(other)
    shared_apt.load_tuned(other, str(tmp_path))
    with torch.no_grad():
        assert torch.equal(other.infer(batch)["cls_feats"], model.infer(batch)["cls_feats"])
    with pytest.raises(shared_apt.ConfigError, match="init='x'"):
        shared_apt.apply(_tiny_vilt(peft="full"), "toy", init="x")


def test_toy_method_from_the_sacred_config(toy):
    from vilt.config import ex

    spec = importlib.util.spec_from_file_location("vilt_run", os.path.join(REPO, "ViLT", "run.py"))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    c = ex._create_run(named_configs=["peft_toy"], config_updates={"toy_init": 0.125}).config
    assert c["peft"] == "toy" and c["peft_options"] == {"toy_init": 0.5} and c["peft_lr_scale"] == 5
    model = _tiny_vilt(peft=c["peft"], peft_options=c["peft_options"], toy_init=c["toy_init"])
    assert shared_apt.peft_config(model).init == 0.125
    assert shared_apt.updated_parameter_count(model) == 2 * 32


def test_toy_method_from_the_profile_command_line(toy, tmp_path, capsys):
    from shared_apt.harness.profile import main

    out = tmp_path / "rows.json"
    assert main(["--backbone", "vilt-b32", "--method", "classifier,toy", "--init", "0.1", "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["toy"]["updated_params"] == 12 * 768  # ViLT-B/32: 12 attention modules of width 768
    assert "| toy |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--backbone", "vilt-b32", "--method", "toyy"])


def test_legacy_keys_map_to_the_methods_own_options():
    cfg = shared_apt.PeftConfig("scaled_pa", pa_bottleneck=8, pa_scale=2.0)
    assert (cfg.bottleneck, cfg.scale) == (8, 2.0)
    assert shared_apt.PeftConfig("shallow_prompt", prompt_placement="prepend").placement == "prepend"
    assert shared_apt.PeftConfig("lora", lora_targets=["q", "k"]).targets == ("q", "k")
    with pytest.raises(shared_apt.ConfigError, match="given twice"):
        shared_apt.PeftConfig("apt", rank=4, apt_rank=8)
    with pytest.raises(shared_apt.ConfigError, match="lora_rank=8 has no meaning for method 'apt'"):
        shared_apt.PeftConfig("apt", lora_rank=8)


def test_tuned_weights_of_format_1_still_load(tmp_path):
    """A directory written before the method registry: every method's options under flat keys."""
    from safetensors.torch import save_file

    src = _tiny_vilt(peft="apt", peft_options={"num_prompts": 3})
    tensors = shared_apt.tuned_state_dict(src)
    save_file(tensors, str(tmp_path / "tuned.safetensors"))
    flat = {"method": "apt", "num_prompts": 3, "apt_rank": 4, "apt_variant": "lowrank", "apt_alpha": "token",
            "apt_detach_alpha": True, "apt_train_scale": True, "apt_dropout": 0.0, "apt_fast": True, "lora_rank": 4,
            "lora_dropout": 0.1, "lora_targets": ["q", "v"], "adapter_bottleneck": 96, "pa_bottleneck": 96,
            "pa_scale": 4.0, "prompt_placement": "default"}
    meta = {"format_version": 1, "peft": flat, "backbone": dict(src.peft_spec().signature),
            "tensors": {n: list(t.shape) for n, t in tensors.items()}}
    (tmp_path / "tuned_config.json").write_text(json.dumps(meta))
    dst = _tiny_vilt(peft="classifier")
    shared_apt.remove(dst)
    shared_apt.load_tuned(dst, str(tmp_path))
    assert shared_apt.peft_config(dst).num_prompts == 3
    for n, t in tensors.items():
        assert torch.equal(dict(dst.named_parameters())[n], t), n


# ---------------------------------------------------------------------------------------------------------------
# Layers


FORBIDDEN_BELOW_PEFT = ("lightning", "pytorch_lightning", "lightning_fabric", "sacred", "pyarrow", "shared_apt.vl",
                        "shared_apt.harness", "vilt", "meter", "clip_apt", "sd_apt")


def test_method_library_imports_nothing_above_it():
    code = ("import sys, shared_apt, shared_apt.peft, shared_apt.peft.api, shared_apt.peft.hf, "
            "shared_apt.peft.accounting, shared_apt.peft.registry; print('\\n'.join(sorted(sys.modules)))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "ViLT"), os.path.join(REPO, "METER")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    loaded = out.split()
    assert "shared_apt.peft.methods.apt" in loaded  # the built-in methods are registered
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_BELOW_PEFT)]
    assert bad == []


def _imports(path: str, package: str) -> set:
    """Absolute names of every module imported by the file (relative imports resolved against ``package``)."""
    tree = ast.parse(open(path).read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("layer,forbidden", [
    ("peft", ("shared_apt.vl", "shared_apt.harness", "lightning", "pytorch_lightning", "sacred", "vilt", "meter")),
    ("vl", ("shared_apt.harness",)),
])
def test_imports_point_down_only(layer, forbidden):
    root = os.path.join(REPO, "shared_apt", layer)
    bad = []
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                package = rel if f == "__init__.py" else rel.rsplit(".", 1)[0]
                package = package[: -len(".__init__")] if package.endswith(".__init__") else package
                bad += [(rel, n) for n in _imports(path, package)
                        if any(n == x or n.startswith(x + ".") for x in forbidden)]
    assert bad == []


def test_import_resolution_of_the_scan():
    """The scanner above resolves relative imports (so a relative import upwards cannot slip through)."""
    path = os.path.join(REPO, "shared_apt", "harness", "profile.py")
    assert "shared_apt.peft.api" in _imports(path, "shared_apt.harness")


# ---------------------------------------------------------------------------------------------------------------
# No references to documents outside the repository

SHEETS = ["apt", "vilt", "meter", "official_checkpoints", "clip", "stable_diffusion"]
PATTERN = re.compile(r"\b(" + "|".join(SHEETS) + r")\.md\b|\bspecs/|shared/" + "specs")
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache"}


def test_no_file_refers_to_fact_sheets_outside_the_repository():
    hits = []
    for d, dirs, files in os.walk(REPO):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.endswith(".egg-info")]
        for f in files:
            path = os.path.join(d, f)
            try:
                text = open(path, encoding="utf-8").read()
            except (UnicodeDecodeError, OSError):
                continue
            for i, line in enumerate(text.splitlines(), 1):
                if PATTERN.search(line):
                    hits.append(f"{os.path.relpath(path, REPO)}:{i}: {line.strip()[:100]}")
    assert hits == [], "\n".join(hits[:40])


def test_fact_sheet_pattern_matches_what_it_must():
    md = "." + "md"  # spelled in pieces so that this file does not match itself
    assert PATTERN.search("(see apt" + md + " §2.3)") and PATTERN.search("vilt" + md) and PATTERN.search("spec" + "s/x")
    assert not PATTERN.search("docs/methods.md") and not PATTERN.search("README.md")
