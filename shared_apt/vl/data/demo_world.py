"""A small, deterministic synthetic "shapes world" written in the exact upstream arrow formats.

Every image is a plain canvas with one to four coloured shapes (circle / square / triangle; red / green / blue /
yellow; small / large), one per quadrant (top left, top right, bottom left, bottom right), slightly jittered.
From the scenes the generator derives everything the ViLT/METER datasets read, with upstream's file names and
schemas, so the normal datamodules run on it unchanged:

* ``coco_caption_karpathy_{train,val,restval,test}.arrow`` and ``f30k_caption_karpathy_{train,val,test}.arrow``
  (caption schema; 5 captions per image describing the scene) for MLM/ITM pre-training and retrieval;
* ``vqav2_{train,val,trainable_val,rest_val,test,test-dev}.arrow`` and ``vqa_dict.json``: questions such as
  "what color is the circle?", "how many shapes are there?", "is there a red square?" with 10 annotator answers
  (mostly the true answer, plus some wrong or out-of-vocabulary answers, so soft scores vary). They are built as
  official VQAv2 question/annotation records and go through the VQA writer's own code path (vocabulary from
  normalised multiple-choice answers with >= ``min_answer_count`` occurrences, raw-count soft scores, dropping of
  unanswerable questions, trainable_val / rest_val cut);
* ``nlvr2_{train,dev,test1}.arrow``: image pairs with "True"/"False" statements (about half true) such as
  "both images contain a red shape.".

Every answer and label is a function of the rendered scene, so a model can learn them from the pixels. The scenes
themselves are written to ``demo_world_scenes.json`` (table family -> image id or pair id -> list of objects) for
inspection and tests. Output depends only on the seed and the sizes: ``python -m shared_apt.vl.data.demo_world --out
DIR --seed 0`` writes the same bytes every time.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import random
from collections import Counter, OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from shared_apt.vl.data.writers.common import seeded_shuffle, write_caption_tables
from shared_apt.vl.data.writers.nlvr2 import write_nlvr2_split
from shared_apt.vl.data.writers.vqa import (
    answer_vocabulary,
    attach_answers,
    drop_unanswerable,
    index_questions,
    write_vqa_dict,
    write_vqa_split,
)

COLORS = OrderedDict(
    [("red", (215, 40, 40)), ("green", (40, 160, 60)), ("blue", (40, 80, 215)), ("yellow", (235, 200, 30))]
)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
QUADRANT_CENTERS = {
    "top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75)
}
RADIUS = {"small": 0.09, "large": 0.18}  # half extent, as a fraction of the canvas side
JITTER = 0.04  # max offset of a shape centre from its quadrant centre, fraction of the canvas side
BACKGROUND = (235, 235, 235)
NUMBER_WORDS = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four"}
TASKS = ("coco", "f30k", "vqa", "nlvr2")
SCENES_FILE = "demo_world_scenes.json"

#: how many of the 10 annotators give the true answer (the rest give wrong or out-of-vocabulary answers)
AGREEMENT = (10, 10, 10, 10, 9, 9, 9, 8, 8, 7, 7, 6, 5, 4, 3)
#: answers of confused annotators; never a multiple-choice answer, so never in the vocabulary
JUNK_ANSWERS = ("not sure", "i don't know", "maybe", "nothing", "unknown", "cannot tell")


# ---------------------------------------------------------------------------------------------------------------
# Scenes and rendering
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One shape: kind, colour, size, quadrant, and its centre (fractions of the canvas side)."""

    shape: str
    color: str
    size: str
    position: str
    cx: float
    cy: float

    def phrase(self) -> str:
        return f"{self.size} {self.color} {self.shape}"


Scene = Tuple[SceneObject, ...]


def random_scene(rng: random.Random, max_objects: int = 4) -> Scene:
    """1..`max_objects` shapes in distinct quadrants, ordered top left, top right, bottom left, bottom right."""
    n = rng.randint(1, max_objects)
    positions = sorted(rng.sample(POSITIONS, n), key=POSITIONS.index)
    objects = []
    for position in positions:
        x, y = QUADRANT_CENTERS[position]
        objects.append(
            SceneObject(
                shape=rng.choice(SHAPES),
                color=rng.choice(list(COLORS)),
                size=rng.choice(SIZES),
                position=position,
                cx=round(x + rng.uniform(-JITTER, JITTER), 4),
                cy=round(y + rng.uniform(-JITTER, JITTER), 4),
            )
        )
    return tuple(objects)


