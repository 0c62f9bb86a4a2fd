"""The synthetic demo world: deterministic, upstream file names and schemas, answers that match the pictures."""
from __future__ import annotations

import io
import json
import os
import re
from collections import Counter

import pytest
from PIL import Image

from shared_apt.vl.data import demo_world
from shared_apt.vl.data.arrow import read_arrow_table
from shared_apt.vl.data.writers.common import CAPTION_SCHEMA
from shared_apt.vl.data.writers.nlvr2 import NLVR2_SCHEMA
from shared_apt.vl.data.writers.vqa import vqa_schema

CONFIG = demo_world.DemoWorldConfig().scaled(0.5)

EXPECTED_FILES = {
    **{f"coco_caption_karpathy_{s}.arrow": CAPTION_SCHEMA for s in ("train", "val", "restval", "test")},
    **{f"f30k_caption_karpathy_{s}.arrow": CAPTION_SCHEMA for s in ("train", "val", "test")},
    **{f"vqav2_{s}.arrow": vqa_schema(test=False) for s in ("train", "val", "trainable_val", "rest_val")},
    **{f"vqav2_{s}.arrow": vqa_schema(test=True) for s in ("test", "test-dev")},
    **{f"nlvr2_{s}.arrow": NLVR2_SCHEMA for s in ("train", "dev", "test1")},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_world")
    files = demo_world.make_demo_world(str(out), seed=0, config=CONFIG)
    with open(out / demo_world.SCENES_FILE) as fp:
        scenes = json.load(fp)
    return out, files, scenes


def rows(out, name):
    return read_arrow_table(str(out / name)).to_pylist()


def decode(data):
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_files_and_schemas(world):
    out, files, _ = world
    assert set(files) == set(EXPECTED_FILES)
    assert set(os.listdir(out)) == set(EXPECTED_FILES) | {"vqa_dict.json", demo_world.SCENES_FILE}
    for name, schema in EXPECTED_FILES.items():
        table = read_arrow_table(str(out / name))
        assert table.schema == schema, name
        assert table.num_rows == files[name] > 0, name
    assert files["coco_caption_karpathy_train.arrow"] == CONFIG.coco_train
    assert files["nlvr2_dev.arrow"] == CONFIG.nlvr2_dev
    assert files["vqav2_rest_val.arrow"] == CONFIG.vqa_rest_val


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
    out, _, _ = world
    again = tmp_path / "again"
    demo_world.make_demo_world(str(again), seed=0, config=CONFIG)
    for name in sorted(os.listdir(out)):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "other"
    demo_world.make_demo_world(str(other), seed=1, config=CONFIG, tasks=["nlvr2"])
    assert (other / "nlvr2_train.arrow").read_bytes() != (out / "nlvr2_train.arrow").read_bytes()


def check_pixels(image_bytes, scene, size):
    """Each shape's colour is at its centre; empty quadrant centres show the background."""
    image = decode(image_bytes)
    assert image.size == (size, size)
    occupied = set()
    for o in scene:
        occupied.add(o["position"])
        pixel = image.getpixel((int(o["cx"] * size), int(o["cy"] * size)))
        assert max(abs(a - b) for a, b in zip(pixel, demo_world.COLORS[o["color"]])) < 40, (o, pixel)
    for position, (x, y) in demo_world.QUADRANT_CENTERS.items():
        if position not in occupied:
            pixel = image.getpixel((int(x * size), int(y * size)))
            assert max(abs(a - b) for a, b in zip(pixel, demo_world.BACKGROUND)) < 20


def oracle(question, scene):
    """Independent answer to a demo question from the scene description."""
    def matching(**attrs):
        return [o for o in scene if all(o[k] == v for k, v in attrs.items())]

    if question == "how many shapes are there?":
        return str(len(scene))
    if m := re.fullmatch(r"how many (\w+) shapes are there\?", question):
        return str(len(matching(color=m[1])))
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        (o,) = matching(shape=m[1])
        return o["color"]
    if m := re.fullmatch(r"what shape is the (\w+) object\?", question):
        (o,) = matching(color=m[1])
        return o["shape"]
    if m := re.fullmatch(r"is there a (\w+) (\w+)\?", question):
        return "yes" if matching(color=m[1], shape=m[2]) else "no"
    if m := re.fullmatch(r"what size is the (\w+) (\w+)\?", question):
        (o,) = matching(color=m[1], shape=m[2])
        return o["size"]
    if m := re.fullmatch(r"where is the (\w+) (\w+)\?", question):
        (o,) = matching(color=m[1], shape=m[2])
        return o["position"]
    if m := re.fullmatch(r"what color is the shape at the (.+)\?", question):
        (o,) = matching(position=m[1])
        return o["color"]
    raise AssertionError(f"unexpected question {question!r}")


def test_vqa_answers_match_scenes_and_scores_vary(world):
    out, _, scenes = world
    vocabulary = json.loads((out / "vqa_dict.json").read_text())
    train = rows(out, "vqav2_train.arrow")
    scores, top_answers = Counter(), Counter()
    for row in train:
        scene = scenes["vqav2"][str(row["image_id"])]
        check_pixels(row["image"], scene, CONFIG.image_size)
        for q, qid, answers, labels, soft in zip(row["questions"], row["question_id"], row["answers"],
                                                  row["answer_labels"], row["answer_scores"]):
            assert qid // 1000 == row["image_id"]
            assert answers == [vocabulary[str(label)] for label in labels]
            best = answers[soft.index(max(soft))]
            assert best == oracle(q, scene), (q, scene, answers, soft)
            assert max(soft) >= 0.9 and all(s <= 0.6 for s in soft if s != max(soft))
            scores.update(soft)
            top_answers[best] += 1
    assert {0.3, 0.6, 0.9, 1.0} <= set(scores)
    n_questions = sum(top_answers.values())
    assert top_answers.most_common(1)[0][1] / n_questions < 0.2  # the majority baseline stays low
    assert len(top_answers) >= 15


def test_vqa_splits(world):
    out, _, scenes = world
    val = rows(out, "vqav2_val.arrow")
    assert rows(out, "vqav2_trainable_val.arrow") + rows(out, "vqav2_rest_val.arrow") == val
    test = rows(out, "vqav2_test.arrow")
    dev = rows(out, "vqav2_test-dev.arrow")
    assert len(test) == CONFIG.vqa_test and len(dev) == CONFIG.vqa_test_dev
    by_id = {r["image_id"]: r for r in test}
    for row in dev:
        assert row["split"] == "test-dev" and row["question_id"] == by_id[row["image_id"]]["question_id"]
        assert row["answers"] == [] and row["image"] == by_id[row["image_id"]]["image"]
    ids = [{r["image_id"] for r in rows(out, f"vqav2_{s}.arrow")} for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    for row in test[:5]:
        check_pixels(row["image"], scenes["vqav2"][str(row["image_id"])], CONFIG.image_size)


def nlvr2_truth(statement, left, right):
    """Independent truth value of a demo NLVR2 statement."""
    def has(scene, **attrs):
        return sum(all(o[k] == v for k, v in attrs.items()) for o in scene)

    words = {"one": 1, "two": 2, "three": 3, "four": 4}
    if m := re.fullmatch(r"the (left|right) image contains exactly (\w+) shapes?\.", statement):
        return len(left if m[1] == "left" else right) == words[m[2]]
    if m := re.fullmatch(r"there are more (\w+)s in the left image than in the right image\.", statement):
        return has(left, shape=m[1]) > has(right, shape=m[1])
    if m := re.fullmatch(r"both images contain a (\w+) shape\.", statement):
        return bool(has(left, color=m[1]) and has(right, color=m[1]))
    if m := re.fullmatch(r"the (left|right) image has a (\w+) (\w+)\.", statement):
        return bool(has(left if m[1] == "left" else right, color=m[2], shape=m[3]))
    if m := re.fullmatch(r"there is a (\w+) (\w+) in exactly one image\.", statement):
        return bool(has(left, color=m[1], shape=m[2])) != bool(has(right, color=m[1], shape=m[2]))
    raise AssertionError(f"unexpected statement {statement!r}")


def test_nlvr2_labels_match_scenes(world):
    out, _, scenes = world
    labels = Counter()
    for split in ("train", "dev", "test1"):
        for row in rows(out, f"nlvr2_{split}.arrow"):
            assert row["identifier"].startswith(f"{split}-")
            left, right = scenes["nlvr2"][row["identifier"]]
            check_pixels(row["image_0"], left, CONFIG.image_size)
            check_pixels(row["image_1"], right, CONFIG.image_size)
            assert decode(row["image_0"]) and Image.open(io.BytesIO(row["image_0"])).format == "PNG"
            for statement, answer in zip(row["questions"], row["answers"]):
                assert answer == str(nlvr2_truth(statement, left, right))
                labels[answer] += 1
    assert 0.35 < labels["True"] / sum(labels.values()) < 0.65


def test_captions_describe_scenes(world):
    out, _, scenes = world
    for prefix, splits in (("coco", ("train", "restval")), ("f30k", ("train", "test"))):
        for split in splits:
            for row in rows(out, f"{prefix}_caption_karpathy_{split}.arrow")[:20]:
                scene = scenes[f"{prefix}_caption_karpathy"][row["image_id"]]
                assert row["split"] == split and len(row["caption"]) == CONFIG.captions_per_image
                full = row["caption"][0]
                for o in scene:
                    assert f"a {o['size']} {o['color']} {o['shape']} at the {o['position']}" in full
                assert full.count(" at the ") == len(scene)
                check_pixels(row["image"], scene, CONFIG.image_size)
    assert rows(out, "f30k_caption_karpathy_val.arrow")[0]["image_id"].endswith(".jpg")


def test_cli(tmp_path, capsys):
    assert demo_world.main(["--out", str(tmp_path), "--seed", "3", "--scale", "0.1", "--tasks", "nlvr2"]) == 0
    assert "nlvr2_train.arrow" in capsys.readouterr().out
    assert len(rows(tmp_path, "nlvr2_train.arrow")) == round(demo_world.DemoWorldConfig.nlvr2_train * 0.1)
