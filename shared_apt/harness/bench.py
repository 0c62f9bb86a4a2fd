"""Side-by-side speed and memory of every tuning method on one backbone, measured in one run.

    python -m shared_apt.bench --backbone vilt-b32 --methods all --batch 8 [--seq-len N] [--device cpu|cuda]
                               [--json PATH]
    python -m shared_apt.bench --backbone vilt-b32 --methods apt --against official [--precision 32|bf16]
                               [--recompute] [--json PATH]      (shared_apt.harness.bench_official)

The backbone is built at real size with random weights (no checkpoint needed). For each round, methods are measured
one after the other in the same order (interleaved, so machine drift hits all alike); each figure is the median over
rounds after a warm-up step. Measured per method:

* ``infer_s``: forward of the joint token sequence through the tuned layers, no grad, eval mode (LoRA merged, APT
  keys cached, as at inference); the fastest of ``--infer-reps`` calls in each round;
* ``train_step_s``: forward, backward and an AdamW step on the method's trainable parameters;
* ``peak_mem_mb``: CUDA: peak allocated memory of the training step; CPU: parameters + tensors saved for backward +
  gradients + optimiser state (what a training step must hold at its peak);
* the frozen reference: its inference forward, and its "training step" = forward + backward down to the input
  embeddings with no parameter update (the least any method with parameters in every layer must pay).

Extra time = method - frozen reference. Ratios printed: extra / deep_prompt's extra, and step / full's step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from ..peft import api
from ..peft.config import ConfigError
from ..peft.methods.apt import cached_keys
from ..peft.registry import cli_options, method_names, parse_methods
from .profile import add_method_arguments, load_backbone, method_options, profile


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


class Saved:
    """Counts the bytes of distinct tensors autograd saves for backward."""

    def __init__(self):
        self.bytes = 0
        self._seen = set()

    def pack(self, t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += key[1]
        return t

    @staticmethod
    def unpack(t):
        return t


def measure(backbone: str = "vilt-b32", methods: str = "all", batch: int = 8, seq_len: int | None = None,
            device: str = "cpu", rounds: int = 5, size: str = "base", reference_apt: bool = False,
            compile: bool = False, layers: int | None = None, infer_reps: int = 3, **options) -> dict:
    """Measure ``methods`` ('all' or a comma list) on ``backbone``; ``options``: method options by command-line
    dest (shared_apt.peft.registry.cli_options), each given to the methods that have it. ``reference_apt``: APT
    through the reference autograd path (``fast=False``)."""
    bb = load_backbone(backbone)
    if bb.tokens is None or bb.run_tokens is None:
        raise SystemExit(f"backbone {backbone!r} registers no token-level entry (tokens / run_tokens): profile only")
    device = torch.device(device)
    n = seq_len or bb.default_seq_len
    methods = parse_methods(methods)
    if reference_apt:
        options["fast"] = False

    def method_opts(method):
        return method_options(method, options)

    torch.manual_seed(0)
    model = bb.build("classifier", device=device, size=size)
    api.remove(model)
    if layers:
        bb.truncate(model, layers)
    x, mask = bb.tokens(model, n, batch, device=device)
    params_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def attach(method):
        if method != "frozen":
            api.apply(model, method, **method_opts(method))
        else:
            for p in model.parameters():
                p.requires_grad_(False)

    run_tokens = torch.compile(bb.run_tokens, dynamic=False) if compile else bb.run_tokens

    def infer_once(method):
        model.eval()
        if method == "lora":
            api.merge(model)
        with torch.no_grad(), cached_keys(model):  # APT: K once per inference block, as a deployment would
            t = _timed(lambda: run_tokens(model, x, mask), device)
        if method == "lora":
            api.unmerge(model)
        return t

    def train_once(method, opt, saved=None):
        model.train()
        # a truncated backbone stands for its interior layers: their gradient must reach the layers below, so every
        # method back-propagates to the input there (the full backbone stops at its first trainable tensor)
        inp = x.detach().requires_grad_(method == "frozen" or bool(layers))

        def step():
            if saved is not None:
                with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                    out = run_tokens(model, inp, mask)
            else:
                out = run_tokens(model, inp, mask)
            if out.requires_grad:  # classifier-only: nothing to train inside the measured layers
                out.float().square().mean().backward()
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=False)

        return _timed(step, device)

    rows = {m: {"infer": [], "train": []} for m in ["frozen"] + methods}
    peaks = {}
    for rnd in range(rounds):
        for method in ["frozen"] + methods:
            attach(method)
            trainable = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(trainable, lr=1e-6) if method != "frozen" and trainable else None
            infer_once(method)  # warm-up (and APT key cache)
            rows[method]["infer"].append(min(infer_once(method) for _ in range(infer_reps)))
            if str(device).startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(device)
            saved = Saved() if rnd == 0 else None
            train_once(method, opt, saved)  # warm-up (and optimiser state)
            if rnd == 0:
                if str(device).startswith("cuda"):
                    peaks[method] = torch.cuda.max_memory_allocated(device) / 2 ** 20
                else:
                    grads = sum(p.numel() * p.element_size() for p in trainable)
                    state = sum(t.numel() * t.element_size() for s in (opt.state.values() if opt else [])
                                for t in s.values() if torch.is_tensor(t))
                    extra_params = sum(p.numel() * p.element_size() for p in model.parameters()) - params_bytes
                    peaks[method] = (params_bytes + extra_params + saved.bytes + grads + state) / 2 ** 20
            rows[method]["train"].append(train_once(method, opt))
            for p in model.parameters():
                p.grad = None
            del opt
            if method != "frozen":
                api.remove(model)
        print(f"[bench] round {rnd + 1}/{rounds} done", file=sys.stderr, flush=True)

    flops_rows, _ = profile(backbone, methods, n, size=size, layers=layers, **options)
    gflops = {r.method: r.additional_macs / 1e9 for r in flops_rows}
    med = lambda v: statistics.median(v)  # noqa: E731
    result = {
        "backbone": backbone, "size": size, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(), "compiled": bool(compile), "layers": layers or "all",
        "batch": batch, "seq_len": n, "rounds": rounds,
        "frozen": {"infer_s": med(rows["frozen"]["infer"]), "train_step_s": med(rows["frozen"]["train"]),
                   "peak_mem_mb": peaks["frozen"]},
        "methods": {m: {"infer_s": med(rows[m]["infer"]), "train_step_s": med(rows[m]["train"]),
                        "peak_mem_mb": peaks[m], "gflops_extra": gflops[m]} for m in methods},
    }
    _ratios(result)
    return result


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def _ratios(res: dict) -> None:
    f = res["frozen"]
    ms = res["methods"]
    for m, r in ms.items():
        r["infer_extra_s"] = r["infer_s"] - f["infer_s"]
        r["train_extra_s"] = r["train_step_s"] - f["train_step_s"]
    deep, full = ms.get("deep_prompt"), ms.get("full")
    for m, r in ms.items():
        if deep:
            r["infer_extra_vs_deep"] = _div(r["infer_extra_s"], deep["infer_extra_s"])
            r["train_extra_vs_deep"] = _div(r["train_extra_s"], deep["train_extra_s"])
        if full:
            r["train_step_vs_full"] = _div(r["train_step_s"], full["train_step_s"])
            r["peak_mem_vs_full"] = _div(r["peak_mem_mb"], full["peak_mem_mb"])


def _div(a, b):
    return None if not b else a / b


def render(res: dict) -> str:
    f = res["frozen"]
    fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    scope = "" if res.get("layers", "all") == "all" else f", first {res['layers']} layer(s) only"
    out = [f"### {res['backbone']} ({res['size']}{scope}) on {res['device']} ({res['device_name']}, {res['threads']} threads), "
           f"batch {res['batch']}, n = {res['seq_len']}, median of {res['rounds']} rounds", "",
           f"frozen reference: inference {f['infer_s'] * 1e3:.1f} ms, forward+backward to the inputs "
           f"{f['train_step_s'] * 1e3:.1f} ms", "",
           "| method | add. GFLOPs | infer ms | extra infer ms | extra / deep | train step ms | extra train ms | "
           "extra / deep | step / full | peak MB | mem / full |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in res["methods"].items():
        out.append(f"| {m} | {r['gflops_extra']:.2f} | {r['infer_s'] * 1e3:.1f} | {r['infer_extra_s'] * 1e3:.1f} | "
                   f"{fmt(r.get('infer_extra_vs_deep'), 2)} | {r['train_step_s'] * 1e3:.1f} | "
                   f"{r['train_extra_s'] * 1e3:.1f} | {fmt(r.get('train_extra_vs_deep'), 2)} | "
                   f"{fmt(r.get('train_step_vs_full'), 2)} | {r['peak_mem_mb']:.0f} | "
                   f"{fmt(r.get('peak_mem_vs_full'), 2)} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_apt.bench", description=__doc__.split("\n\n")[0],
                                 epilog="python -m shared_apt.bench --loader: data loading throughput instead "
                                        "(options: python -m shared_apt.harness.bench_loader -h)")
    ap.add_argument("--backbone", default="vilt-b32")
    ap.add_argument("--methods", default="all", help=f"'all' or a comma list of {', '.join(method_names())}")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", default="base", choices=["base", "tiny"], help="tiny: same code, tiny dims (tests)")
    ap.add_argument("--reference-apt", action="store_true", help="APT through the reference autograd path")
    ap.add_argument("--compile", action="store_true", help="torch.compile the measured forward (every method)")
    ap.add_argument("--layers", type=int, default=None,
                    help="measure only the first N layers (every method's cost is per layer; less noise per second)")
    ap.add_argument("--infer-reps", type=int, default=3,
                    help="inference calls per round; the round keeps the fastest (least disturbed) one")
    ap.add_argument("--json", default=None)
    ap.add_argument("--against", choices=["official"], default=None,
                    help="official: APT of this project against the authors' model, same weights "
                         "(shared_apt.harness.bench_official)")
    ap.add_argument("--precision", default="32", choices=["32", "bf16", "16"],
                    help="with --against: autocast precision of both models (16: fp16, GPU)")
    ap.add_argument("--recompute", action="store_true",
                    help="with --against: this project's layers recompute their activations in backward")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "explicit"],
                    help="with --against: this project's attention_impl")
    ap.add_argument("--linear", default="onednn", choices=["onednn", "aten"],
                    help="with --against: this project's linear_impl (frozen fp32 CPU products through oneDNN or "
                         "ATen's BLAS)")
    add_method_arguments(ap)
    args = vars(ap.parse_args(argv))
    json_path = args.pop("json")
    against = args.pop("against")
    speed = {k: args.pop(k) for k in ("precision", "recompute", "attention", "linear")}
    if against:
        if args["methods"] != "apt" or args["reference_apt"] or args["compile"]:
            ap.error("--against official compares APT only: --methods apt, without --reference-apt / --compile")
        from .bench_official import measure_against_official, render as render_official

        options = {dest: args.pop(dest) for dest in cli_options()}
        for k in ("methods", "reference_apt", "compile"):
            args.pop(k)
        res = measure_against_official(**args, **speed, **{k: v for k, v in options.items() if v is not None})
        print(render_official(res))
        if json_path:
            with open(json_path, "w") as f:
                json.dump(res, f, indent=2)
        return 0
    if speed != {"precision": "32", "recompute": False, "attention": "sdpa", "linear": "onednn"}:
        ap.error("--precision, --recompute, --attention and --linear apply to --against official")
    try:
        parse_methods(args["methods"])
    except ConfigError as e:
        ap.error(str(e))
    options = {dest: args.pop(dest) for dest in cli_options()}
    res = measure(**args, **{k: v for k, v in options.items() if v is not None})
    print(render(res))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
