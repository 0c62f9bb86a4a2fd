"""The CLIP demo world: one coloured shape per image (the shapes world of ``shared_apt.data.demo_world``), written in
CoOp's layout (``images/<class>/<n>.png`` + ``split_zhou_ShapesWorld.json``), plus a caption pool for pre-training a
tiny CLIP contrastively.

Classes are colour x shape (12). Their label order puts every colour and every shape in both halves of the
base-to-new split, while no base class is a new class, so new classes can only be recognised by composing words the
model has seen. Pre-training captions use varied templates, never "a photo of a {}.", so the evaluation template is
not the pre-training one and learned context has something to win."""
from __future__ import annotations

import json
import os
import random
from typing import List

from shared_apt.data.demo_world import COLORS, POSITIONS, QUADRANT_CENTERS, SHAPES, SIZES, SceneObject, render_scene

# base (labels 0-5) and new (6-11): every colour and shape appears in both halves
CLASSES = ["red circle", "green square", "blue triangle", "yellow circle", "red square", "green triangle",
           "blue circle", "yellow square", "red triangle", "green circle", "blue square", "yellow triangle"]
CAPTION_TEMPLATES = ["a {size} {color} {shape}.", "there is a {color} {shape} in the {position}.",
                     "{color} {shape}", "an image with a {size} {color} {shape}", "the {shape} is {color}.",
                     "a {color} {shape} at the {position}", "one {color} {shape} on a plain background"]
SPLIT_FILE = "split_zhou_ShapesWorld.json"


def _object(rng: random.Random, color: str, shape: str) -> SceneObject:
    position = rng.choice(POSITIONS)
    x, y = QUADRANT_CENTERS[position]
    return SceneObject(shape=shape, color=color, size=rng.choice(SIZES), position=position,
                       cx=round(x + rng.uniform(-0.04, 0.04), 4), cy=round(y + rng.uniform(-0.04, 0.04), 4))


def caption(rng: random.Random, o: SceneObject) -> str:
    return rng.choice(CAPTION_TEMPLATES).format(size=o.size, color=o.color, shape=o.shape, position=o.position)


def make_world(out: str, per_class=(24, 8, 30), pretrain_per_class: int = 60, image_size: int = 48,
               seed: int = 0) -> str:
    """Write the world into ``out`` (skipped when already complete) and return ``out``. ``per_class``: train / val /
    test images per class; ``pretrain_per_class``: captioned images for pre-training (``captions.json``)."""
    done = os.path.join(out, ".complete")
    if os.path.isfile(done):
        return out
    assert set(c.split()[0] for c in CLASSES) <= set(COLORS) and set(c.split()[1] for c in CLASSES) <= set(SHAPES)
    rng = random.Random(seed)
    split = {"train": [], "val": [], "test": []}
    captions: List[list] = []
    for label, name in enumerate(CLASSES):
        color, shape = name.split()
        folder = os.path.join(out, "images", name.replace(" ", "_"))
        os.makedirs(folder, exist_ok=True)
        counts = dict(zip(("train", "val", "test"), per_class), pretrain=pretrain_per_class)
        for part, n in counts.items():
            for i in range(n):
                o = _object(rng, color, shape)
                rel = f"{name.replace(' ', '_')}/{part}_{i:04d}.png"
                render_scene((o,), image_size).save(os.path.join(out, "images", rel))
                if part == "pretrain":
                    captions.append([rel, caption(rng, o)])
                else:
                    split[part].append([rel, label, name])
    with open(os.path.join(out, SPLIT_FILE), "w") as f:
        json.dump(split, f)
    with open(os.path.join(out, "captions.json"), "w") as f:
        json.dump(captions, f)
    open(done, "w").close()
    return out