def scene_to_json(scene: Scene) -> List[dict]:
    return [dataclasses.asdict(o) for o in scene]


def scene_from_json(objects: Sequence[dict]) -> Scene:
    return tuple(SceneObject(**o) for o in objects)


def render_scene(scene: Scene, image_size: int = 128) -> Image.Image:
    """Draw the scene on an RGB canvas of side `image_size`."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for o in scene:
        cx, cy, r = o.cx * image_size, o.cy * image_size, RADIUS[o.size] * image_size
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "square":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def encode_scene(scene: Scene, image_size: int = 128, fmt: str = "JPEG") -> bytes:
    """Rendered scene as JPEG (COCO/F30K/VQA tables, like upstream's JPEG images) or PNG (NLVR2) bytes."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        render_scene(scene, image_size).save(buffer, format="JPEG", quality=92)
    else:
        render_scene(scene, image_size).save(buffer, format="PNG")
    return buffer.getvalue()


def count(scene: Scene, **attributes: str) -> int:
    """Number of objects whose attributes (shape=, color=, size=, position=) all match."""
    return sum(all(getattr(o, k) == v for k, v in attributes.items()) for o in scene)


def find_unique(scene: Scene, **attributes: str) -> Optional[SceneObject]:
    """The only object matching `attributes`, or None when there are zero or several."""
    matches = [o for o in scene if all(getattr(o, k) == v for k, v in attributes.items())]
    return matches[0] if len(matches) == 1 else None


# ---------------------------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------------------------


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _plural(word: str, n: int) -> str:
    return word if n == 1 else word + "s"


def captions_for(scene: Scene, rng: random.Random, n: int = 5) -> List[str]:
    """`n` captions describing the scene in several styles, the full located description first; distinct where
    the scene allows it."""
    def located() -> str:
        objects = rng.sample(scene, len(scene))
        return _join([f"a {o.phrase()} at the {o.position}" for o in objects]) + "."

    def counted() -> str:
        kinds = Counter(o.shape for o in scene)
        parts = [f"{NUMBER_WORDS[c]} {_plural(s, c)}" for s, c in sorted(kinds.items())]
        return f"an image of {_join(parts)}."

    def colored() -> str:
        kinds = Counter((o.color, o.shape) for o in scene)
        groups = rng.sample(sorted(kinds.items()), len(kinds))
        parts = [f"{NUMBER_WORDS[c]} {color} {_plural(shape, c)}" for (color, shape), c in groups]
        return f"{NUMBER_WORDS[len(scene)]} {_plural('shape', len(scene))}: {_join(parts)}."

    def single() -> str:
        o = rng.choice(scene)
        return f"there is a {o.phrase()} at the {o.position} of the picture."

    styles = [counted, colored, single, located]
    captions = [located()]
    for _ in range(n - 1):
        for _ in range(10):
            caption = rng.choice(styles)()
            if caption not in captions:
                break
        captions.append(caption)
    return captions


# ---------------------------------------------------------------------------------------------------------------
# VQA questions and annotator answers
# ---------------------------------------------------------------------------------------------------------------


def _others(values: Sequence[str], answer: str) -> List[str]:
    return [v for v in values if v != answer]


def ask(scene: Scene, rng: random.Random) -> Optional[Tuple[str, str, List[str]]]:
    """One random question about the scene: (question, true answer, plausible wrong answers), or None if the drawn
    template does not apply (e.g. "what color is the circle?" without exactly one circle)."""
    kind = rng.randrange(8)
    o = rng.choice(scene)
    if kind == 0:
        answer = str(len(scene))
        return "how many shapes are there?", answer, _others(["1", "2", "3", "4"], answer)
    if kind == 1:
        color = rng.choice(list(COLORS))
        answer = str(count(scene, color=color))
        return f"how many {color} shapes are there?", answer, _others(["0", "1", "2", "3", "4"], answer)
    if kind == 2:
        if find_unique(scene, shape=o.shape) is None:
            return None
        return f"what color is the {o.shape}?", o.color, _others(list(COLORS), o.color)
    if kind == 3:
        if find_unique(scene, color=o.color) is None:
            return None
        return f"what shape is the {o.color} object?", o.shape, _others(SHAPES, o.shape)
    if kind == 4:
        color, shape = (o.color, o.shape) if rng.random() < 0.5 else (rng.choice(list(COLORS)), rng.choice(SHAPES))
        answer = "yes" if count(scene, color=color, shape=shape) else "no"
        return f"is there a {color} {shape}?", answer, _others(["yes", "no"], answer)
    if kind == 5:
        if find_unique(scene, color=o.color, shape=o.shape) is None:
            return None
        return f"what size is the {o.color} {o.shape}?", o.size, _others(SIZES, o.size)
    if kind == 6:
        if find_unique(scene, color=o.color, shape=o.shape) is None:
            return None
        return f"where is the {o.color} {o.shape}?", o.position, _others(POSITIONS, o.position)
    return f"what color is the shape at the {o.position}?", o.color, _others(list(COLORS), o.color)


def questions_for(scene: Scene, rng: random.Random, n: int) -> List[Tuple[str, str, List[str]]]:
    """Up to `n` distinct questions about the scene."""
    chosen: "OrderedDict[str, Tuple[str, str, List[str]]]" = OrderedDict()
    for _ in range(20 * n):
        if len(chosen) == n:
            break
        qa = ask(scene, rng)
        if qa is not None and qa[0] not in chosen:
            chosen[qa[0]] = qa
    return list(chosen.values())


def annotator_answers(answer: str, wrong: Sequence[str], rng: random.Random) -> List[str]:
    """10 annotator answers: `answer` from 3..10 annotators (so its soft score is 0.9 or 1.0), the others spread
    over wrong answers and out-of-vocabulary junk, each given at most twice (soft score <= 0.6)."""
    agree = rng.choice(AGREEMENT)
    pool = list(wrong) + list(JUNK_ANSWERS)
    noise: List[str] = []
    for _ in range(10 - agree):
        noise.append(rng.choice([a for a in pool if noise.count(a) < 2]))
    answers = [answer] * agree + noise
    rng.shuffle(answers)
    return answers


# ---------------------------------------------------------------------------------------------------------------
# NLVR2 statements
# ---------------------------------------------------------------------------------------------------------------


def nlvr2_statement(left: Scene, right: Scene, rng: random.Random) -> Tuple[str, bool]:
    """A random statement about an image pair and whether it holds."""
    kind = rng.randrange(5)
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    side, scene = rng.choice([("left", left), ("right", right)])
    if kind == 0:
        n = rng.randint(1, 4)
        return f"the {side} image contains exactly {NUMBER_WORDS[n]} {_plural('shape', n)}.", len(scene) == n
    if kind == 1:
        return (f"there are more {shape}s in the left image than in the right image.",
                count(left, shape=shape) > count(right, shape=shape))
    if kind == 2:
        return f"both images contain a {color} shape.", count(left, color=color) > 0 and count(right, color=color) > 0
    if kind == 3:
        return f"the {side} image has a {color} {shape}.", count(scene, color=color, shape=shape) > 0
    return (f"there is a {color} {shape} in exactly one image.",
            (count(left, color=color, shape=shape) > 0) != (count(right, color=color, shape=shape) > 0))


def nlvr2_statements(left: Scene, right: Scene, rng: random.Random, n: int) -> List[Tuple[str, bool]]:
    """`n` distinct statements, each aiming at a coin-flipped truth value (so about half are true)."""
    statements: "OrderedDict[str, bool]" = OrderedDict()
    for _ in range(n):
        want = rng.random() < 0.5
        for _ in range(50):
            text, truth = nlvr2_statement(left, right, rng)
            if truth == want and text not in statements:
                break
        statements.setdefault(text, truth)
    return list(statements.items())


# ---------------------------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoWorldConfig:
    """Sizes of the demo world (images per split, questions per image, ...)."""

    image_size: int = 128
    coco_train: int = 300
    coco_val: int = 40
    coco_restval: int = 40
    coco_test: int = 40
    f30k_train: int = 200
    f30k_val: int = 40
    f30k_test: int = 40
    captions_per_image: int = 5
    vqa_train: int = 400
    vqa_val: int = 160
    vqa_rest_val: int = 80
    vqa_test: int = 80
    vqa_test_dev: int = 40
    questions_per_image: int = 3
    min_answer_count: int = 9
    nlvr2_train: int = 300
    nlvr2_dev: int = 60
    nlvr2_test1: int = 60
    sentences_per_pair: int = 2

    _SCALED = ("coco_train", "coco_val", "coco_restval", "coco_test", "f30k_train", "f30k_val", "f30k_test",
               "vqa_train", "vqa_val", "vqa_rest_val", "vqa_test", "vqa_test_dev", "nlvr2_train", "nlvr2_dev",
               "nlvr2_test1")

    def scaled(self, factor: float) -> "DemoWorldConfig":
        """Every image/pair count multiplied by `factor` (at least 1 each)."""
        return dataclasses.replace(
            self, **{k: max(1, int(round(getattr(self, k) * factor))) for k in self._SCALED}
        )


# ---------------------------------------------------------------------------------------------------------------
# Writing the tables
# ---------------------------------------------------------------------------------------------------------------


def _rng(seed: int, *names: str) -> random.Random:
    """An independent, reproducible stream per table (string seeds hash with SHA-512, not PYTHONHASHSEED)."""
    return random.Random(":".join([str(seed), *names]))


def write_caption_world(out: str, task: str, seed: int, config: DemoWorldConfig, show_progress: bool = False):
    """``coco_caption_karpathy_*`` or ``f30k_caption_karpathy_*``; returns (rows per file, scenes by image_id)."""
    if task == "coco":
        prefix, splits = "coco_caption_karpathy", ("train", "val", "restval", "test")
        name = lambda split, i: f"COCO_{'train' if split in ('train', 'restval') else 'val'}2014_{i:012d}.jpg"
    else:
        prefix, splits = "f30k_caption_karpathy", ("train", "val", "test")
        name = lambda split, i: f"{1000000000 + i}.jpg"
    entries = []  # (image_id, scene, captions, split)
    next_id = 1
    for split in splits:
        rng = _rng(seed, prefix, split)
        for _ in range(getattr(config, f"{task}_{split}")):
            scene = random_scene(rng)
            entries.append((name(split, next_id), scene, captions_for(scene, rng, config.captions_per_image), split))
            next_id += 1
    order = {image_id: k for k, image_id in enumerate(seeded_shuffle((e[0] for e in entries), seed))}
    entries.sort(key=lambda e: order[e[0]])
    rows = (
        (iid, partial(encode_scene, scene, config.image_size, "JPEG"), caps, split)
        for iid, scene, caps, split in entries
    )
    counts = write_caption_tables(out, prefix, splits, rows, len(entries), show_progress=show_progress)
    files = {f"{prefix}_{s}.arrow": n for s, n in counts.items()}
    return files, {iid: scene for iid, scene, _, _ in entries}


VQA_IMAGE_ID_BASE = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def vqa_raw_split(split: str, n_images: int, seed: int, config: DemoWorldConfig):
    """Scenes and official-format VQAv2 records of one image split.

    Returns (scenes by image id, questions file dict, annotation list or None for test). Question ids follow VQAv2's
    ``image_id * 1000 + j``.
    """
    rng = _rng(seed, "vqav2", split)
    scenes: "OrderedDict[int, Scene]" = OrderedDict()
    questions, annotations = [], []
    for i in range(n_images):
        image_id = VQA_IMAGE_ID_BASE[split] + i + 1
        scene = scenes[image_id] = random_scene(rng)
        for j, (question, answer, wrong) in enumerate(questions_for(scene, rng, config.questions_per_image)):
            qid = image_id * 1000 + j
            questions.append({"image_id": image_id, "question": question, "question_id": qid})
            raw = annotator_answers(answer, wrong, rng)
            annotations.append({
                "question_id": qid, "image_id": image_id, "multiple_choice_answer": answer,
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(raw)],
            })
    return scenes, {"questions": questions}, (None if split == "test" else annotations)


