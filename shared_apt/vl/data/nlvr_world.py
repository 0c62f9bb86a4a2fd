"""A generated NLVR-like world for pre-training: three boxes side by side, true/false statements about them.

NLVR v1 (Suhr et al., ACL 2017, lil-lab/nlvr) shows 400x100 images: three 100x100 boxes (light grey, RGB 211) at
x = 0, 150 and 300 on a grey (RGB 128) background, each holding coloured objects (square / circle / triangle; yellow
#ffff00, black #000000, blue #0099ff; sizes 10, 20, 30 pixels). About 70% of its scenes are "towers": every object
a size-20 square at x = 40, stacked from y = 80 upwards (80, 59, 38, 17), one to four per box. The others scatter one
to seven objects per box, some touching the box's edges. The corpus describes each scene by ``structured_rep``: three
lists of objects with ``x_loc``/``y_loc`` (top left corner inside the box), ``size``, ``type`` and ``color``.

This module draws scenes of both kinds, renders them in NLVR's layout and colours (:func:`render`; a
``structured_rep`` converts with :func:`scene_from_structured_rep`), and writes statements in NLVR's vocabulary
("there is a tower with exactly two blocks", "there is a black block at the top of a tower", "there are at least two
blue items touching the wall", "each box has a yellow item", "there is a box with only circles", ...), each a
predicate evaluated on the scene (:class:`Statement`), drawn so that about half are true (:func:`statements_for`).
Every statement is invariant under permutations of the three boxes, as NLVR's labels are (its six images per
statement are the six orders of the boxes; :func:`permute_boxes` builds them from one image).

Pre-training tables (:func:`make_world`), caption schema plus a ``false_image`` column, read by
:class:`WorldCaptionDataset` for MLM + ITM:

* ``nlvr_world_{train,val}.arrow``: one row per (scene, true statement): ``image`` the scene (a random box order),
  ``caption`` [the statement], ``false_image`` a scene of the same kind where the statement is FALSE (a one-object
  edit of the scene when one makes it false, else another random scene). ITM's negative pair is the statement with
  ``false_image``, so ITM learns "does this statement hold for this image" with text that is identical in the positive
  and the negative (random negative images, upstream's ITM, would often make the statement true as well: see
  :func:`random_negative_truth_rate`).

Output depends only on the seed and the sizes.
"""
from __future__ import annotations

import io
import itertools
import json
import os
import random
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------------------------------------
# Layout (NLVR v1's images)

WIDTH, HEIGHT = 400, 100
BOX = 100                       # box side
BOX_X = (0, 150, 300)           # left edge of each box
BACKGROUND = (128, 128, 128)
BOX_FILL = (211, 211, 211)
COLORS = {"yellow": (255, 255, 0), "black": (0, 0, 0), "blue": (0, 153, 255)}
#: NLVR structured_rep colour names -> ours
NLVR_COLORS = {"Yellow": "yellow", "Black": "black", "#0099ff": "blue"}
SHAPES = ("square", "circle", "triangle")
SIZES = (10, 20, 30)
SIZE_WORDS = {10: "small", 20: "medium", 30: "large"}
TOWER_X, TOWER_SIZE = 40, 20
TOWER_Y = (80, 59, 38, 17)      # bottom block first
MAX_TOWER, MAX_SCATTER = 4, 7


@dataclass(frozen=True)
class Obj:
    """One object of a box: top-left corner (x, y) inside the 100x100 box, side `size`."""

    shape: str
    color: str
    size: int
    x: int
    y: int

    def touches(self) -> Tuple[bool, bool, bool, bool]:
        """(left, top, right, bottom) box wall touched."""
        return self.x <= 0, self.y <= 0, self.x + self.size >= BOX, self.y + self.size >= BOX


Box = Tuple[Obj, ...]
Scene = Tuple[Box, Box, Box]


def scene_from_structured_rep(rep: Sequence[Sequence[dict]]) -> Scene:
    """NLVR's ``structured_rep`` (three lists of {x_loc, y_loc, size, type, color}) as a Scene."""
    if len(rep) != 3:
        raise ValueError(f"structured_rep has {len(rep)} boxes; NLVR scenes have 3")
    return tuple(tuple(Obj(o["type"], NLVR_COLORS.get(o["color"], o["color"]), int(o["size"]), int(o["x_loc"]),
                           int(o["y_loc"])) for o in box) for box in rep)


