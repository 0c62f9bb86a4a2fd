"""The generated NLVR-like world: statements true/false as labelled on hand-checked scenes, box permutations,
rendering in NLVR's layout, the stored ITM negatives."""
from __future__ import annotations

import glob
import io
import json
import os
import random

import numpy as np
import pytest
from PIL import Image

from shared_apt.vl.data import nlvr_world as W
from shared_apt.vl.data.arrow import read_arrow_table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NLVR1_ROOT = os.path.join(os.path.dirname(REPO), "shared", "data", "nlvr1")


def tower_box(*colors):
    """A tower, bottom block first, at NLVR's tower coordinates."""
    return tuple(W.Obj("square", c, 20, 40, (80, 59, 38, 17)[i]) for i, c in enumerate(colors))


# NLVR test example 3776-0 ("There is a tower with exactly two blocks having a black block at the top": true)
TOWERS = (tower_box("yellow"), tower_box("blue", "blue", "yellow"), tower_box("black", "black"))
# hand-built scattered scene: box 0 a yellow square in the bottom-left corner; box 1 a large blue triangle above a
# small black circle (neither touching a wall); box 2 one yellow circle touching the top wall
SCATTER = ((W.Obj("square", "yellow", 20, 0, 80),),
           (W.Obj("triangle", "blue", 30, 10, 10), W.Obj("circle", "black", 10, 45, 45)),
           (W.Obj("circle", "yellow", 20, 70, 0),))

# (sentence, truth) checked by hand against the scenes above
TOWER_CASES = [
    ("there is a tower with exactly two blocks having a black block at the top", True),
    ("there is a tower with exactly two blocks having a yellow block at the top", False),
    ("there is a yellow block on top of a blue block", True),
    ("there is a blue block on top of a yellow block", False),
    ("there is a blue block below a yellow block", True),
    ("there is a yellow block above a black block", False),
    ("there is a black tower", True),
    ("there is a yellow tower", True),
    ("there is a blue tower", False),
    ("there is a tower which has blocks of all three colors", False),
    ("the tops of the three towers are the same color", False),
    ("the tops of the three towers are not the same", True),
    ("each tower has a black block", False),
    ("there is a tower with at least three blocks", True),
    ("there is a tower with exactly four blocks", False),
    ("there are exactly two towers with a yellow block at the top", True),
]
SCATTER_CASES = [
    ("there is exactly one yellow square", True),
    ("there is exactly one yellow circle", True),
    ("there are exactly two yellow shapes", True),
    ("there is a yellow square touching the edge", True),
    ("there is a yellow square touching a corner", True),
    ("there is a black circle touching the wall", False),
    ("there is a blue triangle touching the wall", False),
    ("there is a box with only circles", True),
    ("there is a box with only triangles", False),
    ("each box has a yellow item", False),
    ("there is a large blue triangle", True),
    ("there is a small blue triangle", False),
    ("there is a blue triangle above a black circle", True),
    ("there is a blue triangle below a black circle", False),
    ("there is a box with exactly two items", True),
    ("there is a box with at least three items", False),
]


def _find(make, wanted, draws=60000):
    """Statements drawn by `make(rng)` whose text is in `wanted`."""
    rng, found = random.Random(0), {}
    for _ in range(draws):
        st = make(rng)
        if st.text in wanted and st.text not in found:
            found[st.text] = st
            if len(found) == len(wanted):
                break
    missing = sorted(set(wanted) - set(found))
    assert not missing, f"the generator never wrote {missing}"
    return found


@pytest.mark.parametrize("make,scene,cases", [(W.tower_statement, TOWERS, TOWER_CASES),
                                              (W.scatter_statement, SCATTER, SCATTER_CASES)],
                         ids=["towers", "scatter"])
def test_statements_are_true_or_false_as_checked_by_hand(make, scene, cases):
    statements = _find(make, [text for text, _ in cases])
    got = {text: statements[text](scene) for text, _ in cases}
    assert got == dict(cases)


def test_statements_are_balanced_and_hold_for_every_box_order():
    rng = random.Random(1)
    labels = []
    for _ in range(150):
        scene = W.random_scene(rng)
        for st, truth in W.statements_for(scene, rng, 4):
            assert st(scene) == truth
            labels.append(truth)
            assert all(st(W.permute_scene(scene, order)) == truth for order in W.PERMUTATIONS), st.text
    assert 0.4 < sum(labels) / len(labels) < 0.6


def test_counterfactual_makes_the_statement_false():
    """A same-kind scene where the true statement is false (None only for statements almost always true, such as
    "there are at most five triangles")."""
    rng = random.Random(2)
    found = none = 0
    for _ in range(50):
        scene = W.random_scene(rng)
        for st, truth in W.statements_for(scene, rng, 3):
            if truth:
                other = W.counterfactual(scene, st, rng)
                if other is None:
                    none += 1
                    continue
                found += 1
                assert not st(other) and W.is_tower_scene(other) == W.is_tower_scene(scene)
    assert found > 40 and none <= found // 10