def write_vqa_world(out: str, seed: int, config: DemoWorldConfig, show_progress: bool = False):
    """All ``vqav2_*`` tables and ``vqa_dict.json`` through the VQA writer's functions."""
    raw = {
        split: vqa_raw_split(split, getattr(config, f"vqa_{split}"), seed, config) for split in ("train", "val", "test")
    }
    ans2label, label2ans = answer_vocabulary(
        [("demo train annotations", raw["train"][2]), ("demo val annotations", raw["val"][2])], config.min_answer_count
    )
    write_vqa_dict(out, label2ans)
    test_dev_ids = set(list(raw["test"][0])[: config.vqa_test_dev])
    test_dev_questions = [q for q in raw["test"][1]["questions"] if q["image_id"] in test_dev_ids]
    raw["test-dev"] = (raw["test"][0], {"questions": test_dev_questions}, None)

    files: Dict[str, int] = {}
    all_scenes: Dict[int, Scene] = {}
    for split in ("train", "val", "test", "test-dev"):
        scenes, questions, annotations = raw[split]
        all_scenes.update(scenes)
        index = index_questions(questions, f"demo {split} questions")
        if annotations is not None:
            attach_answers(index, annotations, ans2label, f"demo {split} annotations")
            index = drop_unanswerable(index)
        images = [(i, partial(encode_scene, scenes[i], config.image_size, "JPEG")) for i in seeded_shuffle(index, seed)]
        counts = write_vqa_split(out, split, images, index, label2ans, config.vqa_rest_val, show_progress=show_progress)
        files.update({f"vqav2_{name}.arrow": n for name, n in counts.items()})
    return files, all_scenes


