"""NLVR (v1.0) benchmark of every tuning method (``sh script/nlvr1_bench.sh TRAIN_SPLIT_DIR... --eval DIR``).

    python -m shared_apt.harness.experiments.nlvr1 ../shared/data/nlvr1/test --eval ../shared/data/nlvr1/hidden

1. Arrows (cached by a digest of the inputs and options) with the NLVR1 writer: every training split as VQA-schema
   rows (all six permutation images as rows by default, ``--image-index K`` for one), its TRUE statements as
   caption rows for pre-training (a group-wise cut, no leaking folders, keeps a small caption validation part),
   and the evaluation split as VQA-schema rows (permutation 0: one row per statement, so the score is per-statement
   accuracy; ``--eval-all-images`` scores all six);
2. a WordPiece tokenizer trained on the training sentences;
3. a tiny ViLT (or METER) pre-trained with MLM+ITM on the true statements, fine-tuned with every method on true/false
   answers ("false" = class 0, "true" = class 1), scored on the evaluation split (VQA score with one answer of score
   1.0 = accuracy).

It is a benchmark, not a test: the numbers depend on the schedule (``--finetune-epochs`` ...).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional, Sequence


from ...peft.atomic import atomic_write_json
from . import compare
from .demo import DEFAULT_CACHE

DEFAULTS = {
    "vilt": dict(pretrain_epochs=3, pretrain_lr=1e-3, finetune_epochs=2, finetune_lr=5e-4, batch_size=32),
    "meter": dict(pretrain_epochs=3, pretrain_lr=1e-3, finetune_epochs=2, finetune_lr=5e-4, batch_size=32),
}
DONE = "NLVR1_READY.json"
# 400x100 images: ViLT's MinMaxResize(S, 1.67 S) gives 256x64 (16 x 4 patches of 16) at S = 160 (at 64 the short side
# would fall below one 32-pixel unit); statements are longer than the demo's questions (40 text slots)
MODEL_OVERRIDES = {"image_size": 160, "max_text_len": 40}


def _split_of(path: str):
    path = os.path.abspath(os.path.expanduser(path)).rstrip(os.sep)
    root, split = os.path.dirname(path), os.path.basename(path)
    if not os.path.isfile(os.path.join(path, f"{split}.json")):
        raise SystemExit(f"{path}: not an NLVR split folder (expected {split}.json inside)")
    return root, split


def _sentences(root: str, split: str) -> List[str]:
    from shared_apt.vl.data.writers.nlvr1 import load_examples

    return [e["sentence"] for e in load_examples(root, split)]


def prepare(train_dirs: Sequence[str], eval_dir: str, cache: str, *, all_images: bool = True, image_index: int = 0,
            eval_all_images: bool = False, caption_val_fraction: float = 0.1, limit: Optional[int] = None,
            vocab_size: int = 1000, show_progress: bool = True) -> compare.TaskData:
    """Write (once per distinct input) the arrows and the tokenizer into `cache`; return the comparison task."""
    from shared_apt.vl.data.text import get_tokenizer, train_wordpiece_tokenizer
    from shared_apt.vl.data.writers.nlvr1 import make_arrow

    trains = [_split_of(d) for d in train_dirs]
    eval_root, eval_split = _split_of(eval_dir)
    key = compare._digest({"train": trains, "eval": [eval_root, eval_split], "all_images": all_images,
                           "image_index": image_index, "eval_all_images": eval_all_images,
                           "caption_val_fraction": caption_val_fraction, "limit": limit, "vocab_size": vocab_size,
                           "mtimes": [os.path.getmtime(os.path.join(r, s, f"{s}.json")) for r, s in
                                      trains + [(eval_root, eval_split)]]})
    base = os.path.join(os.path.abspath(os.path.expanduser(cache)), f"nlvr1_{key}")
    data_root, tok_dir = os.path.join(base, "data"), os.path.join(base, "tokenizer")
    marker = os.path.join(base, DONE)
    names = {"train": [f"nlvr1_train_{s}" for _, s in trains],
             "cap_train": [f"nlvr1_cap_{s}_train" for _, s in trains],
             "cap_val": [f"nlvr1_cap_{s}_val" for _, s in trains],
             "eval": [f"nlvr1_eval_{eval_split}"]}
    if not os.path.isfile(marker):
        os.makedirs(data_root, exist_ok=True)
        counts = {}
        for root, split in trains:
            counts.update(make_arrow(root, data_root, split=split, name=f"train_{split}", mode="vqa",
                                     image_index=image_index, all_images=all_images, limit=limit,
                                     show_progress=show_progress))
            counts.update(make_arrow(root, data_root, split=split, name=f"cap_{split}", mode="true_captions",
                                     all_images=all_images, image_index=image_index,
                                     val_fraction=caption_val_fraction, limit=limit, show_progress=show_progress))
        counts.update(make_arrow(eval_root, data_root, split=eval_split, name=f"eval_{eval_split}", mode="vqa",
                                 image_index=image_index, all_images=eval_all_images, limit=limit,
                                 show_progress=show_progress))
        sentences = [s for root, split in trains for s in _sentences(root, split)[:limit]]
        train_wordpiece_tokenizer(sentences, tok_dir, vocab_size=vocab_size, min_frequency=1)
        atomic_write_json(marker, {"rows": counts, "train": trains, "eval": [eval_root, eval_split]}, indent=1)
    with open(marker) as f:
        written = json.load(f)
    tok = get_tokenizer(tok_dir)
    rows = written["rows"]
    task = compare.TaskData(
        name=f"NLVR v1, train {'+'.join(s for _, s in trains)} -> eval {eval_split}", data_root=data_root,
        tokenizer=tok_dir, vocab_size=len(tok), cls_token_id=int(tok.cls_token_id), num_labels=2,
        pretrain_datasets=["f30k"],
        pretrain_split_names={"f30k": {"train": names["cap_train"], "val": names["cap_val"],
                                       "test": names["cap_val"]}},
        finetune_datasets=["nlvr1"],
        finetune_split_names={"nlvr1": {"train": names["train"], "val": names["eval"], "test": names["eval"]}},
        eval_tables=names["eval"], metric_name="accuracy", model_overrides=dict(MODEL_OVERRIDES),
        info={"rows": rows, "eval_rows": rows[f"{names['eval'][0]}.arrow"],
              "train_rows": sum(rows[f"{n}.arrow"] for n in names["train"]),
              "caption_rows": sum(rows[f"{n}.arrow"] for n in names["cap_train"]),
              "train_splits": [os.path.join(r, s) for r, s in trains],
              "eval_split": os.path.join(eval_root, eval_split),
              "all_images": all_images, "eval_all_images": eval_all_images, "cache": base})
    task = compare.with_majority(task)
    task.majority_answer = {"0": "false", "1": "true"}.get(task.majority_answer, task.majority_answer)
    return task


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_apt.harness.experiments.nlvr1", description=__doc__.split("\n\n")[0])
    ap.add_argument("train", nargs="+", help="NLVR split folder(s) to train on (<root>/<split> with <split>.json)")
    ap.add_argument("--eval", required=True, help="NLVR split folder to score on")
    ap.add_argument("--cache", default=os.environ.get("NLVR1_CACHE") or DEFAULT_CACHE)
    ap.add_argument("--out", default=None, help="results folder (default <cache>/nlvr1_bench_<model>)")
    ap.add_argument("--image-index", type=int, default=None,
                    help="train on this permutation image only (default: all six as rows)")
    ap.add_argument("--eval-all-images", action="store_true", help="score all six permutations of every statement")
    ap.add_argument("--limit", type=int, default=None, help="use only the first LIMIT statements of every split")
    compare.add_run_arguments(ap)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        bb, d, methods = compare.resolve_run(args, DEFAULTS)
    except compare.BackboneUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[nlvr1] writing arrows + tokenizer into {args.cache} (once per input) ...", flush=True)
    task = prepare(args.train, args.eval, args.cache, all_images=args.image_index is None,
                   image_index=args.image_index or 0, eval_all_images=args.eval_all_images, limit=args.limit,
                   show_progress=not args.no_progress)
    print(f"[nlvr1] {task.info['train_rows']} training rows, {task.info['caption_rows']} pre-training captions, "
          f"{task.info['eval_rows']} scored rows; majority answer ({task.majority_answer}) scores "
          f"{100 * task.majority:.1f}", flush=True)
    out = args.out or os.path.join(args.cache, f"nlvr1_bench_{args.model}")
    compare.run_and_report("nlvr1", bb, task, out, args, d, methods,
                           extra={"command": "nlvr1", "train_splits": task.info["train_splits"],
                                  "eval_split": task.info["eval_split"]}, started=t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
