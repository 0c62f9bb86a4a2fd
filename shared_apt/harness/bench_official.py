"""This project's APT model against the authors' (shared_apt.harness.authors), same weights, side by side:

    python -m shared_apt.bench --backbone vilt-b32 --methods apt --against official [--precision 32|bf16|16]
                               [--recompute] [--attention sdpa|explicit] [--linear onednn|aten] [--json OUT]

Both models run the layers every method changes (ViLT: 12 blocks + final LN; METER: the co-attention layers of both
streams) on the same random token batch. The project model is built with APT (random non-trivial APT parameters),
the authors' layers are filled from it through the official-checkpoint converter (``to_official``), and their
outputs are compared (eval, no grad) before anything is timed: at ``--precision 32`` a difference above 1e-4 is an
error. Then, round by round, each model in turn: inference (no grad, eval; the fastest of ``--infer-reps`` calls;
the project with its APT key cache, as deployed), the training step (forward, backward, AdamW on the APT parameters;
the backbone is frozen in both), each the median over rounds after a warm-up. Peak training memory: the measured
layers' weights + optimiser state + the largest amount of tensor memory alive during one training step above what
was alive before it (CUDA: the allocator's peak; CPU: every tensor an operator returns is tracked until freed).

Ratios are this project / the authors' (below 1: the project is faster or smaller).
"""
from __future__ import annotations

import contextlib
import statistics
import sys
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..peft import api
from ..peft.methods.apt import cached_keys
from ..vl.speed import apply_speed_options, set_linear_impl
from . import authors as authors_mod
from .bench import _cpu_name, _timed
from .profile import load_backbone, method_options

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storages alive at once among those created while the mode is active."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen = set()

    def _free(self, key, n):
        self._seen.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                s = t.untyped_storage()
                key = id(s)
                if key not in self._seen:
                    self._seen.add(key)
                    self.live += s.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(s, self._free, key, s.nbytes())
        return out