def write_nlvr2_world(out: str, seed: int, config: DemoWorldConfig, show_progress: bool = False):
    """``nlvr2_{train,dev,test1}.arrow`` through the NLVR2 writer's row function; pair ids ``<split>-<i>-0``."""
    files: Dict[str, int] = {}
    all_scenes: Dict[str, Tuple[Scene, Scene]] = {}
    for split in ("train", "dev", "test1"):
        rng = _rng(seed, "nlvr2", split)
        pairs = []
        for i in range(getattr(config, f"nlvr2_{split}")):
            left, right = random_scene(rng), random_scene(rng)
            statements = nlvr2_statements(left, right, rng, config.sentences_per_pair)
            pair = f"{split}-{i}-0"
            all_scenes[pair] = (left, right)
            pairs.append((
                pair,
                partial(encode_scene, left, config.image_size, "PNG"),
                partial(encode_scene, right, config.image_size, "PNG"),
                [text for text, _ in statements],
                ["True" if truth else "False" for _, truth in statements],
            ))
        files[f"nlvr2_{split}.arrow"] = write_nlvr2_split(out, split, pairs, show_progress=show_progress)
    return files, all_scenes


def make_demo_world(
    out: str,
    seed: int = 0,
    config: Optional[DemoWorldConfig] = None,
    tasks: Sequence[str] = TASKS,
    show_progress: bool = False,
) -> Dict[str, int]:
    """Write the demo world's arrow files (and ``demo_world_scenes.json``) into `out`; return rows per file."""
    config = config or DemoWorldConfig()
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown demo world task(s) {unknown}; choose from {list(TASKS)}")
    os.makedirs(out, exist_ok=True)
    files: Dict[str, int] = {}
    scenes: Dict[str, dict] = {}
    for task in dict.fromkeys(tasks):
        if task in ("coco", "f30k"):
            written, task_scenes = write_caption_world(out, task, seed, config, show_progress)
            scenes[f"{task}_caption_karpathy"] = {k: scene_to_json(s) for k, s in task_scenes.items()}
        elif task == "vqa":
            written, task_scenes = write_vqa_world(out, seed, config, show_progress)
            scenes["vqav2"] = {str(k): scene_to_json(s) for k, s in task_scenes.items()}
        else:
            written, task_scenes = write_nlvr2_world(out, seed, config, show_progress)
            scenes["nlvr2"] = {k: [scene_to_json(s) for s in pair] for k, pair in task_scenes.items()}
        files.update(written)
    with open(os.path.join(out, SCENES_FILE), "w", encoding="utf-8") as fp:
        json.dump(scenes, fp, sort_keys=True)
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m shared_apt.vl.data.demo_world --out DIR [--seed 0] [--scale 1.0] [--tasks coco vqa ...]``."""
    parser = argparse.ArgumentParser(description="Write the synthetic shapes world in upstream arrow formats.")
    parser.add_argument("--out", required=True, help="output folder (the datamodules' data_root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every image/pair count")
    parser.add_argument("--image-size", type=int, default=DemoWorldConfig.image_size, help="canvas side in pixels")
    parser.add_argument("--questions-per-image", type=int, default=DemoWorldConfig.questions_per_image)
    parser.add_argument("--min-answer-count", type=int, default=DemoWorldConfig.min_answer_count,
                        help="VQA vocabulary threshold (as write_vqa.py; default 9)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    config = dataclasses.replace(
        DemoWorldConfig().scaled(args.scale), image_size=args.image_size,
        questions_per_image=args.questions_per_image, min_answer_count=args.min_answer_count,
    )
    files = make_demo_world(args.out, args.seed, config, args.tasks, args.progress)
    for name, rows in files.items():
        print(f"{os.path.join(args.out, name)}: {rows} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