def test_permute_boxes_moves_the_boxes_and_keeps_the_gaps():
    # a tiny synthetic three-box image: every box one colour with a marker pixel, gaps grey
    image = Image.new("RGB", (400, 100), (128, 128, 128))
    fills = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for x, fill in zip((0, 150, 300), fills):
        image.paste(Image.new("RGB", (100, 100), fill), (x, 0))
        image.putpixel((x + 7, 3), (1, 2, 3))
    out = W.permute_boxes(image, (2, 0, 1))
    for x, source in zip((0, 150, 300), (2, 0, 1)):
        assert out.getpixel((x + 50, 50)) == fills[source]
        assert out.getpixel((x + 99, 99)) == fills[source]
        assert out.getpixel((x + 7, 3)) == (1, 2, 3)
    for x in (100, 149, 250, 299):
        assert out.getpixel((x, 50)) == (128, 128, 128)
    assert image.getpixel((50, 50)) == fills[0]          # the input is left as it was
    with pytest.raises(ValueError, match="permutation"):
        W.permute_boxes(image, (0, 0, 1))
    with pytest.raises(ValueError, match="400x100"):
        W.permute_boxes(image.resize((200, 50)), (0, 1, 2))


def test_rendering_a_permuted_scene_equals_permuting_its_image():
    rng = random.Random(3)
    for _ in range(4):
        scene = W.random_scene(rng, tower_fraction=0.5)
        for order in W.PERMUTATIONS:
            a = np.asarray(W.render(W.permute_scene(scene, order)))
            b = np.asarray(W.permute_boxes(W.render(scene), order))
            assert (a == b).all()


@pytest.mark.skipif(not os.path.isdir(NLVR1_ROOT), reason="real NLVR corpus not present at ../shared/data/nlvr1")
def test_rendering_matches_the_real_nlvr_images():
    """Scenes from structured_rep render like NLVR's own permutation-0 images: towers pixel for pixel, scattered
    shapes up to anti-aliasing of circle and triangle edges."""
    from shared_apt.vl.data.writers.nlvr1 import rgb_png_bytes

    with open(os.path.join(NLVR1_ROOT, "test", "test.json")) as f:
        examples = [json.loads(line) for line, _ in zip(f, range(60))]
    seen = {True: 0, False: 0}
    for e in examples:
        path = glob.glob(os.path.join(NLVR1_ROOT, "test", "images", "*", f"test-{e['identifier']}-0.png"))
        scene = W.scene_from_structured_rep(e["structured_rep"])
        real = np.asarray(Image.open(io.BytesIO(rgb_png_bytes(path[0]))))
        same = (real == np.asarray(W.render(scene))).all(-1).mean()
        tower = W.is_tower_scene(scene)
        seen[tower] += 1
        assert same == 1.0 if tower else same > 0.97, (e["identifier"], same)
    assert seen[True] and seen[False]


def test_world_tables_and_dataset_negatives(tmp_path):
    from shared_apt.vl.data.text import train_wordpiece_tokenizer

    config = W.WorldConfig(train_scenes=6, val_scenes=2)
    counts = W.make_world(str(tmp_path), seed=0, config=config)
    assert counts == W.make_world(str(tmp_path / "again"), seed=0, config=config)
    train = read_arrow_table(str(tmp_path / "nlvr_world_train.arrow")).to_pylist()
    assert len(train) == counts["nlvr_world_train.arrow"] > 0
    assert read_arrow_table(str(tmp_path / "again" / "nlvr_world_train.arrow")).to_pylist() == train
    tok = train_wordpiece_tokenizer([r["caption"][0] for r in train], str(tmp_path / "tok"), vocab_size=200,
                                    min_frequency=1)
    ds = W.WorldCaptionDataset(str(tmp_path), ["pixelbert"], 160, split="train", max_text_len=40,
                               draw_false_image=1, tokenizer=tok)
    assert len(ds) == len(train)
    sample = ds[1]
    # the ITM negative is the row's stored scene, through the same transform as the positive image
    assert sample["text"][0] == train[1]["caption"][0]
    stored = ds.transforms[0](Image.open(io.BytesIO(train[1]["false_image"])).convert("RGB"))
    assert (sample["false_image_0"][0] == stored).all()
    assert not (sample["false_image_0"][0] == sample["image"][0]).all()
    ds.draw_false_image = 2
    with pytest.raises(ValueError, match="draw_false_image must be 1"):
        ds[0]


def test_visual_attributes_by_hand():
    """The facts of the visual pre-training: tower scene 3776-0 (bottom first: yellow | blue, blue, yellow |
    black, black) and the scattered scene above."""
    assert W.attributes(TOWERS) == sorted([
        "towers", "yellow top", "yellow base", "yellow tower", "tower of 1", "blue base", "blue on blue",
        "yellow on blue", "tower of 3", "black top", "black base", "black tower", "black on black", "tower of 2",
        "2 yellow", "2 blue", "2 black"], key=W.ATTRIBUTES.index)
    assert W.attributes(SCATTER) == sorted([
        "scattered", "2 yellow", "1 blue", "1 black", "box of 1", "box of 2", "yellow square", "yellow square touching",
        "medium square", "blue triangle", "large triangle", "black circle", "small circle", "yellow circle",
        "yellow circle touching", "medium circle"], key=W.ATTRIBUTES.index)
    assert all(W.attributes(W.permute_scene(TOWERS, order)) == W.attributes(TOWERS) for order in W.PERMUTATIONS)