def is_tower_scene(scene: Scene) -> bool:
    return all(o.shape == "square" and o.x == TOWER_X and o.size == TOWER_SIZE for box in scene for o in box)


def tower(box: Box) -> List[str]:
    """Colours of a tower box, bottom block first."""
    return [o.color for o in sorted(box, key=lambda o: -o.y)]


# ---------------------------------------------------------------------------------------------------------------
# Scenes


def random_tower_box(rng: random.Random) -> Box:
    n = rng.randint(1, MAX_TOWER)
    return tuple(Obj("square", rng.choice(list(COLORS)), TOWER_SIZE, TOWER_X, TOWER_Y[i]) for i in range(n))


def _overlaps(a: Obj, b: Obj, margin: int = 2) -> bool:
    return not (a.x + a.size + margin <= b.x or b.x + b.size + margin <= a.x or
                a.y + a.size + margin <= b.y or b.y + b.size + margin <= a.y)


def random_scatter_box(rng: random.Random) -> Box:
    """1..7 non-overlapping objects; each coordinate snaps to a wall with probability 0.2 (NLVR: ~38% of the
    objects touch a wall)."""
    n = rng.randint(1, MAX_SCATTER)
    objects: List[Obj] = []
    for _ in range(200):
        if len(objects) == n:
            break
        size = rng.choice(SIZES)

        def coord():
            r = rng.random()
            return 0 if r < 0.1 else BOX - size if r < 0.2 else rng.randint(1, BOX - size - 1)

        o = Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), size, coord(), coord())
        if not any(_overlaps(o, p) for p in objects):
            objects.append(o)
    return tuple(objects)


def random_scene(rng: random.Random, tower_fraction: float = 0.7) -> Scene:
    make = random_tower_box if rng.random() < tower_fraction else random_scatter_box
    return tuple(make(rng) for _ in range(3))


def same_kind_scene(scene: Scene, rng: random.Random) -> Scene:
    make = random_tower_box if is_tower_scene(scene) else random_scatter_box
    return tuple(make(rng) for _ in range(3))


def edit_scene(scene: Scene, rng: random.Random) -> Scene:
    """One small change: recolour an object, reshape one (scatter), drop one, or add/remove a tower's top block."""
    b = rng.randrange(3)
    box = list(scene[b])
    towers = is_tower_scene(scene)
    kind = rng.randrange(3)
    if kind == 0 and box:
        i = rng.randrange(len(box))
        o = box[i]
        box[i] = Obj(o.shape, rng.choice([c for c in COLORS if c != o.color]), o.size, o.x, o.y)
    elif kind == 1 and not towers and box:
        i = rng.randrange(len(box))
        o = box[i]
        box[i] = Obj(rng.choice([s for s in SHAPES if s != o.shape]), o.color, o.size, o.x, o.y)
    elif towers and (kind == 2 or kind == 1):
        cols = tower(tuple(box))
        if len(cols) < MAX_TOWER and (len(cols) <= 1 or rng.random() < 0.5):
            cols.append(rng.choice(list(COLORS)))
        else:
            cols.pop()
        box = [Obj("square", c, TOWER_SIZE, TOWER_X, TOWER_Y[i]) for i, c in enumerate(cols)]
    elif len(box) > 1:
        box.pop(rng.randrange(len(box)))
    out = list(scene)
    out[b] = tuple(box)
    return tuple(out)


