"""Data-loading throughput (arrow dataset + transforms + collate) next to the model's training throughput.

    python -m shared_apt.bench --loader [--workers 2] [--batch 32] [--image-size 384] [--nlvr-root DIR]
                                        [--model-json bench/results/vilt-b32-cpu.json]

Sources: the demo world (written into a temporary folder) and, where present, NLVR v1 (``../shared/data/nlvr1``,
its ``test`` split written to VQA-schema arrows). Loading must not be the bottleneck: the table reports loader
samples/s and the ratio to the model's training samples/s (APT training step at ViLT-B/32 size, read from a
``shared_apt.bench`` JSON or measured here)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial

import torch

from ..vl.data.datasets import VQAv2Dataset
from ..vl.data.text import get_mlm_collator, train_wordpiece_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_NLVR = os.path.join(os.path.dirname(REPO), "shared", "data", "nlvr1")


def loader_throughput(data_dir: str, names: list, tokenizer, workers: int, batch: int, image_size: int,
                      max_batches: int, transform: str = "pixelbert") -> dict:
    ds = VQAv2Dataset(data_dir, [transform], image_size, split="train", names=names, max_text_len=40,
                      tokenizer=tokenizer)
    collate = partial(ds.collate, mlm_collator=get_mlm_collator(tokenizer))
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                                     persistent_workers=False, drop_last=False)
    it = iter(dl)
    next(it)  # start-up of the workers is not throughput
    seen, t0 = 0, time.perf_counter()
    for i, b in enumerate(it):
        seen += b["text_ids"].shape[0]
        if i + 1 >= max_batches:
            break
    dt = time.perf_counter() - t0
    return {"samples": seen, "seconds": dt, "samples_per_s": seen / dt if dt > 0 else float("inf"),
            "dataset_size": len(ds)}


def model_samples_per_s(model_json: str | None, batch: int = 8) -> tuple[float, str]:
    if model_json and os.path.isfile(model_json):
        res = json.load(open(model_json))
        step = res["methods"]["apt"]["train_step_s"]
        return res["batch"] / step, f"APT training step from {model_json} ({res['device']}, batch {res['batch']})"
    from .bench import measure

    res = measure("vilt-b32", "apt", batch=batch, device="cpu", rounds=1, infer_reps=1)
    return batch / res["methods"]["apt"]["train_step_s"], f"APT training step measured now (cpu, batch {batch})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_apt.bench --loader")
    ap.add_argument("--loader", action="store_true", help="(how shared_apt.bench dispatches here)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--max-batches", type=int, default=8)
    ap.add_argument("--nlvr-root", default=DEFAULT_NLVR)
    ap.add_argument("--model-json", default=os.path.join(REPO, "bench", "results", "vilt-b32-cpu.json"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from ..vl.data.demo_world import make_demo_world
    from ..vl.data.writers import nlvr1

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        demo = os.path.join(tmp, "demo")
        make_demo_world(demo, seed=0, tasks=("vqa",))
        corpus = []
        sources = {"demo world (vqav2_train)": (demo, ["vqav2_train"])}
        if os.path.isdir(args.nlvr_root):
            out = os.path.join(tmp, "nlvr1")
            nlvr1.make_arrow(args.nlvr_root, out, split="test", show_progress=False)
            sources["NLVR v1 test (400x100 PNG)"] = (out, ["nlvr1_test"])
        for d, names in sources.values():
            ds = VQAv2Dataset(d, ["pixelbert"], 64, split="train", names=names)
            corpus += [q for qs in ds.all_texts for q in qs]
        tok = train_wordpiece_tokenizer(corpus, os.path.join(tmp, "tok"), vocab_size=2000)
        for label, (d, names) in sources.items():
            results[label] = loader_throughput(d, names, tok, args.workers, args.batch, args.image_size,
                                               args.max_batches)
            print(f"[loader] {label}: {results[label]['samples_per_s']:.1f} samples/s", file=sys.stderr)
    model_sps, how = model_samples_per_s(args.model_json)
    lines = [f"### data loading vs model (workers {args.workers}, batch {args.batch}, image size {args.image_size})",
             "", f"model: {model_sps:.2f} samples/s ({how})", "",
             "| source | loader samples/s | x model samples/s |", "|---|---|---|"]
    for label, r in results.items():
        r["x_model"] = r["samples_per_s"] / model_sps
        lines.append(f"| {label} | {r['samples_per_s']:.1f} | {r['x_model']:.1f} |")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workers": args.workers, "batch": args.batch, "image_size": args.image_size,
                       "model_samples_per_s": model_sps, "model_source": how, "sources": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
