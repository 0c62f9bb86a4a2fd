"""Sample a (DreamBooth-tuned) Stable Diffusion: N seeded images per prompt, saved with a JSON index and a grid PNG.

    python -m sd_apt.sample --model-dir SD15_FOLDER --weights runs/apt/weights --identifier sks --class-noun dog \
        --num-images 4 --out runs/apt/samples

Prompts: the 25 DreamBooth prompts for the class (live-subject prompts for cat / dog), or ``--prompts-file`` (one
prompt per line, ``{identifier}`` / ``{class_noun}`` substituted). Image j of prompt i uses the seed
``seed + 1000 * i + j`` (one CPU generator per image: the initial noise and any sampler noise are the same whatever
the batching or device), so two methods sampled with the same seed start from the same noise.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from .dreambooth import load_pipeline
from .prompts import dreambooth_prompts
from .weights import load_into_pipeline

INDEX = "samples.json"


def image_seed(seed: int, prompt_index: int, image_index: int) -> int:
    return seed + 1000 * prompt_index + image_index


@torch.no_grad()
def sample(pipe, prompts: list, num_images: int, seed: int, steps: int, guidance: float, resolution: int,
           out_dir: str, batch_size: int = 4) -> list:
    """Write ``p{i:02d}_{j}.png`` per prompt i and image j, ``samples.json`` and ``grid.png``; returns the index."""
    os.makedirs(out_dir, exist_ok=True)
    index = []
    for i, prompt in enumerate(prompts):
        for start in range(0, num_images, batch_size):
            js = list(range(start, min(num_images, start + batch_size)))
            generators = [torch.Generator().manual_seed(image_seed(seed, i, j)) for j in js]
            images = pipe([prompt] * len(js), num_inference_steps=steps, guidance_scale=guidance, height=resolution,
                          width=resolution, generator=generators).images
            for j, im in zip(js, images):
                name = f"p{i:02d}_{j}.png"
                im.save(os.path.join(out_dir, name))
                index.append({"file": name, "prompt": prompt, "prompt_index": i, "image_index": j,
                              "seed": image_seed(seed, i, j)})
    meta = {"prompts": prompts, "num_images": num_images, "seed": seed, "steps": steps, "guidance": guidance,
            "resolution": resolution, "images": index}
    with open(os.path.join(out_dir, INDEX), "w") as f:
        json.dump(meta, f, indent=2)
    rows = [[os.path.join(out_dir, e["file"]) for e in index if e["prompt_index"] == i] for i in range(len(prompts))]
    make_grid(rows, os.path.join(out_dir, "grid.png"))
    return index


def make_grid(rows: list, path: str, row_labels: list | None = None, col_labels: list | None = None,
              cell: int | None = None) -> str:
    """A PNG grid of image files: ``rows[i][j]`` at row i, column j (optional text labels on the left / top)."""
    from PIL import Image, ImageDraw

    first = Image.open(rows[0][0])
    size = cell or first.size[0]
    left = 0 if not row_labels else max(8 * max(len(s) for s in row_labels) // 1, 40)
    top = 0 if not col_labels else 14
    ncol = max(len(r) for r in rows)
    grid = Image.new("RGB", (left + ncol * size, top + len(rows) * size), "white")
    draw = ImageDraw.Draw(grid)
    for i, row in enumerate(rows):
        for j, file in enumerate(row):
            with Image.open(file) as im:
                grid.paste(im.convert("RGB").resize((size, size)), (left + j * size, top + i * size))
        if row_labels:
            draw.text((2, top + i * size + size // 2 - 5), row_labels[i], fill="black")
    for j, label in enumerate(col_labels or []):
        draw.text((left + j * size + 2, 1), label, fill="black")
    grid.save(path)
    return path


def read_prompts(path: str, identifier: str, class_noun: str) -> list:
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if not lines:
        raise ValueError(f"prompts file {path!r} has no prompts")
    return [line.format(identifier=identifier, class_noun=class_noun) for line in lines]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sd_apt.sample", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True, help="local diffusers Stable Diffusion folder")
    ap.add_argument("--weights", default="", help="tuned weights folder from sd_apt.dreambooth ('' = base model)")
    ap.add_argument("--identifier", default="sks")
    ap.add_argument("--class-noun", required=True)
    ap.add_argument("--live", choices=["auto", "true", "false"], default="auto",
                    help="live-subject prompts (default: class is cat or dog)")
    ap.add_argument("--prompts-file", default="")
    ap.add_argument("--num-images", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(a.model_dir, device)
    if a.weights:
        method = load_into_pipeline(pipe, a.weights)
        print(f"[sample] loaded {method.method} weights from {a.weights}")
    if a.prompts_file:
        prompts = read_prompts(a.prompts_file, a.identifier, a.class_noun)
    else:
        prompts = dreambooth_prompts(a.identifier, a.class_noun, None if a.live == "auto" else a.live == "true")
    sample(pipe, prompts, a.num_images, a.seed, a.steps, a.guidance, a.resolution, a.out, a.batch_size)
    print(f"[sample] {len(prompts)} prompts x {a.num_images} images -> {a.out} (grid.png, samples.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
