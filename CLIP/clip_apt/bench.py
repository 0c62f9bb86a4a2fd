"""Real-data bench of every CLIP method on an image-classification folder (``sh script/clip_bench.sh FOLDER``).

    python -m clip_apt.bench FOLDER [--shots 16] [--seeds 1] [--json OUT] [--methods coop,upt,...] [--epochs 15]
    python -m clip_apt.bench --from-sklearn-digits OUT      # writes scikit-learn's digits as a class-folder dataset

1. **Reading the folder.** Three layouts are accepted (checked in this order):

   - CoOp's split format: exactly one ``split_zhou_*.json`` (``train`` / ``val`` / ``test`` lists of
     ``[path, label, classname]``) beside the image root. The root is ``--image-dir`` if given, else the one folder
     among FOLDER and its sub-folders in which the split's first train path exists (``images/``, ``jpg/``,
     ``2750/``...).
   - Split folders: ``FOLDER/train/<class>/...`` plus ``FOLDER/test/<class>/...`` and/or ``FOLDER/val/<class>/...``;
     the test split is ``test/`` (``val/`` then stays the val split) or, without ``test/``, ``val/``.
   - Class folders: ``FOLDER/<class>/...`` (images anywhere below each class folder). The split is made here,
     deterministically and stratified, as CoOp splits Flowers/DTD (50 / 20 / 30 %): per class the files, sorted by
     path, are shuffled with ``random.Random("<seed>:<class folder>")`` (seed 0), then n_test = round(0.3 n) and
     n_val = round(0.2 n), with at least one test image when n >= 2 and at least one train image; the rest is train.

   Labels follow the sorted class folder names (the JSON's labels in the split format); class names are the folder
   names (underscores kept: prompts read them as spaces). Image files: .jpg .jpeg .png .bmp .gif .tif .tiff .webp
   .ppm .pgm (any case); other files are ignored, hidden ones too. A class without any train image is dropped from
   every split and listed. Images are decoded once (EXIF orientation applied; palette / transparent images composed
   on white; 16-bit and float images scaled by their maximum) and stored as RGB PNGs with the shorter side
   ``2 * image_size`` in a CoOp-format copy under ``<cache>/clip_bench/<digest>/data`` (``split_zhou_Bench.json``), the
   digest covering the layout, the class names and every file's bytes.

2. **Pre-training.** The tiny CLIP of the demo (``pretrain.DEMO_GEOMETRY``, 32 px) is trained from scratch,
   contrastively (CLIP's loss, AdamW, batch 64, about ``--pretrain-steps`` steps whatever the dataset size), on the
   copy's train split, all classes, each image once per template of :data:`CAPTION_TEMPLATES` per pass (never the
   evaluation template "a photo of a {}."), random crops of 60-100 % of the area. It is cached per digest and step
   count.

3. **Methods.** Every method of the demo (``clip_apt.demo.METHODS``) on CoCoOp's base-to-new protocol with K shots,
   for seeds 1..N: the demo's recipe (SGD lr 0.002, CoOp's schedule, batch 16, CoCoOp batch 4, random crops of at
   least 80 % and no flips: digits and text are not mirror-symmetric), ``--epochs`` epochs but at least
   ``--min-steps`` optimiser steps. The table is the demo's (params, ViT-B/16 params and GFLOPs, base / new / H);
   base and new are means over seeds, H is the harmonic mean of those means (CoCoOp's convention). Each run also
   leaves its ``results.json`` under ``<out>/runs`` (readable by ``python -m clip_apt.report``)."""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from typing import Dict, List, Sequence, Tuple

from shared_apt.peft.atomic import atomic_write, atomic_write_json

DEFAULT_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "apt_vl_demo")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLIT_FRACTIONS = (0.5, 0.2, 0.3)   # train / val / test of a class-folder dataset (CoOp's Flowers / DTD rule)
SPLIT_SEED = 0
EVAL_TEMPLATE = "a photo of a {}."
CAPTION_TEMPLATES = ["{}.", "a picture of a {}.", "an image showing a {}.", "this is a {}.", "a {} in the picture.",
                     "an example of the class {}.", "a small image of a {}.", "there is a {} here."]
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COPY_VERSION = "1"   # bump when the copy's format changes (part of the digest)
Item = Tuple[str, int, str]   # (absolute source path, label, class name)


