"""The APT paper's "Updated Parameter" and "Additional FLOPs" columns, computed from the project's own modules.

    python -m shared_apt.profile --backbone vilt-b32 --method all
    python -m shared_apt.profile --backbone vilt-b32 --method apt --num-prompts 400 --rank 16

Models are built on the meta device (no weights, seconds). Updated parameters = the method's own parameters (the
common trainable set of heads / poolers / modal-type embedding / class token is not counted, as in the paper).
Additional FLOPs = FLOPs(method) - FLOPs(frozen backbone) at batch 1 in fvcore's convention (shared_apt.flops), with
LoRA merged. A backbone is a module with NAME, DEFAULT_SEQ_LEN, SEQ_LEN_NOTE, NOTES, build(method, **options),
forward(model, seq_len), backbone_parameters(model), head_parameters(model)."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass

from . import api, paper
from .config import METHODS
from .flops import count_macs

BACKBONES = {"vilt-b32": "vilt.profiling", "meter-b": "meter.profiling", "clip-vit-b16": "clip_apt.profiling"}


@dataclass
class Row:
    method: str
    updated_params: int
    additional_macs: int
    paper_params_m: float | None
    paper_gflops: float | None
    note: str = ""


def load_backbone(name: str):
    if name not in BACKBONES:
        raise SystemExit(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    return importlib.import_module(BACKBONES[name])


def macs(backbone, model, seq_len: int) -> int:
    api.merge(model)
    return count_macs(backbone.forward, model, seq_len)


def profile(backbone_name: str, methods, seq_len: int | None = None, size: str = "base", layers: int | None = None,
            **options) -> tuple[list, dict]:
    """``layers``: keep only the first layers of the backbone (per-layer costs for the benchmark)."""
    bb = load_backbone(backbone_name)
    n = seq_len or bb.DEFAULT_SEQ_LEN

    def build(method, **opts):
        model = bb.build(method, size=size, **opts)
        return model if not layers else _truncated(bb, model, layers)

    frozen = build("full")
    base = macs(bb, frozen, n)
    info = {"backbone": backbone_name, "seq_len": n, "frozen_macs": base,
            "backbone_params": bb.backbone_parameters(frozen), "head_params": bb.head_parameters(frozen),
            "seq_len_note": bb.SEQ_LEN_NOTE.format(n=n)}
    rows = []
    for method in methods:
        opts = {k: v for k, v in options.items() if v is not None and _applies(method, k)}
        model = frozen if method == "full" else build(method, **opts)
        updated = api.updated_parameter_count(model)
        extra = 0 if method in ("full", "classifier") else macs(bb, model, n) - base
        p_params, p_flops = _paper_values(backbone_name, method, opts)
        rows.append(Row(method, updated, extra, p_params, p_flops, bb.NOTES.get(method, "")))
    return rows, info


def _truncated(bb, model, layers: int):
    """Rebuild the attached method on the first ``layers`` layers only."""
    config = api.peft_config(model)
    api.remove(model)
    bb.truncate(model, layers)
    api.apply(model, config)
    return model


def _applies(method: str, key: str) -> bool:
    return {"num_prompts": method in ("apt", "shallow_prompt", "deep_prompt"),
            "rank": method in ("apt", "lora"), "apt_variant": method == "apt"}.get(key, False)


def _paper_values(backbone: str, method: str, opts: dict):
    default = not opts or (method == "apt" and opts in ({"num_prompts": 200}, {"rank": 4}, {"num_prompts": 200,
                                                                                          "rank": 4}))
    if method == "apt" and backbone == "vilt-b32" and not default:
        key = (opts.get("num_prompts", 200), opts.get("apt_variant") if opts.get("apt_variant", "lowrank") !=
               "lowrank" else opts.get("rank", 4))
        return paper.TABLE3_PARAMS_M.get(key), None
    if not default:
        return None, None
    return paper.PARAMS_M.get(backbone, {}).get(method), paper.GFLOPS.get(backbone, {}).get(method)


def _fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def render(rows: list, info: dict) -> str:
    out = [f"### {info['backbone']}: updated parameters and additional FLOPs", "",
           "| method | updated params (M) | additional GFLOPs | paper params (M) | paper GFLOPs |",
           "|---|---|---|---|---|"]
    notes = []
    for r in rows:
        mark = ""
        if r.method == "full":
            notes.append(
                f"full: every parameter of the model trains: backbone {info['backbone_params']:,} + task head "
                f"{info['head_params']:,} = {r.updated_params:,}. The paper's figure is not a clean backbone count: "
                "it equals the head-less backbone plus 24 APT modules of 159,745 parameters (apt.md §2.3).")
            mark = f"[{len(notes)}]"
        else:
            text = r.note
            if r.paper_params_m is not None and f"{r.updated_params / 1e6:.2f}" != f"{r.paper_params_m:.2f}":
                text = (text + "; " if text else "") + (
                    f"exact count {r.updated_params:,} does not round to the paper's {r.paper_params_m:.2f}M")
            if text:
                notes.append(f"{r.method}: {text}")
                mark = f"[{len(notes)}]"
        out.append(f"| {r.method}{' ' + mark if mark else ''} | {r.updated_params / 1e6:.2f} | "
                   f"{r.additional_macs / 1e9:.2f} | {_fmt(r.paper_params_m)} | {_fmt(r.paper_gflops)} |")
    out.append("")
    out.append(f"FLOPs: multiply-accumulates (fvcore convention, LayerNorm 5/element), batch 1, "
               f"{info['seq_len_note']}. Frozen backbone: {info['frozen_macs'] / 1e9:.2f} GFLOPs.")
    out += [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_apt.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="vilt-b32", choices=sorted(BACKBONES))
    ap.add_argument("--method", default="all", help=f"'all' or a comma list of {', '.join(METHODS)}")
    ap.add_argument("--num-prompts", type=int, default=None)
    ap.add_argument("--rank", type=int, default=None)
    ap.add_argument("--apt-variant", default=None, choices=["lowrank", "identity", "dense"])
    ap.add_argument("--seq-len", type=int, default=None, help="tokens n (default: the length the paper implies)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    bb = load_backbone(args.backbone)
    known = getattr(bb, "METHODS", METHODS)  # a backbone with its own method set (CLIP) prints its own table
    methods = list(known) if args.method == "all" else [m.strip() for m in args.method.split(",")]
    bad = [m for m in methods if m not in known]
    if bad:
        ap.error(f"unknown method(s) {bad}; choose from {', '.join(known)}")
    if hasattr(bb, "main"):
        fixed = [f"--{k.replace('_', '-')}" for k in ("num_prompts", "rank", "apt_variant", "seq_len")
                 if getattr(args, k) is not None]
        if fixed:
            ap.error(f"{fixed} not supported for --backbone {args.backbone}: its rows fix their own options")
        return bb.main(methods, args.json)
    rows, info = profile(args.backbone, methods, args.seq_len, num_prompts=args.num_prompts, rank=args.rank,
                         apt_variant=args.apt_variant)
    print(render(rows, info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": [r.__dict__ for r in rows]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