def permute_scene(scene: Scene, order: Sequence[int]) -> Scene:
    """Box i of the result is box order[i] of `scene`."""
    return tuple(scene[j] for j in order)


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def render(scene: Scene) -> Image.Image:
    """The scene as NLVR draws it: 400x100 RGB."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for x0, box in zip(BOX_X, scene):
        draw.rectangle([x0, 0, x0 + BOX - 1, BOX - 1], fill=BOX_FILL)
        for o in box:
            left, top = x0 + o.x, o.y
            right, bottom = left + o.size - 1, top + o.size - 1
            fill = COLORS[o.color]
            if o.shape == "square":
                draw.rectangle([left, top, right, bottom], fill=fill)
            elif o.shape == "circle":
                draw.ellipse([left, top, right, bottom], fill=fill)
            else:
                draw.polygon([((left + right) / 2, top), (left, bottom), (right, bottom)], fill=fill)
    return image


def permute_boxes(image: Image.Image, order: Sequence[int]) -> Image.Image:
    """The NLVR image with its boxes reordered: box i of the result is box order[i] of `image` (the gaps and the
    background stay). Raises ValueError for an image that is not 400x100 or an order that is not a permutation."""
    if image.size != (WIDTH, HEIGHT):
        raise ValueError(f"permute_boxes: image is {image.size[0]}x{image.size[1]}; NLVR images are {WIDTH}x{HEIGHT}")
    if sorted(order) != [0, 1, 2]:
        raise ValueError(f"permute_boxes: order {list(order)} is not a permutation of (0, 1, 2)")
    crops = [image.crop((x, 0, x + BOX, BOX)) for x in BOX_X]
    out = image.copy()
    for x, j in zip(BOX_X, order):
        out.paste(crops[j], (x, 0))
    return out


PERMUTATIONS = tuple(itertools.permutations(range(3)))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Statements

QUANTIFIERS = ("exactly", "at least", "at most")
NUMBER_WORDS = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}


def holds(quantifier: str, value: int, n: int) -> bool:
    if quantifier == "exactly":
        return value == n
    if quantifier == "at least":
        return value >= n
    if quantifier == "at most":
        return value <= n
    raise ValueError(f"quantifier {quantifier!r}; expected one of {QUANTIFIERS}")


@dataclass(frozen=True)
class Statement:
    """A sentence and the predicate that decides it on a scene."""

    text: str
    truth: Callable[[Scene], bool]

    def __call__(self, scene: Scene) -> bool:
        return bool(self.truth(scene))


def _num(rng: random.Random, n: int) -> str:
    return str(n) if rng.random() < 0.3 else NUMBER_WORDS[n]


def _plural(word: str, n: int) -> str:
    return word if n == 1 else word + "s"


def _be(n: int) -> str:
    return "is" if n == 1 else "are"


def _count_phrase(rng: random.Random, quantifier: str, n: int, noun: str) -> str:
    return f"{quantifier} {_num(rng, n)} {_plural(noun, n)}"


# --- towers ---------------------------------------------------------------------------------------------------

def tower_statement(rng: random.Random) -> Statement:
    """One random statement of NLVR's tower vocabulary."""
    c, c2 = rng.choice(list(COLORS)), rng.choice(list(COLORS))
    q, n = rng.choice(QUANTIFIERS), rng.randint(1, 4)
    end = rng.choice(["top", "base", "bottom"])
    at_end = (lambda cols: cols[-1]) if end == "top" else (lambda cols: cols[0])
    kind = rng.randrange(12)
    if kind == 0:
        return Statement(f"there is a tower with {_count_phrase(rng, q, n, 'block')}",
                         lambda s: any(holds(q, len(b), n) for b in s if b))
    if kind == 1:
        text = rng.choice([f"there is a tower with a {c} block at the {end}",
                           f"there is a {c} block at the {end} of a tower",
                           f"there is a {c} block as the {end} of a tower"])
        return Statement(text, lambda s: any(b and at_end(tower(b)) == c for b in s))
    if kind == 2:
        k = rng.randint(1, 3)
        return Statement(f"there {_be(k) if q == 'exactly' else 'are'} {q} {_num(rng, k)} "
                         f"{_plural('tower', k if q == 'exactly' else 2)} with a {c} block at the {end}",
                         lambda s: holds(q, sum(bool(b) and at_end(tower(b)) == c for b in s), k))
    if kind == 3:
        return Statement(f"there is a tower with {_count_phrase(rng, q, n, c + ' block')}",
                         lambda s: any(b and holds(q, tower(b).count(c), n) for b in s))
    if kind == 4:
        text = rng.choice([f"there is a {c} tower", f"there is a tower with only {c} blocks",
                           f"there is one tower which has blocks of {c} color only"])
        return Statement(text, lambda s: any(b and set(tower(b)) == {c} for b in s))
    if kind == 5:
        return Statement(rng.choice(["there is a tower which has blocks of all three colors",
                                     "there is at least one tower with blocks of all three colors"]),
                         lambda s: any(len(set(tower(b))) == 3 for b in s))
    if kind == 6:
        rel = rng.choice(["on top of", "directly above", "above", "over", "below", "under"])
        direct = rel in ("on top of", "directly above")
        up = rel in ("on top of", "directly above", "above", "over")

        def rel_holds(s, c=c, c2=c2):
            for b in s:
                cols = tower(b)
                for i, j in itertools.permutations(range(len(cols)), 2):
                    # "c rel c2": c is block i (from the bottom), c2 block j; up: c higher than c2 (i > j)
                    if (i > j if up else i < j) and (not direct or abs(i - j) == 1) and cols[i] == c and cols[j] == c2:
                        return True
            return False

        return Statement(f"there is a {c} block {rel} a {c2} block", rel_holds)
    if kind == 7:
        k = rng.randint(1, 3)
        towers = f"{_num(rng, k)} {_plural('tower', k if q == 'exactly' else 2)}"
        blocks = _count_phrase(rng, "at least", 1, c + " block")
        return Statement(f"there {_be(k) if q == 'exactly' else 'are'} {q} {towers} with {blocks}",
                         lambda s: holds(q, sum(c in tower(b) for b in s), k))
    if kind == 8:
        return Statement(f"there are {q} {_num(rng, n + 1)} {c} blocks",
                         lambda s: holds(q, sum(tower(b).count(c) for b in s), n + 1))
    if kind == 9:
        text = rng.choice(["all the towers have the same height", "the three towers have the same number of blocks",
                           "the tops of the three towers are the same color",
                           "the bases of the three towers are the same color",
                           "the tops of the three towers are not the same"])
        if "height" in text or "number" in text:
            return Statement(text, lambda s: len({len(b) for b in s}) == 1)
        idx = -1 if "tops" in text else 0
        same = lambda s: all(b for b in s) and len({tower(b)[idx] for b in s}) == 1
        return Statement(text, (lambda s: not same(s)) if "not" in text else same)
    if kind == 10:
        return Statement(rng.choice([f"each tower has a {c} block", f"every tower has at least one {c} block",
                                     f"all towers have a {c} block"]),
                         lambda s: all(c in tower(b) for b in s))
    return Statement(f"there is a tower with exactly {_num(rng, n)} {_plural('block', n)} having a {c} block at the "
                     f"{end}", lambda s: any(b and len(b) == n and at_end(tower(b)) == c for b in s))


