"""The APT paper's "Updated Parameter" and "Additional FLOPs" columns, computed from the project's own modules.

    python -m shared_apt.profile --backbone vilt-b32 --method all
    python -m shared_apt.profile --backbone vilt-b32 --method apt --num-prompts 400 --rank 16

Models are built on the meta device (no weights, seconds). Updated parameters = the method's own parameters (the
common trainable set of heads / poolers / modal-type embedding / class token is not counted, as in the paper).
Additional FLOPs = FLOPs(method) - FLOPs(frozen backbone) at batch 1 in fvcore's convention (shared_apt.peft.accounting), with
LoRA merged. Backbones and methods come from the registries (shared_apt.peft.registry): every registered method
is a choice of ``--method`` and each of its options a command-line option (``--rank`` applies to every method with a
``rank`` option; flat keys such as ``--apt-variant`` work too)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from ..peft import api
from ..peft.accounting import count_macs
from ..peft.config import ConfigError, method_config
from ..peft.registry import cli_options, general_method_names, method_names, parse_methods
from . import paper
from .backbones import BackboneUnavailable, backbone_names, get_backbone


@dataclass
class Row:
    method: str
    updated_params: int
    additional_macs: int
    paper_params_m: float | None
    paper_gflops: float | None
    note: str = ""


def load_backbone(name: str):
    try:
        return get_backbone(name)
    except BackboneUnavailable as e:
        raise SystemExit(str(e)) from e


def macs(backbone, model, seq_len: int) -> int:
    model.eval()
    api.merge(model)
    return count_macs(backbone.forward, model, seq_len)


def profile(backbone_name: str, methods, seq_len: int | None = None, size: str = "base", layers: int | None = None,
            **options) -> tuple[list, dict]:
    """``layers``: keep only the first layers of the backbone (per-layer costs for the benchmark)."""
    bb = load_backbone(backbone_name)
    n = seq_len or bb.default_seq_len

    def build(method, **opts):
        model = bb.build(method, size=size, **opts)
        return model if not layers else _truncated(bb, model, layers)

    frozen = build("full")
    base = macs(bb, frozen, n)
    info = {"backbone": backbone_name, "seq_len": n, "frozen_macs": base,
            "backbone_params": bb.backbone_parameters(frozen), "head_params": bb.head_parameters(frozen),
            "seq_len_note": bb.seq_len_note.format(n=n)}
    rows = []
    for method in methods:
        opts = method_options(method, options)
        model = frozen if method == "full" else build(method, **opts)
        updated = api.updated_parameter_count(model)
        extra = 0 if not api.tuning_modules(model) else macs(bb, model, n) - base
        p_params, p_flops = _paper_values(backbone_name, method, opts)
        rows.append(Row(method, updated, extra, p_params, p_flops, bb.notes.get(method, "")))
    return rows, info


def _truncated(bb, model, layers: int):
    """Rebuild the attached method on the first ``layers`` layers only."""
    config = api.peft_config(model)
    api.remove(model)
    bb.truncate(model, layers)
    api.apply(model, config)
    return model


def method_options(method: str, options: dict) -> dict:
    """The options (command-line dests, see shared_apt.peft.registry.cli_options) that ``method`` has, under its
    own option names; the others are for other methods of the same command."""
    table = cli_options()
    out = {}
    for dest, value in options.items():
        target = table.get(dest, {}).get("targets", {}).get(method)
        if value is not None and target is not None:
            if target in out and out[target] != value:
                raise ConfigError(f"option {target!r} of method {method!r} given twice ({out[target]!r}, {value!r})")
            out[target] = value
    return out


def _paper_values(backbone: str, method: str, opts: dict):
    """The paper's printed (params M, GFLOPs) for the paper's setting of ``method``; for other APT settings on
    ViLT, Table 3's parameter count where it has one."""
    config = method_config(method, **opts)
    if config.relevant() == method_config(method).relevant():
        return paper.PARAMS_M.get(backbone, {}).get(method), paper.GFLOPS.get(backbone, {}).get(method)
    if method == "apt" and backbone == "vilt-b32":
        key = (config.num_prompts, config.variant if config.variant != "lowrank" else config.rank)
        return paper.TABLE3_PARAMS_M.get(key), None
    return None, None


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
                "it equals the head-less backbone plus 24 APT modules of 159,745 parameters (docs/accounting.md).")
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


def add_method_arguments(ap: argparse.ArgumentParser) -> None:
    """One command-line option per method option of every registered method (``--rank``, ``--apt-variant``...)."""
    for dest, spec in cli_options().items():
        owners = ", ".join(spec["targets"])
        ap.add_argument("--" + dest.replace("_", "-"), dest=dest, type=spec["type"], default=None,
                        help=f"{spec['help']} ({owners})")


def _own_table(ap, args, own: dict, methods: list, options: dict) -> int:
    """``extras["profile"] = {"main": main(methods, json_path) -> exit status}``: the backbone prints its own table;
    its rows fix their options, so option arguments are refused."""
    fixed = [f"--{k.replace('_', '-')}" for k, v in {**options, "seq_len": args.seq_len}.items() if v is not None]
    if fixed:
        ap.error(f"{fixed} not supported for --backbone {args.backbone}: its rows fix their own options")
    return own["main"](methods, args.json)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_apt.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="vilt-b32", choices=sorted(backbone_names()))
    ap.add_argument("--method", default="all", help=f"'all' or a comma list of {', '.join(method_names())}")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens n (default: the length the paper implies)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    add_method_arguments(ap)
    args = ap.parse_args(argv)
    bb = load_backbone(args.backbone)
    # a backbone may be profiled with its own methods; else "all" = the methods every backbone supports
    known = list(bb.methods or general_method_names())
    try:
        methods = known if args.method == "all" else parse_methods(args.method)
    except ConfigError as e:
        ap.error(str(e))
    bad = [m for m in methods if m not in known]
    if bad:
        ap.error(f"unknown method(s) {bad} for {args.backbone}; choose from {', '.join(known)}")
    options = {dest: getattr(args, dest) for dest in cli_options()}
    own = bb.extras.get("profile")
    if own is not None:  # a backbone with its own table (CLIP: rows with fixed options, per-image / per-prompt FLOPs)
        return _own_table(ap, args, own, methods, options)
    rows, info = profile(args.backbone, methods, args.seq_len, **options)
    print(render(rows, info))
    if bb.print_exact:
        print("Exact: " + "; ".join(f"{r.method} {r.updated_params:,} parameters, {r.additional_macs:,} additional MACs"
                                    for r in rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": [r.__dict__ for r in rows]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
