"""Demo inputs of the CLIP protocol scripts (``script/clip_*.sh`` with DATA_ROOT empty): the CLIP demo's shapes world
and pre-trained tiny CLIP from the demo cache (``python -m clip_apt.demo`` builds the same files; whichever runs first
builds them), plus the world in CoOp's ImageNet layouts (``datasets.demo_coop``). Prints shell assignments
(``DEMO_WORLD``, ``DEMO_COOP_ROOT``, ``DEMO_CLIP_PATH``, ``DEMO_TEXT_HEADS``, ``DEMO_VISION_HEADS``,
``DEMO_IMAGE_SIZE``) for ``eval``; progress goes to stderr.

    python -m clip_apt.script_demo --cache ~/.cache/apt_vl_demo"""
from __future__ import annotations

import argparse
import os
import shlex
import sys


def prepare(cache: str, pretrain_epochs: int = 20) -> dict:
    from .datasets.demo_coop import make_coop_root
    from .datasets.demo_world import make_world
    from .pretrain import DEMO_GEOMETRY, pretrain_tiny_clip

    base = os.path.join(cache, "clip")  # the layout of python -m clip_apt.demo
    world = os.path.join(base, "world")
    if not os.path.isfile(os.path.join(world, ".complete")):
        print(f"[clip demo] writing the shapes world to {world} ...", file=sys.stderr, flush=True)
    world = make_world(world)
    clip_path = os.path.join(base, "tiny_clip.pt")
    if not os.path.isfile(clip_path):
        print("[clip demo] pre-training the tiny CLIP on the captions ...", file=sys.stderr, flush=True)
    clip_path = pretrain_tiny_clip(world, clip_path, epochs=pretrain_epochs,
                                   log=lambda m: print(m, file=sys.stderr, flush=True))
    g = DEMO_GEOMETRY
    return {"DEMO_WORLD": world, "DEMO_COOP_ROOT": make_coop_root(world, os.path.join(base, "coop_root")),
            "DEMO_CLIP_PATH": clip_path, "DEMO_TEXT_HEADS": g["text_heads"], "DEMO_VISION_HEADS": g["vision_heads"],
            "DEMO_IMAGE_SIZE": g["image_size"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clip_apt.script_demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="demo cache folder (the CLIP demo uses <cache>/clip)")
    ap.add_argument("--pretrain-epochs", type=int, default=20, help="as python -m clip_apt.demo (default 20)")
    args = ap.parse_args(argv)
    for k, v in prepare(args.cache, args.pretrain_epochs).items():
        print(f"{k}={shlex.quote(str(v))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