class BenchDataError(ValueError):
    """The folder is not a dataset the bench can read."""


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_below(folder: str) -> List[str]:
    out = []
    for d, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
        out.extend(os.path.join(d, f) for f in sorted(files) if _is_image(f))
    return out


def _class_folders(folder: str) -> List[str]:
    return sorted(e for e in os.listdir(folder) if not e.startswith(".") and os.path.isdir(os.path.join(folder, e)))


def stratified_split(paths: Sequence[str], key: str, fractions=SPLIT_FRACTIONS, seed: int = SPLIT_SEED):
    """One class's files -> (train, val, test) as described in the module docstring."""
    paths = sorted(paths)
    random.Random(f"{seed}:{key}").shuffle(paths)
    n = len(paths)
    n_test = max(1, round(fractions[2] * n)) if n >= 2 else 0
    n_val = min(round(fractions[1] * n), n - n_test - 1) if n >= 1 else 0
    n_val = max(n_val, 0)
    return paths[n_test + n_val:], paths[n_test:n_test + n_val], paths[:n_test]


def read_folder(folder: str, image_dir: str = None) -> Tuple[Dict[str, List[Item]], str, List[str]]:
    """The splits of ``folder`` (one of the three layouts of the module docstring), the layout's name, and notes
    (dropped classes, ...)."""
    import glob

    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise BenchDataError(f"dataset folder {folder!r} does not exist")
    notes: List[str] = []
    found = sorted(glob.glob(os.path.join(folder, "split_zhou_*.json")))
    if len(found) > 1:
        raise BenchDataError(f"{folder!r} holds {len(found)} split_zhou_*.json files; expected one")
    if found:
        with open(found[0]) as f:
            split = json.load(f)
        for name in ("train", "val", "test"):
            if not isinstance(split.get(name), list):
                raise BenchDataError(f"{found[0]!r}: key {name!r} must be a list of [path, label, classname]")
        if not split["train"] or not split["test"]:
            raise BenchDataError(f"{found[0]!r}: the train and test lists must not be empty")
        if image_dir is None:
            first = split["train"][0][0]
            roots = [folder] + [os.path.join(folder, d) for d in _class_folders(folder)]
            hits = [r for r in roots if os.path.isfile(os.path.join(r, first))]
            if len(hits) != 1:
                raise BenchDataError(f"{found[0]!r}: the first train path {first!r} exists under {len(hits)} of "
                                     f"{folder!r} and its sub-folders ({hits}); pass --image-dir")
            root = hits[0]
        else:
            root = os.path.join(folder, image_dir)
        splits = {}
        for name in ("train", "val", "test"):
            items = []
            for i, e in enumerate(split[name]):
                if not (isinstance(e, list) and len(e) == 3 and isinstance(e[1], int) and isinstance(e[2], str)):
                    raise BenchDataError(f"{found[0]!r} {name}[{i}] = {e!r}: expected [path, integer label, classname]")
                items.append((os.path.join(root, e[0]), e[1], e[2]))
            splits[name] = items
        layout = f"CoOp split {os.path.basename(found[0])} (images under {os.path.relpath(root, folder)})"
    else:
        top = _class_folders(folder)
        if "train" in top and ("test" in top or "val" in top):
            parts = {"train": "train", "val": "val" if "test" in top else None, "test": "test" if "test" in top
                     else "val"}
            names = sorted({c for p in parts.values() if p for c in _class_folders(os.path.join(folder, p))})
            label = {c: i for i, c in enumerate(names)}
            splits = {s: ([(p, label[c], c) for c in _class_folders(os.path.join(folder, d))
                           for p in _images_below(os.path.join(folder, d, c))] if d else [])
                      for s, d in parts.items()}
            layout = "split folders " + ", ".join(f"{s}={d}/" for s, d in parts.items() if d)
        else:
            per_class = {c: _images_below(os.path.join(folder, c)) for c in top}
            empty = [c for c, ps in per_class.items() if not ps]
            if empty:
                notes.append(f"class folders without images ignored: {empty}")
            names = [c for c in top if per_class[c]]
            if len(names) < 2:
                raise BenchDataError(f"{folder!r}: expected a split_zhou_*.json, train/ + test/ (or val/) folders, "
                                     f"or at least two class folders with images; found class folders {top}")
            splits = {"train": [], "val": [], "test": []}
            for label, c in enumerate(names):
                for s, ps in zip(("train", "val", "test"), stratified_split(per_class[c], c)):
                    splits[s].extend((p, label, c) for p in ps)
            layout = (f"class folders, stratified split {'/'.join(str(round(100 * f)) for f in SPLIT_FRACTIONS)} "
                      f"(seed {SPLIT_SEED})")
    # classes without a train image cannot be trained or prompted by label order: drop and relabel
    names_of = {}
    for s in ("train", "val", "test"):
        for _, y, c in splits[s]:
            if names_of.setdefault(y, c) != c:
                raise BenchDataError(f"{folder!r}: label {y} has two class names, {names_of[y]!r} and {c!r}")
    trained = sorted({y for _, y, _ in splits["train"]})
    dropped = sorted(set(names_of) - set(trained))
    if dropped:
        notes.append(f"classes without train images dropped: {[names_of[y] for y in dropped]}")
    relabel = {y: i for i, y in enumerate(trained)}
    splits = {s: [(p, relabel[y], c) for p, y, c in items if y in relabel] for s, items in splits.items()}
    if len(relabel) < 2:
        raise BenchDataError(f"{folder!r}: {len(relabel)} class(es) with train images; base-to-new needs >= 2")
    if not splits["test"]:
        raise BenchDataError(f"{folder!r}: the test split is empty")
    return splits, layout, notes