# --- scattered objects ---------------------------------------------------------------------------------------

def _matches(o: Obj, color: Optional[str], shape: Optional[str], size: Optional[int] = None) -> bool:
    return (color is None or o.color == color) and (shape is None or o.shape == shape) and \
        (size is None or o.size == size)


def _touch(o: Obj, where: str) -> bool:
    left, top, right, bottom = o.touches()
    if where in ("edge", "wall"):
        return left or top or right or bottom
    if where == "base":
        return bottom
    if where == "top":
        return top
    if where == "side":
        return left or right
    if where == "corner":
        return (left or right) and (top or bottom)
    raise ValueError(f"touch place {where!r}")


def scatter_statement(rng: random.Random) -> Statement:
    """One random statement of NLVR's vocabulary for boxes of scattered objects."""
    c = rng.choice(list(COLORS) + [None])
    shape = rng.choice(list(SHAPES) + [None])
    noun_word = shape or rng.choice(["item", "object", "shape"])
    desc = " ".join(w for w in (c, noun_word) if w)
    q, n = rng.choice(QUANTIFIERS), rng.randint(1, 4)
    kind = rng.randrange(10)
    if kind == 0:
        m = rng.randint(1, 7)
        return Statement(f"there is a box with {_count_phrase(rng, q, m, rng.choice(['item', 'object', 'shape']))}",
                         lambda s: any(holds(q, len(b), m) for b in s))
    if kind == 1:
        return Statement(f"there is a box with {_count_phrase(rng, q, n, desc)}",
                         lambda s: any(holds(q, sum(_matches(o, c, shape) for o in b), n) for b in s))
    if kind == 2:
        where = rng.choice(["edge", "wall", "base", "top", "side", "corner"])
        phrase = {"edge": "touching the edge", "wall": "touching the wall", "base": "touching the base",
                  "top": "touching the top edge", "side": "touching a side wall",
                  "corner": rng.choice(["touching a corner", "in a corner"])}[where]
        return Statement(f"there is a {desc} {phrase}",
                         lambda s: any(_matches(o, c, shape) and _touch(o, where) for b in s for o in b))
    if kind == 3:
        where = rng.choice(["edge", "wall"])
        return Statement(f"there {_be(n) if q == 'exactly' else 'are'} {_count_phrase(rng, q, n, desc)} "
                         f"touching the {where}",
                         lambda s: holds(q, sum(_matches(o, c, shape) and _touch(o, where) for b in s for o in b), n))
    if kind == 4:
        size = rng.choice(SIZES)
        cc, ss = c or rng.choice(list(COLORS)), shape or rng.choice(SHAPES)
        return Statement(f"there is a {SIZE_WORDS[size]} {cc} {ss}",
                         lambda s: any(_matches(o, cc, ss, size) for b in s for o in b))
    if kind == 5:
        m = rng.randint(1, 6)
        return Statement(f"there {_be(m) if q == 'exactly' else 'are'} {_count_phrase(rng, q, m, desc)}",
                         lambda s: holds(q, sum(_matches(o, c, shape) for b in s for o in b), m))
    if kind == 6:
        if rng.random() < 0.5:
            cc = c or rng.choice(list(COLORS))
            return Statement(rng.choice([f"there is a box with only {cc} items", f"there is a {cc} box"]),
                             lambda s: any(b and all(o.color == cc for o in b) for b in s))
        ss = shape or rng.choice(SHAPES)
        return Statement(f"there is a box with only {ss}s",
                         lambda s: any(b and all(o.shape == ss for o in b) for b in s))
    if kind == 7:
        text = rng.choice([f"each box has a {desc}", f"every box contains at least one {desc}",
                           f"there is a {desc} in each box"])
        return Statement(text, lambda s: all(any(_matches(o, c, shape) for o in b) for b in s))
    if kind == 8:
        text = rng.choice([f"there is a box without a {desc}", f"there is a box with no {desc}s"])
        return Statement(text, lambda s: any(not any(_matches(o, c, shape) for o in b) for b in s))
    c1, c2 = rng.choice(list(COLORS)), rng.choice(list(COLORS))
    s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
    rel = rng.choice(["above", "below"])

    def rel_holds(s):
        for b in s:
            for a, o in itertools.permutations(b, 2):
                if _matches(a, c1, s1) and _matches(o, c2, s2) and \
                        ((a.y + a.size <= o.y) if rel == "above" else (o.y + o.size <= a.y)):
                    return True
        return False

    return Statement(f"there is a {c1} {s1} {rel} a {c2} {s2}", rel_holds)


