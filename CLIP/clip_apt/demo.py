"""``MODEL=clip bash script/demo.sh``: the CLIP demo. Writes the shapes world in CoOp's layout, pre-trains a tiny CLIP
contrastively on its captions (varied templates, never the evaluation template), then runs every method on
base-to-new 16-shot (train on 6 base classes, test base and the 6 unseen new classes) and prints one table:
method | params (demo model) | params and additional GFLOPs at ViT-B/16 | base | new | H, also as JSON and PNG.

    python -m clip_apt.demo [--cache DIR] [--out DIR] [--methods coop,apt,...] [--epochs 10] [--fresh]

One recipe for every method (SGD lr 0.002, CoOp schedule, batch 16; CoCoOp batch 4; random crops of at least 90 %
of the image and no flips, since the class is the left shape and CoOp's 8 % crops would cut it out), chosen to keep the whole demo within
10 minutes on a 2-core CPU; the paper recipes are the ``peft_<method>`` named configs of ``CLIP/run.py``."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from shared_apt.peft.atomic import atomic_write, atomic_write_json

DEFAULT_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "apt_vl_demo")
# (row label, method, options, profile row label at ViT-B/16)
METHODS = [
    ("zero-shot", "zeroshot", {}, "zero-shot CLIP"),
    ("CoOp", "coop", {"ctx_init": "a photo of a"}, "CoOp n_ctx 4"),
    ("CoCoOp", "cocoop", {}, "CoCoOp n_ctx 4"),
    ("VPT-shallow", "vpt_shallow", {}, "VPT-shallow n 4"),
    ("VPT-deep", "vpt_deep", {}, "VPT-deep n 4"),
    ("joint", "joint", {}, "joint CoOp 4 + VPT-deep 4"),
    ("UPT (released, per-token)", "upt", {"token_mixing": False}, "UPT (released, per-token)"),
    ("UPT (token mixing)", "upt", {"token_mixing": True}, "UPT (token mixing)"),
    ("UPT deep", "upt_deep", {}, "UPT deep (12 layers)"),
    ("shared prompts", "shared_prompt", {}, "shared prompts"),
    ("MLP prompts", "mlp_prompt", {}, "MLP prompts"),
    ("APT (text, p 4, r 2)", "apt", {"num_prompts": 4, "rank": 2}, "APT text p 4 r 2"),
]


def _profile_rows(labels):
    from . import profiling

    rows = [r for r in profiling.ROWS if r[0] in labels]
    result, _ = profiling.profile(rows)
    return {r.label: r for r in result}


def method_table(rows, wanted) -> str:
    """The demo's markdown table; ``rows[i]`` (label, trainable_params, base_acc, new_acc, harmonic_mean) belongs to
    ``wanted[i]`` (a METHODS entry) and gains its ViT-B/16 accounting (vit_b16_params, gflops_per_image / prompt)."""
    prof = _profile_rows({m[3] for m in wanted})
    lines = ["| method | params (demo) | params (ViT-B/16) | add. GFLOPs / image | add. GFLOPs / prompt | base | new "
             "| H |", "|---|---|---|---|---|---|---|---|"]
    for row, (_, _, _, plabel) in zip(rows, wanted):
        p = prof[plabel]
        row.update(vit_b16_params=p.trainable, gflops_per_image=p.macs_per_image / 1e9,
                   gflops_per_prompt=p.macs_per_prompt / 1e9)
        lines.append(f"| {row['label']} | {row['trainable_params']:,} | {p.trainable:,} | "
                     f"{row['gflops_per_image']:.4f} | {row['gflops_per_prompt']:.4f} | {row['base_acc']:.1f} | "
                     f"{row['new_acc']:.1f} | {row['harmonic_mean']:.1f} |")
    return "\n".join(lines)


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    x = range(len(rows))
    for k, (key, label) in enumerate((("base_acc", "base"), ("new_acc", "new"), ("harmonic_mean", "H"))):
        ax.bar([i + (k - 1) * 0.27 for i in x], [r[key] for r in rows], width=0.27, label=label)
    ax.set_xticks(list(x))
    ax.set_xticklabels([r["label"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("CLIP demo: base-to-new, 16 shots (tiny CLIP on the shapes world)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clip_apt.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=os.environ.get("DEMO_CACHE") or DEFAULT_CACHE)
    ap.add_argument("--out", default=None, help="results folder (default <cache>/compare_clip)")
    ap.add_argument("--methods", default="all", help="comma list of row methods (default: all)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fresh", action="store_true", help="regenerate the world and the pre-trained CLIP")
    ap.add_argument("--no-progress", action="store_true", help="accepted for symmetry with the ViLT/METER demo")
    args = ap.parse_args(argv)
    import logging
    import warnings

    for name in ("pytorch_lightning", "pytorch_lightning.utilities.rank_zero", "lightning.pytorch",
                 "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    from shared_apt.vl.training.run import resolve_config

    from .config import ex
    from .datasets.demo_world import make_world
    from .modules.clip_module import harmonic_mean
    from .pretrain import DEMO_GEOMETRY, pretrain_tiny_clip
    from .train import run

    t0 = time.perf_counter()
    base = os.path.join(args.cache, "clip")
    if args.fresh and os.path.isdir(base):
        shutil.rmtree(base)
    wanted = METHODS if args.methods == "all" else [m for m in METHODS if m[1] in args.methods.split(",")]
    if not wanted:
        print(f"error: --methods {args.methods!r} selects nothing; methods: {sorted({m[1] for m in METHODS})}",
              file=sys.stderr)
        return 2
    print(f"[demo] shapes world (CoOp layout) in {base}/world ...", flush=True)
    world = make_world(os.path.join(base, "world"))
    print("[demo] pre-training a tiny CLIP on the captions ...", flush=True)
    clip_path = pretrain_tiny_clip(world, os.path.join(base, "tiny_clip.pt"), epochs=args.pretrain_epochs)
    out = args.out or os.path.join(args.cache, "compare_clip")
    os.makedirs(out, exist_ok=True)
    g = DEMO_GEOMETRY
    # The Sacred defaults (CoOp's recipe) with the demo's changes, resolved as ``CLIP/run.py`` resolves them.
    common = resolve_config(ex, (), dict(
        exp_name="demo", seed=args.seed, data_root=world, clip_path=clip_path, text_heads=g["text_heads"],
        vision_heads=g["vision_heads"], image_size=g["image_size"], crop_min_scale=0.9, flip=False, batch_size=16,
        max_epochs=args.epochs, output_dir=os.path.join(out, "runs")))
    rows = []
    for label, method, options, _ in wanted:
        cfg = dict(common, peft=method, peft_options=options, exp_name="demo_" + label.split()[0].lower()
                   + ("_mix" if options.get("token_mixing") else ""))
        if method == "cocoop":
            cfg["batch_size"] = 4
        r = run(cfg)
        rows.append({"label": label, **{k: r[k] for k in ("method", "peft_options", "trainable_params", "base_acc",
                                                            "new_acc", "harmonic_mean", "train_time_s")}})
        print(f"[demo] {label:28s} base {r['base_acc']:5.1f}  new {r['new_acc']:5.1f}  "
              f"H {r['harmonic_mean']:5.1f}  ({r['train_time_s']:.0f}s)", flush=True)
    print("[demo] accounting at ViT-B/16 shapes (meta device) ...", flush=True)
    table = method_table(rows, wanted)
    def write_table(tmp):
        with open(tmp, "w") as f:
            f.write(table + "\n")

    atomic_write(os.path.join(out, "table.md"), write_table)
    atomic_write_json(os.path.join(out, "results.json"),
                      {"rows": rows, "epochs": args.epochs, "seed": args.seed, "geometry": g}, indent=2)
    _plot(rows, os.path.join(out, "results.png"))
    assert all(abs(r["harmonic_mean"] - harmonic_mean(r["base_acc"], r["new_acc"])) < 1e-9 for r in rows)
    print()
    print(table)
    print()
    print(f"[demo] {time.perf_counter() - t0:.0f}s in all; table {os.path.join(out, 'table.md')}, "
          f"JSON {os.path.join(out, 'results.json')}, plot {os.path.join(out, 'results.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
