"""The demo setup used by the shell entry points when no DATA_ROOT is given, and by the tests: the synthetic shapes
world (``shared_apt.vl.data.demo_world``) plus a small WordPiece tokenizer trained on its texts, generated once into a
cache folder.

    python -m shared_apt.vl.training.demo --cache ~/.cache/apt_vl_demo [--scale 0.25]

prints shell assignments ``DEMO_DATA_ROOT=... DEMO_TOKENIZER=... DEMO_VOCAB_SIZE=... DEMO_VQA_LABELS=...`` that the
scripts ``eval`` (every value is quoted).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import sys
from typing import Dict, Optional, Sequence

from shared_apt.peft.atomic import atomic_write_json
from shared_apt.vl.data.arrow import read_arrow_table

DONE_MARKER = "DEMO_READY.json"


def _texts(data_root: str):
    for path in sorted(glob.glob(os.path.join(data_root, "*.arrow"))):
        table = read_arrow_table(path)
        for column in ("caption", "questions"):
            if column in table.column_names:
                for texts in table[column].to_pylist():
                    for t in texts or []:
                        yield t


def ensure_demo(cache_dir: str, scale: float = 0.25, seed: int = 0) -> Dict[str, object]:
    """Generate (once) the demo world and its tokenizer under `cache_dir`; return their paths and sizes."""
    from shared_apt.vl.data.demo_world import DemoWorldConfig, make_demo_world
    from shared_apt.vl.data.text import get_tokenizer, train_wordpiece_tokenizer

    cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    tag = f"scale{scale:g}_seed{seed}"
    root = os.path.join(cache_dir, tag)
    data_root = os.path.join(root, "data")
    tok_dir = os.path.join(root, "tokenizer")
    marker = os.path.join(root, DONE_MARKER)
    if not os.path.isfile(marker):
        os.makedirs(root, exist_ok=True)
        make_demo_world(data_root, seed=seed, config=DemoWorldConfig().scaled(scale))
        train_wordpiece_tokenizer(_texts(data_root), tok_dir, vocab_size=2000, min_frequency=1)
        atomic_write_json(marker, {"scale": scale, "seed": seed})
    tok = get_tokenizer(tok_dir)
    with open(os.path.join(data_root, "vqa_dict.json")) as f:
        vqa_labels = len(json.load(f))
    return {"data_root": data_root, "tokenizer": tok_dir, "vocab_size": len(tok), "vqa_labels": vqa_labels,
            "cls_token_id": tok.cls_token_id}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Generate the demo world and tokenizer once; print shell assignments.")
    p.add_argument("--cache", required=True, help="cache folder")
    p.add_argument("--scale", type=float, default=0.25, help="demo world size factor")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    info = ensure_demo(args.cache, args.scale, args.seed)
    for k, v in info.items():
        print(f"DEMO_{k.upper()}={shlex.quote(str(v))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