def random_statement(scene: Scene, rng: random.Random) -> Statement:
    """A statement of the scene's kind (tower vocabulary for tower scenes, item vocabulary else)."""
    return tower_statement(rng) if is_tower_scene(scene) else scatter_statement(rng)


def statements_for(scene: Scene, rng: random.Random, n: int) -> List[Tuple[Statement, bool]]:
    """`n` distinct statements about `scene`, each aiming at a coin-flipped truth value (so about half are true)."""
    out: Dict[str, Tuple[Statement, bool]] = {}
    for _ in range(n):
        want = rng.random() < 0.5
        for _ in range(60):
            st = random_statement(scene, rng)
            truth = st(scene)
            if truth == want and st.text not in out:
                break
        out.setdefault(st.text, (st, truth))
    return list(out.values())


def counterfactual(scene: Scene, statement: Statement, rng: random.Random, edit_tries: int = 30,
                   draw_tries: int = 200) -> Optional[Scene]:
    """A scene of the same kind where `statement` is false: a one-object edit of `scene` when one is found, else a
    new random scene; None when neither is found."""
    for _ in range(edit_tries if rng.random() < 0.5 else 0):
        edited = edit_scene(scene, rng)
        if not statement(edited):
            return edited
    for _ in range(draw_tries):
        other = same_kind_scene(scene, rng)
        if not statement(other):
            return other
    return None


def random_negative_truth_rate(scenes: Sequence[Scene], rng: random.Random, pairs: int = 2000) -> float:
    """How often a statement true of one scene also holds for another random scene (upstream ITM's random negative
    image): the fraction of such "negatives" that are in fact positives."""
    hits, total = 0, 0
    for _ in range(pairs):
        a, b = rng.choice(scenes), rng.choice(scenes)
        if a is b:
            continue
        for _ in range(60):
            st = random_statement(a, rng)
            if st(a):
                break
        else:
            continue
        total += 1
        hits += st(b)
    return hits / max(total, 1)


