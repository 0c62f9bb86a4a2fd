"""The CLIP demo world (shapes of ``shared_apt.data.demo_world``), written in CoOp's layout (``images/<class>/<n>.png``
+ ``split_zhou_ShapesWorld.json``), plus a caption pool for pre-training a tiny CLIP contrastively.

Every image shows two shapes side by side: the one on the left is the class (colour x shape, 12 classes), the one
on the right a distractor of another colour and shape. Captions name one or both shapes and where they are, with
varied templates, never "a photo of a {}.": a hand-written prompt matches the distractor as well as the class, so
learned context and visual prompts have something to win (the left shape), and what they learn is class-agnostic. The label order puts every colour and every shape in both halves of
the base-to-new split while no base class is a new class, so new classes are recognised only by composing words the
model has seen."""
from __future__ import annotations

import json
import os
import random
from typing import List

from shared_apt.vl.data.demo_world import COLORS, QUADRANT_CENTERS, SHAPES, SIZES, SceneObject, render_scene

# base (labels 0-5) and new (6-11): every colour and shape appears in both halves
CLASSES = ["red circle", "green square", "blue triangle", "yellow circle", "red square", "green triangle",
           "blue circle", "yellow square", "red triangle", "green circle", "blue square", "yellow triangle"]
CAPTION_TEMPLATES = ["a {color} {shape} on the left and a {color2} {shape2} on the right.",
                     "on the right a {color2} {shape2}, on the left a {color} {shape}",
                     "a {color2} {shape2} to the right of a {color} {shape}", "left: {color} {shape}",
                     "the shape on the left is a {color} {shape}", "the shape on the right is a {color2} {shape2}",
                     "{color} {shape} and {color2} {shape2}", "{color2} {shape2} and {color} {shape}"]
SPLIT_FILE = "split_zhou_ShapesWorld.json"


def _object(rng: random.Random, color: str, shape: str, size: str, position: str) -> SceneObject:
    x, y = QUADRANT_CENTERS[position]
    return SceneObject(shape=shape, color=color, size=size, position=position,
                       cx=round(x + rng.uniform(-0.04, 0.04), 4), cy=round(y + rng.uniform(-0.04, 0.04), 4))


def scene(rng: random.Random, color: str, shape: str) -> tuple:
    """The class shape in a left quadrant and a distractor of another colour and shape in a right quadrant."""
    color2 = rng.choice([c for c in COLORS if c != color])
    shape2 = rng.choice([s for s in SHAPES if s != shape])
    return (_object(rng, color, shape, rng.choice(SIZES), rng.choice(["top left", "bottom left"])),
            _object(rng, color2, shape2, rng.choice(SIZES), rng.choice(["top right", "bottom right"])))


def caption(rng: random.Random, left: SceneObject, right: SceneObject) -> str:
    return rng.choice(CAPTION_TEMPLATES).format(color=left.color, shape=left.shape, color2=right.color,
                                                shape2=right.shape)


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
                objects = scene(rng, color, shape)
                rel = f"{name.replace(' ', '_')}/{part}_{i:04d}.png"
                render_scene(objects, image_size).save(os.path.join(out, "images", rel))
                if part == "pretrain":
                    captions.append([rel, caption(rng, *objects)])
                else:
                    split[part].append([rel, label, name])
    with open(os.path.join(out, SPLIT_FILE), "w") as f:
        json.dump(split, f)
    with open(os.path.join(out, "captions.json"), "w") as f:
        json.dump(captions, f)
    open(done, "w").close()
    return out