def load_rgb(path: str):
    """Any PIL image as RGB: EXIF orientation, transparency composed on white, 16-bit / float scaled by its max."""
    import numpy as np
    from PIL import Image, ImageOps

    try:
        im = Image.open(path)
        im.load()
    except Exception as e:  # noqa: BLE001 (PIL raises many kinds)
        raise BenchDataError(f"cannot read image {path!r}: {e}") from e
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        a = np.asarray(im, dtype=np.float64)
        a = a - min(a.min(), 0.0)
        im = Image.fromarray((255.0 * a / a.max() if a.max() > 0 else a).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def _digest(splits: Dict[str, List[Item]], layout: str, image_size: int) -> str:
    h = hashlib.sha1(f"{COPY_VERSION}|{layout}|{image_size}".encode())
    for s in ("train", "val", "test"):
        for p, y, c in splits[s]:
            h.update(f"{s}|{y}|{c}|".encode())
            with open(p, "rb") as f:
                h.update(hashlib.sha1(f.read()).digest())
    return h.hexdigest()[:16]


def prepare(folder: str, cache: str, image_size: int, image_dir: str = None, log=print) -> Tuple[str, dict]:
    """The CoOp-format copy of ``folder`` (written once per digest) and a description (layout, counts, notes)."""
    from PIL import Image

    splits, layout, notes = read_folder(folder, image_dir)
    digest = _digest(splits, layout, image_size)
    base = os.path.join(cache, "clip_bench", digest)
    data = os.path.join(base, "data")
    names = {}
    for _, y, c in splits["train"]:
        names[y] = c
    info = {"folder": os.path.abspath(folder), "layout": layout, "digest": digest, "classes": len(names),
            "classnames": [names[y] for y in range(len(names))], "notes": notes,
            "images": {s: len(v) for s, v in splits.items()}}
    if os.path.isfile(os.path.join(data, ".complete")):
        return data, info
    if log:
        log(f"[bench] copying {sum(info['images'].values())} images of {folder} ({layout}) to {data} ...")
    keep = 2 * image_size
    split_json = {}
    for s in ("train", "val", "test"):
        rows = []
        for i, (p, y, c) in enumerate(splits[s]):
            im = load_rgb(p)
            w, h = im.size
            scale = keep / min(w, h)
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
            rel = f"{y:04d}/{s}_{i:06d}.png"
            os.makedirs(os.path.join(data, "images", f"{y:04d}"), exist_ok=True)
            im.save(os.path.join(data, "images", rel))
            rows.append([rel, y, c])
        split_json[s] = rows
    atomic_write_json(os.path.join(data, "split_zhou_Bench.json"), split_json)
    atomic_write_json(os.path.join(base, "dataset.json"), info, indent=2)
    open(os.path.join(data, ".complete"), "w").close()
    return data, info


def caption_pairs(data: str) -> List[Tuple[str, str]]:
    """(image, caption) for every train image of the copy and every template of :data:`CAPTION_TEMPLATES`."""
    from .datasets import read_split

    pairs = []
    for it in read_split(data)["train"]:
        name = it.classname.replace("_", " ").strip()
        pairs.extend((it.impath, t.format(name)) for t in CAPTION_TEMPLATES)
    return pairs


def context_length_for(classnames: Sequence[str], minimum: int = 24) -> int:
    """The tiny CLIP's text context: the demo's 24 tokens, or more (a multiple of 8) when the longest evaluation
    prompt or caption of these class names needs more than 24 - 4 tokens (4 spare: SOT / EOT and prompt-learner
    context longer than the 4 words it replaces)."""
    from .modules.tokenizer import encode

    longest = max(len(encode(t.format(c.replace("_", " ")))) for c in classnames
                  for t in [EVAL_TEMPLATE] + CAPTION_TEMPLATES)
    return max(minimum, 8 * math.ceil((longest + 4) / 8))


def method_key(method: str, options: dict) -> str:
    """JSON key of a METHODS row: the registry name, ``upt_token_mixing`` for UPT with the paper's token mixing."""
    return method + ("_token_mixing" if method == "upt" and options.get("token_mixing") else "")


def write_digits(out: str) -> str:
    """scikit-learn's bundled ``load_digits`` (1797 real 8x8 handwritten digits, 16 grey levels) as class folders
    ``out/<zero..nine>/<index>.png`` (grey levels 0..16 -> 0..255). Returns ``out``."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        folder = os.path.join(out, DIGIT_NAMES[int(y)])
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(np.round(img * 255.0 / 16.0).astype(np.uint8), "L").save(os.path.join(folder, f"{i:04d}.png"))
    return out


def summarize(per_seed: Dict[str, List[dict]]) -> Dict[str, dict]:
    """Per method: mean and std over seeds of base and new (``report.mean_std``: CoOp's np.mean / np.std) and H of
    the means (CoCoOp)."""
    from .modules.clip_module import harmonic_mean
    from .report import mean_std

    out = {}
    for key, runs in per_seed.items():
        (b, b_std), (n, n_std) = mean_std([r["base_acc"] for r in runs]), mean_std([r["new_acc"] for r in runs])
        out[key] = {"base": b, "new": n, "h": harmonic_mean(b, n), "base_std": b_std, "new_std": n_std,
                    "seeds": [r["seed"] for r in runs], "per_seed": [
                        {k: r[k] for k in ("seed", "base_acc", "new_acc", "harmonic_mean", "train_time_s")}
                        for r in runs]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clip_apt.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", help="dataset folder (split_zhou_*.json, train/ + test/, or class folders)")
    ap.add_argument("--from-sklearn-digits", metavar="OUT", help="write scikit-learn's digits to OUT and exit")
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=1, help="number of seeds: runs seeds 1..N (CoOp's 1, 2, 3)")
    ap.add_argument("--json", default=None, help="write the summary JSON here too")
    ap.add_argument("--methods", default="all", help="comma list of registry names of demo methods (default all)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.002, help="SGD learning rate of every method (CoOp's 0.002)")
    ap.add_argument("--min-steps", type=int, default=200, help="at least this many optimiser steps per method")
    ap.add_argument("--pretrain-steps", type=int, default=1500,
                    help="about this many pre-training steps (batch 64; whole passes over the caption pairs)")
    ap.add_argument("--image-dir", default=None, help="image root of a split_zhou_*.json, relative to FOLDER")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: the tiny model gains little from more, and on a shared "
                         "machine OpenMP's waiting threads cost ten times the CPU)")
    ap.add_argument("--cache", default=os.environ.get("CLIP_BENCH_CACHE") or DEFAULT_CACHE)
    ap.add_argument("--out", default=None, help="results folder (default <cache>/clip_bench/<digest>/results)")
    args = ap.parse_args(argv)
    if args.from_sklearn_digits:
        print(write_digits(args.from_sklearn_digits))
        return 0
    if not args.folder:
        ap.error("FOLDER is required (or --from-sklearn-digits OUT)")
    if args.shots < 1 or args.seeds < 1 or args.epochs < 1:
        ap.error(f"--shots {args.shots}, --seeds {args.seeds}, --epochs {args.epochs}: expected integers >= 1")
    import logging
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    for name in ("pytorch_lightning", "pytorch_lightning.utilities.rank_zero", "lightning.pytorch",
                 "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    from shared_apt.vl.training.run import resolve_config

    from .config import ex
    from .demo import METHODS, method_table
    from .pretrain import DEMO_GEOMETRY, pretrain_on_pairs
    from .train import run

    wanted = METHODS if args.methods == "all" else [m for m in METHODS if m[1] in args.methods.split(",")]
    if not wanted:
        print(f"error: --methods {args.methods!r} selects nothing; methods: {sorted({m[1] for m in METHODS})}",
              file=sys.stderr)
        return 2
    t0, c0 = time.perf_counter(), time.process_time()
    g = DEMO_GEOMETRY
    try:
        data, info = prepare(args.folder, args.cache, g["image_size"], args.image_dir)
    except BenchDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = os.path.dirname(data)
    g = dict(g, context_length=context_length_for(info["classnames"]))
    print(f"[bench] {info['folder']}: {info['layout']}; {info['classes']} classes; images "
          f"{info['images']}; copy {data}", flush=True)
    for note in info["notes"]:
        print(f"[bench] note: {note}", flush=True)
    pairs = caption_pairs(data)
    clip_path = os.path.join(base, f"tiny_clip_s{args.pretrain_steps}_c{g['context_length']}.pt")
    if not os.path.isfile(clip_path):
        print(f"[bench] pre-training the tiny CLIP on {len(pairs)} (train image, caption) pairs, about "
              f"{args.pretrain_steps} steps ...", flush=True)
    pretrain_on_pairs(pairs, clip_path, g, steps=args.pretrain_steps, crop_scale=(0.6, 1.0))
    t_pre = time.perf_counter() - t0
    out = args.out or os.path.join(base, "results")
    os.makedirs(out, exist_ok=True)
    n_base = math.ceil(info["classes"] / 2)
    per_method: Dict[str, List[dict]] = {}
    common = resolve_config(ex, (), dict(
        exp_name="bench", data_root=data, clip_path=clip_path, text_heads=g["text_heads"],
        vision_heads=g["vision_heads"], image_size=g["image_size"], crop_min_scale=0.8, flip=False,
        num_shots=args.shots, template=EVAL_TEMPLATE, protocol="base2new", lr=args.lr,
        output_dir=os.path.join(out, "runs")))
    for seed in range(1, args.seeds + 1):
        for label, method, options, _ in wanted:
            key = method_key(method, options)
            batch = 4 if method == "cocoop" else 16
            # K-shot base train set (classes with fewer images give all they have): steps per epoch as Lightning
            # counts them (drop_last when there is at least one full batch)
            n_train = sum(1 for it in _fewshot_base_train(data, args.shots, seed))
            steps = n_train // batch if n_train >= batch else 1
            epochs = max(args.epochs, math.ceil(args.min_steps / steps))
            r = run(dict(common, exp_name=f"bench_{key}", seed=seed, batch_size=batch, max_epochs=epochs,
                         peft=method, peft_options=options, method_label=key))
            _label_results(r["output_dir"], label, key, os.path.basename(info["folder"].rstrip("/")))
            per_method.setdefault(key, []).append(r)
            print(f"[bench] seed {seed} {label:28s} base {r['base_acc']:5.1f}  new {r['new_acc']:5.1f}  "
                  f"H {r['harmonic_mean']:5.1f}  ({epochs} epochs, {r['train_time_s']:.0f}s)", flush=True)
    summary = summarize(per_method)
    rows = []
    for label, method, options, _ in wanted:
        key = method_key(method, options)
        s = summary[key]
        rows.append({"label": label, "method": method, "key": key, "peft_options": options,
                     "trainable_params": per_method[key][0]["trainable_params"], "base_acc": s["base"],
                     "new_acc": s["new"], "harmonic_mean": s["h"]})
    print("[bench] accounting at ViT-B/16 shapes (meta device) ...", flush=True)
    table = method_table(rows, wanted)
    elapsed = time.perf_counter() - t0
    result = {"methods": {}, "dataset": info, "shots": args.shots, "seeds": list(range(1, args.seeds + 1)),
              "n_base_classes": n_base, "n_new_classes": info["classes"] - n_base, "geometry": g,
              "pretrain_steps": args.pretrain_steps, "epochs": args.epochs, "min_steps": args.min_steps,
              "lr": args.lr,
              "caption_templates": CAPTION_TEMPLATES, "eval_template": EVAL_TEMPLATE,
              "pretrain_s": round(t_pre, 1), "total_s": round(elapsed, 1),
              "cpu_s": round(time.process_time() - c0, 1)}
    for row in rows:
        result["methods"][row["key"]] = dict(summary[row["key"]], label=row["label"], method=row["method"],
                                             options=row["peft_options"], params=row["trainable_params"],
                                             vit_b16_params=row["vit_b16_params"],
                                             gflops_per_image=row["gflops_per_image"],
                                             gflops_per_prompt=row["gflops_per_prompt"])
    header = (f"{info['folder']} ({info['classes']} classes: {n_base} base, {info['classes'] - n_base} new), "
              f"{args.shots} shots, seeds 1..{args.seeds}; base / new: mean over seeds, H of the means")

    def write_table(tmp):
        with open(tmp, "w") as f:
            f.write(header + "\n\n" + table + "\n")

    atomic_write(os.path.join(out, "table.md"), write_table)
    atomic_write_json(os.path.join(out, "bench.json"), result, indent=2)
    if args.json:
        atomic_write_json(args.json, result, indent=2)
    print()
    print(header)
    print()
    print(table)
    print()
    print(f"[bench] {elapsed:.0f}s in all, {result['cpu_s']:.0f}s of CPU time (pre-training and copy {t_pre:.0f}s); "
          f"table {os.path.join(out, 'table.md')}"
          f", JSON {args.json or os.path.join(out, 'bench.json')}")
    return 0


def _fewshot_base_train(data: str, shots: int, seed: int):
    """The run's K-shot base training set: the same cached subset (``split_fewshot/`` of the copy) the run reads."""
    from .datasets import fewshot_splits, load_dataset, subsample_classes

    return subsample_classes(fewshot_splits(load_dataset("folder", data), shots, seed), "base")["train"]


def _label_results(run_dir: str, label: str, key: str, dataset: str) -> None:
    """Name the run's results.json after the bench's input folder (``dataset``; the run itself sees the cached copy
    ``.../data``) and add the table's row label (``display_label``)."""
    path = os.path.join(run_dir, "results.json")
    with open(path) as f:
        r = json.load(f)
    if r.get("method_label") != key:
        raise ValueError(f"{path}: method_label {r.get('method_label')!r}, expected the bench's key {key!r}")
    r["dataset"] = dataset
    r.setdefault("display_label", label)
    atomic_write_json(path, r, indent=2, sort_keys=True)


if __name__ == "__main__":
    sys.exit(main())