# ---------------------------------------------------------------------------------------------------------------
# Tables

WORLD_SCHEMA = pa.schema([("image", pa.binary()), ("caption", pa.list_(pa.string())), ("image_id", pa.string()),
                          ("split", pa.string()), ("false_image", pa.binary())])
TABLES = ("nlvr_world_train", "nlvr_world_val")


@dataclass(frozen=True)
class WorldConfig:
    train_scenes: int = 6000
    val_scenes: int = 300
    statements_per_scene: int = 4      # drawn balanced; the true ones become rows
    tower_fraction: float = 0.7


def world_rows(n_scenes: int, seed: int, split: str, config: WorldConfig):
    """(scene, permuted image bytes, statement text, negative image bytes, image_id) for every true statement."""
    rng = random.Random(f"nlvr_world:{seed}:{split}")
    for i in range(n_scenes):
        scene = random_scene(rng, config.tower_fraction)
        for j, (st, truth) in enumerate(statements_for(scene, rng, config.statements_per_scene)):
            if not truth:
                continue
            negative = counterfactual(scene, st, rng)
            if negative is None:
                continue
            order = rng.choice(PERMUTATIONS)
            yield {"image": png_bytes(render(permute_scene(scene, order))), "caption": [st.text],
                   "image_id": f"world-{split}-{i}-{j}_{i * 10 + j}.png", "split": split,
                   "false_image": png_bytes(render(permute_scene(negative, rng.choice(PERMUTATIONS))))}


def make_world(out: str, seed: int = 0, config: Optional[WorldConfig] = None,
               show_progress: bool = False) -> Dict[str, int]:
    """Write ``nlvr_world_{train,val}.arrow`` into `out`; returns rows per file."""
    from shared_apt.vl.data.writers.common import open_arrow_writers, progress

    config = config or WorldConfig()
    os.makedirs(out, exist_ok=True)
    counts = {}
    for name, split, n in (("nlvr_world_train", "train", config.train_scenes),
                           ("nlvr_world_val", "val", config.val_scenes)):
        file_name = f"{name}.arrow"
        with open_arrow_writers({file_name: (os.path.join(out, file_name), WORLD_SCHEMA)}) as w:
            for row in progress(world_rows(n, seed, split, config), file_name, None, show_progress):
                w[file_name].append(row)
        counts[file_name] = w[file_name].rows_written
    with open(os.path.join(out, "nlvr_world.json"), "w") as f:
        json.dump({"seed": seed, "config": asdict(config), "rows": counts}, f, indent=1)
    return counts


def world_sentences(n_scenes: int, seed: int, config: Optional[WorldConfig] = None) -> List[str]:
    """Statements (true and false) of `n_scenes` scenes, for the tokenizer's training corpus."""
    config = config or WorldConfig()
    rng = random.Random(f"nlvr_world:{seed}:vocab")
    return [st.text for _ in range(n_scenes)
            for st, _ in statements_for(random_scene(rng, config.tower_fraction), rng, config.statements_per_scene)]


# ---------------------------------------------------------------------------------------------------------------
# Dataset (MLM + ITM with the stored negative image)

def _dataset_base():
    from shared_apt.vl.data.datasets import F30KCaptionKarpathyDataset

    return F30KCaptionKarpathyDataset


class WorldCaptionDataset(_dataset_base()):
    """Caption dataset over ``nlvr_world_*`` whose ITM negative (``false_image_0``) is the row's ``false_image``,
    a scene where the row's statement is false (upstream draws a random image). Needs ``draw_false_image`` = 1."""

    split_names = {"train": ["nlvr_world_train"], "val": ["nlvr_world_val"], "test": ["nlvr_world_val"]}

    def required_columns(self) -> Dict[str, Any]:
        from shared_apt.vl.data.datasets import BINARY

        return {**super().required_columns(), "false_image": BINARY}

    def get_false_image(self, rep: int, image_key: str = "image", attempts: int = 10) -> Dict[str, Any]:
        raise RuntimeError("WorldCaptionDataset: negatives come from the row's false_image (get_sample)")

    def get_sample(self, index: int) -> Dict[str, Any]:
        if self.draw_false_image != 1:
            raise ValueError(f"WorldCaptionDataset: draw_false_image must be 1 (one stored negative per row), "
                             f"got {self.draw_false_image}")
        ret: Dict[str, Any] = {}
        ret.update(self.get_image(index))
        txt = self.get_text(index)
        ret["replica"] = txt["cap_index"] > 0
        ret.update(txt)
        ret["false_image_0"] = self.get_image(index, image_key="false_image")["image"]
        for i in range(self.draw_false_text):
            ret.update(self.get_false_text(i))
        return ret


