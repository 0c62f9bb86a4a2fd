"""The README's main command (``sh script/demo.sh``): on the synthetic demo world, pre-train a tiny ViLT (or METER)
with MLM+ITM on the caption tables, fine-tune it on the demo VQA with every tuning method, and print one table
(method | updated params | additional GFLOPs | VQA score | training time), also written as JSON and PNG.

    python -m shared_apt.harness.experiments.demo [--model vilt|meter] [--out DIR] [--methods full,lora,...]

The demo VQA is the ViLT split: train = vqav2_train + vqav2_trainable_val, score = vqav2_rest_val (the tables the
shapes world writes; answers are colours, counts, shapes, yes/no, all functions of the pixels).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence


from . import compare

DEFAULT_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "apt_vl_demo")
VQA_SPLITS = {"train": ["vqav2_train", "vqav2_trainable_val"], "val": ["vqav2_rest_val"],
              "test": ["vqav2_rest_val"]}

# Tiny schedules chosen on the 2-core CPU reference machine (see the module's README section): the whole demo,
# pre-training included, stays under 10 minutes.
DEFAULTS = {
    "vilt": dict(scale=1.0, pretrain_epochs=3, pretrain_lr=1e-3, finetune_epochs=8, finetune_lr=5e-4, batch_size=32),
    "meter": dict(scale=1.0, pretrain_epochs=3, pretrain_lr=1e-3, finetune_epochs=8, finetune_lr=5e-4, batch_size=32),
}


def demo_task(cache: str, scale: float, seed: int = 0) -> compare.TaskData:
    """The demo world + tokenizer (generated once into `cache`) as a comparison task."""
    from shared_apt.vl.training.demo import ensure_demo

    info = ensure_demo(cache, scale=scale, seed=seed)
    task = compare.TaskData(
        name="demo VQA (shapes world)", data_root=info["data_root"], tokenizer=info["tokenizer"],
        vocab_size=int(info["vocab_size"]), cls_token_id=int(info["cls_token_id"]),
        num_labels=int(info["vqa_labels"]), pretrain_datasets=["coco", "f30k"], pretrain_split_names={},
        finetune_datasets=["vqa"], finetune_split_names={"vqa": dict(VQA_SPLITS)}, eval_tables=["vqav2_rest_val"],
        info={"scale": scale, "cache": cache})
    task.info["eval_rows"] = _questions(task.data_root, task.eval_tables)
    task.info["train_rows"] = _questions(task.data_root, VQA_SPLITS["train"])
    return compare.with_majority(task)


def _questions(data_root: str, tables: Sequence[str]) -> int:
    from shared_apt.vl.data.arrow import read_arrow_table

    return sum(len(q) for name in tables
               for q in read_arrow_table(os.path.join(data_root, f"{name}.arrow"))["questions"].to_pylist())


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_apt.harness.experiments.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=os.environ.get("DEMO_CACHE") or DEFAULT_CACHE,
                    help="demo world / tokenizer / pre-training cache (default %(default)s)")
    ap.add_argument("--out", default=None, help="results folder (default <cache>/compare_<model>)")
    ap.add_argument("--scale", type=float, default=None, help="demo world size factor")
    compare.add_run_arguments(ap)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        bb, d, methods = compare.resolve_run(args, DEFAULTS)
    except compare.BackboneUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[demo] demo world (scale {d['scale']:g}) in {args.cache} ...", flush=True)
    task = demo_task(args.cache, d["scale"], seed=0)
    print(f"[demo] VQA: {task.info['train_rows']} training questions, {task.info['eval_rows']} scored questions, "
          f"{task.num_labels} answers; majority answer scores {100 * task.majority:.1f}", flush=True)
    out = args.out or os.path.join(args.cache, f"compare_{args.model}")
    compare.run_and_report("demo", bb, task, out, args, d, methods,
                           extra={"command": "demo", "scale": d["scale"]}, started=t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