def _perturb(model, seed: int = 7) -> None:
    """Non-trivial APT parameters (W2 = 0 and s = 0 at initialisation would hide half of the module)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in api.tuning_modules(model):
            for p in m.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g).to(p.device))


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure_against_official(backbone: str = "vilt-b32", batch: int = 8, seq_len: int | None = None,
                             device: str = "cpu", rounds: int = 5, size: str = "base", precision: str = "32",
                             recompute: bool = False, attention: str = "sdpa", linear: str = "onednn",
                             layers: int | None = None,
                             infer_reps: int = 3, **options) -> dict:
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: expected one of {sorted(PRECISIONS)}")
    bb = load_backbone(backbone)
    dev = torch.device(device)
    n = seq_len or bb.default_seq_len
    torch.manual_seed(0)
    model = bb.build("classifier", device=dev, size=size)
    api.remove(model)
    if layers:
        bb.truncate(model, layers)
    api.apply(model, "apt", **method_options("apt", options))
    _perturb(model)
    apply_speed_options(model.speed_layers(), model, attention_impl=attention, recompute_layers=recompute)
    set_linear_impl(model, linear)
    theirs = authors_mod.build_like(model).to(dev)
    authors_mod.load_from_project(theirs, model)
    for p in theirs.parameters():
        p.requires_grad_(False)
    for (name, p) in theirs.named_parameters():
        if ".APT." in name:
            p.requires_grad_(not name.endswith(".scale") or _scale_trains(model))  # METER: scale frozen
    x, mask = bb.tokens(model, n, batch, device=dev)
    mask[: batch // 2, n - n // 8:] = 0  # padded keys in half of the batch (both models mask them)
    dtype = PRECISIONS[precision]
    amp = (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext

    ours_params = [p for n_, p in model.named_parameters() if p.requires_grad and "peft_apt" in n_]
    their_params = [p for p in theirs.parameters() if p.requires_grad]
    if _bytes(ours_params) != _bytes(their_params):
        raise RuntimeError(f"trainable APT tensors differ: {_bytes(ours_params)} vs {_bytes(their_params)} bytes")
    weights = _bytes(theirs.parameters())  # the measured layers' weights (identical tensors in both models)

    runners = {"project": (lambda: bb.run_tokens(model, x, mask), model, ours_params),
               "official": (lambda: theirs.run_tokens(x, mask), theirs, their_params)}

    model.eval(), theirs.eval()
    with torch.no_grad(), amp():
        out_p, out_o = runners["project"][0]().float(), runners["official"][0]().float()
    max_abs_diff = (out_p - out_o).abs().max().item()
    if dtype is None and not max_abs_diff <= 1e-4:
        raise RuntimeError(f"outputs of this project's model and the authors' differ by {max_abs_diff:.3g} in fp32 "
                           "(expected <= 1e-4): the comparison would not be of the same model")

    def infer(name):
        run, mod, _ = runners[name]
        mod.eval()
        ctx = cached_keys(mod) if name == "project" else contextlib.nullcontext()
        with torch.no_grad(), amp(), ctx:
            return _timed(run, dev)

    def train(name, opt):
        run, mod, _ = runners[name]
        mod.train()

        def step():
            with amp():
                out = run()
            out.float().square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return _timed(step, dev)

    def peak_bytes(name, opt):
        run, mod, _ = runners[name]
        mod.train()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            before = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            with amp():
                out = run()
            out.float().square().mean().backward()
            opt.step()
            torch.cuda.synchronize(dev)
            above = torch.cuda.max_memory_allocated(dev) - before
        else:
            tracker = LiveTensorPeak()
            with tracker:
                with amp():
                    out = run()
                out.float().square().mean().backward()
                opt.step()
            above = tracker.peak
        del out
        opt.zero_grad(set_to_none=True)
        state = _bytes(t for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
        return weights + state + above

    opts = {name: torch.optim.AdamW(params, lr=1e-6) for name, (_, _, params) in runners.items()}
    times = {name: {"infer": [], "train": []} for name in runners}
    peaks = {}
    for rnd in range(rounds):
        for name in runners:
            infer(name)  # warm-up (project: APT key cache)
            times[name]["infer"].append(min(infer(name) for _ in range(infer_reps)))
            train(name, opts[name])  # warm-up (optimiser state)
            if rnd == 0:
                peaks[name] = peak_bytes(name, opts[name])
            times[name]["train"].append(train(name, opts[name]))
        print(f"[bench] round {rnd + 1}/{rounds} done", file=sys.stderr, flush=True)

    med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    return {"against_official": {
        "train_step_ratio": med["project"]["train"] / med["official"]["train"],
        "infer_ratio": med["project"]["infer"] / med["official"]["infer"],
        "peak_mem_ratio": peaks["project"] / peaks["official"],
        "max_abs_diff": max_abs_diff,
        "precision": precision,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "backbone": backbone, "size": size, "layers": layers or "all", "batch": batch, "seq_len": n,
        "rounds": rounds, "recompute": recompute, "attention_impl": attention,
        "linear_impl": linear,
        "project": {"infer_s": med["project"]["infer"], "train_step_s": med["project"]["train"],
                    "peak_mem_mb": peaks["project"] / 2 ** 20},
        "official": {"infer_s": med["official"]["infer"], "train_step_s": med["official"]["train"],
                     "peak_mem_mb": peaks["official"] / 2 ** 20},
        "per_round_s": times,  # {model: {"infer": [...], "train": [...]}}: the spread behind the medians
    }}


def _scale_trains(model) -> bool:
    return any(m.log_scale.requires_grad for m in api.tuning_modules(model))


def render(res: dict) -> str:
    r = res["against_official"]
    p, o = r["project"], r["official"]
    extra = (", recomputation on" if r["recompute"] else "") + f", attention {r['attention_impl']}" \
        + f", linear {r['linear_impl']}"
    return "\n".join([
        f"### {r['backbone']} ({r['size']}) APT, this project vs the authors' model, precision {r['precision']}, "
        f"{r['device']} ({r['device_name']}, {r['threads']} threads), batch {r['batch']}, n = {r['seq_len']}, "
        f"median of {r['rounds']} interleaved rounds{extra}", "",
        "| | this project | authors' | ratio |", "|---|---|---|---|",
        f"| inference ms | {p['infer_s'] * 1e3:.1f} | {o['infer_s'] * 1e3:.1f} | {r['infer_ratio']:.2f} |",
        f"| training step ms | {p['train_step_s'] * 1e3:.1f} | {o['train_step_s'] * 1e3:.1f} | "
        f"{r['train_step_ratio']:.2f} |",
        f"| peak training memory MB | {p['peak_mem_mb']:.0f} | {o['peak_mem_mb']:.0f} | {r['peak_mem_ratio']:.2f} |",
        "", f"max |output difference| (eval, precision {r['precision']}): {r['max_abs_diff']:.2e}"])