# ---------------------------------------------------------------------------------------------------------------
# Visual pre-training: what is in the boxes (one fixed question, many answers)

VISUAL_QUESTION = "what is in the boxes?"


def _attribute_names() -> Tuple[str, ...]:
    names = ["towers", "scattered"]
    for c in COLORS:
        names += [f"{c} top", f"{c} base", f"{c} tower"] + [f"{c} on {c2}" for c2 in COLORS]
        names += [f"{k} {c}" for k in range(6)] + [f"6+ {c}"]
        names += [f"{c} {s}" for s in SHAPES] + [f"{c} {s} touching" for s in SHAPES]
    names += [f"tower of {n}" for n in range(1, MAX_TOWER + 1)]
    names += [f"box of {n}" for n in range(1, MAX_SCATTER + 1)]
    names += [f"{SIZE_WORDS[z]} {s}" for z in SIZES for s in SHAPES]
    return tuple(names)


ATTRIBUTES = _attribute_names()


def attributes(scene: Scene) -> List[str]:
    """The atomic facts of ATTRIBUTES that hold for `scene` (all invariant under box permutations)."""
    facts = set()
    towers = is_tower_scene(scene)
    facts.add("towers" if towers else "scattered")
    for c in COLORS:
        k = sum(o.color == c for b in scene for o in b)
        facts.add(f"{k} {c}" if k < 6 else f"6+ {c}")
    for b in scene:
        if towers:
            cols = tower(b)
            if cols:
                facts |= {f"{cols[-1]} top", f"{cols[0]} base", f"tower of {len(cols)}"}
                if len(set(cols)) == 1:
                    facts.add(f"{cols[0]} tower")
                facts |= {f"{upper} on {lower}" for lower, upper in zip(cols, cols[1:])}
        else:
            facts.add(f"box of {len(b)}")
            for o in b:
                facts |= {f"{o.color} {o.shape}", f"{SIZE_WORDS[o.size]} {o.shape}"}
                if _touch(o, "edge"):
                    facts.add(f"{o.color} {o.shape} touching")
    unknown = facts - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"attributes {sorted(unknown)} are not in ATTRIBUTES")
    return sorted(facts, key=ATTRIBUTES.index)


VISUAL_TABLES = ("nlvr_world_visual_train", "nlvr_world_visual_val")


def make_visual_world(out: str, seed: int = 0, train_scenes: int = 6000, val_scenes: int = 300,
                      tower_fraction: float = 0.7) -> Dict[str, int]:
    """``nlvr_world_visual_{train,val}.arrow`` (VQA schema): per scene one question, VISUAL_QUESTION, whose answers
    are its ATTRIBUTES (each score 1.0): a multi-label image classification with constant text, the pre-training
    of the image side that upstream ViLT gets from ImageNet ViT weights."""
    from shared_apt.vl.data.writers.common import open_arrow_writers
    from shared_apt.vl.data.writers.vqa import VqaQuestion, vqa_row, vqa_schema

    index = {a: i for i, a in enumerate(ATTRIBUTES)}
    counts = {}
    for name, split, n in ((VISUAL_TABLES[0], "train", train_scenes), (VISUAL_TABLES[1], "val", val_scenes)):
        rng = random.Random(f"nlvr_world_visual:{seed}:{split}")
        file_name = f"{name}.arrow"
        with open_arrow_writers({file_name: (os.path.join(out, file_name), vqa_schema(test=False))}) as w:
            for i in range(n):
                scene = random_scene(rng, tower_fraction)
                facts = attributes(scene)
                question = VqaQuestion(i, VISUAL_QUESTION, [index[a] for a in facts], [1.0] * len(facts))
                w[file_name].append(vqa_row(png_bytes(render(permute_scene(scene, rng.choice(PERMUTATIONS)))), i,
                                            [question], split, ATTRIBUTES, test=False))
        counts[file_name] = w[file_name].rows_written
    return counts
