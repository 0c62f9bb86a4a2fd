"""Arrow writers on tiny raw inputs in the official layouts (VQAv2, NLVR2, Karpathy F30K/COCO, NLVR v1)."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest
from PIL import Image

from shared_apt.vl.data.arrow import read_arrow_table
from shared_apt.vl.data.writers import coco_karpathy, f30k_karpathy, nlvr1, nlvr2, vqa
from shared_apt.vl.data.writers.common import CAPTION_SCHEMA, RawDataError, seeded_shuffle

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NLVR1_ROOT = os.path.join(os.path.dirname(REPO), "shared", "data", "nlvr1")


def save_image(path, color, size=(8, 6), fmt="JPEG", mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)
    with open(path, "rb") as fp:
        return fp.read()


def dump_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fp:
        json.dump(obj, fp)


def dump_json_lines(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fp:
        fp.write("".join(json.dumps(r) + "\n" for r in records))


def rows(path):
    return read_arrow_table(str(path)).to_pylist()


def record_batches(path):
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).num_record_batches


# ---------------------------------------------------------------------------------------------------------------
# VQAv2
# ---------------------------------------------------------------------------------------------------------------


def annotation(qid, image_id, mca, answers):
    return {"question_id": qid, "image_id": image_id, "multiple_choice_answer": mca,
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]}


def question(qid, image_id, text):
    return {"question_id": qid, "image_id": image_id, "question": text}


@pytest.fixture
def vqa_root(tmp_path):
    """Official VQAv2 layout. Normalised multiple-choice answers: "Two"->"2", "blue", "zebra", "red" (train),
    "3", "red", "2", "blue", "3" (val) -> with min count 2 the vocabulary is ["2", "blue", "red", "3"]."""
    root = tmp_path / "vqa"
    train_q = [question(10, 1, "how many?"), question(11, 1, "what color?"), question(20, 2, "what animal?"),
               question(30, 3, "which color?")]
    train_a = [
        annotation(10, 1, "Two", ["two", "2", "3", "2", "two", "3", "2", "3", "2", "two"]),
        annotation(11, 1, "blue", ["blue"] * 7 + ["red", "Red", "red"]),
        annotation(20, 2, "zebra", ["zebra"] * 10),
        annotation(30, 3, "red", ["red"] * 10),
    ]
    val_q = [question(50, 5, "how many?"), question(60, 6, "color?"), question(61, 6, "count?"),
             question(70, 7, "color?"), question(71, 7, "count?")]
    val_a = [
        annotation(50, 5, "3", ["3"] * 10),
        annotation(60, 6, "red", ["red"] * 9 + ["blue"]),
        annotation(61, 6, "2", ["nope"] * 8 + ["2"] * 2),
        annotation(70, 7, "blue", ["blue", "3"] * 5),
        annotation(71, 7, "3", ["Three"] * 7 + ["3"] * 3),
    ]
    dump_json(root / vqa.QUESTION_FILES["train"], {"questions": train_q})
    dump_json(root / vqa.QUESTION_FILES["val"], {"questions": val_q})
    dump_json(root / vqa.QUESTION_FILES["test"], {"questions": [question(90, 9, "test q"), question(100, 10, "dev q")]})
    dump_json(root / vqa.QUESTION_FILES["test-dev"], {"questions": [question(100, 10, "dev q")]})
    dump_json(root / vqa.ANNOTATION_FILES["train"], {"annotations": train_a})
    dump_json(root / vqa.ANNOTATION_FILES["val"], {"annotations": val_a})
    images = {}
    for folder, ids in (("train2014", [1, 2, 3]), ("val2014", [5, 6, 7, 8]), ("test2015", [9, 10, 11])):
        for i in ids:
            images[i] = save_image(str(root / folder / f"COCO_{folder}_{i:012d}.jpg"), (20 * i, 0, 0))
    return root, images


def test_vqa_round_trip(vqa_root, tmp_path):
    root, images = vqa_root
    out = tmp_path / "arrows"
    counts = vqa.make_arrow(str(root), str(out), seed=0, min_answer_count=2, rest_val_size=1, show_progress=False)
    assert counts == {"train": 2, "val": 3, "trainable_val": 2, "rest_val": 1, "test": 2, "test-dev": 1}
    assert json.loads((out / "vqa_dict.json").read_text()) == {"0": "2", "1": "blue", "2": "red", "3": "3"}

    for name in ("train", "val", "trainable_val", "rest_val"):
        assert read_arrow_table(str(out / f"vqav2_{name}.arrow")).schema == vqa.vqa_schema(test=False)
    for name in ("test", "test-dev"):
        assert read_arrow_table(str(out / f"vqav2_{name}.arrow")).schema == vqa.vqa_schema(test=True)

    train = rows(out / "vqav2_train.arrow")
    assert [r["image_id"] for r in train] == seeded_shuffle([1, 3], 0)  # image 2 has no vocabulary answer
    by_id = {r["image_id"]: r for r in train}
    one = by_id[1]
    assert one["image"] == images[1]
    assert one["questions"] == ["how many?", "what color?"]
    assert one["question_id"] == [10, 11]
    # raw answer counts, first-occurrence order; "two" and "Red" are raw strings outside the vocabulary
    assert one["answer_labels"] == [[0, 3], [1, 2]]
    assert one["answer_scores"] == [[1.0, 0.9], [1.0, 0.6]]
    assert one["answers"] == [["2", "3"], ["blue", "red"]]
    assert one["split"] == "train"
    assert by_id[3]["answer_labels"] == [[2]] and by_id[3]["answer_scores"] == [[1.0]]

    val = rows(out / "vqav2_val.arrow")
    assert sorted(r["image_id"] for r in val) == [5, 6, 7]  # image 8 has no question
    assert rows(out / "vqav2_trainable_val.arrow") + rows(out / "vqav2_rest_val.arrow") == val
    six = next(r for r in val if r["image_id"] == 6)
    assert six["answer_labels"] == [[2, 1], [0]] and six["answer_scores"] == [[1.0, 0.3], [0.6]]
    seven = next(r for r in val if r["image_id"] == 7)
    assert seven["answer_labels"] == [[1, 3], [3]] and seven["answer_scores"] == [[1.0, 1.0], [0.9]]

    test = rows(out / "vqav2_test.arrow")
    assert sorted(r["image_id"] for r in test) == [9, 10]
    assert all(r["answers"] == [] and r["answer_labels"] == [] and r["answer_scores"] == [] for r in test)
    assert {r["image_id"]: r["question_id"] for r in test} == {9: [90], 10: [100]}
    dev = rows(out / "vqav2_test-dev.arrow")
    assert [(r["image_id"], r["questions"], r["split"], r["image"]) for r in dev] == [(10, ["dev q"], "test-dev", images[10])]


def test_vqa_is_deterministic_and_streams(vqa_root, tmp_path):
    root, _ = vqa_root
    a, b = tmp_path / "a", tmp_path / "b"
    vqa.make_arrow(str(root), str(a), seed=3, min_answer_count=2, show_progress=False)
    vqa.make_arrow(str(root), str(b), seed=3, min_answer_count=2, batch_rows=1, show_progress=False)
    for name in ("train", "val", "test", "test-dev"):
        assert rows(a / f"vqav2_{name}.arrow") == rows(b / f"vqav2_{name}.arrow")
    assert record_batches(b / "vqav2_val.arrow") == 3
    # default rest_val_size 1000 > 3 rows: everything goes to rest_val, as upstream's pdtable[-1000:]
    assert rows(a / "vqav2_trainable_val.arrow") == [] and len(rows(a / "vqav2_rest_val.arrow")) == 3


def test_vqa_vocabulary_threshold(vqa_root, tmp_path):
    root, _ = vqa_root
    out = tmp_path / "out"
    vqa.make_arrow(str(root), str(out), min_answer_count=1, splits=["train"], show_progress=False)
    assert json.loads((out / "vqa_dict.json").read_text()) == {"0": "2", "1": "blue", "2": "zebra", "3": "red", "4": "3"}
    assert sorted(r["image_id"] for r in rows(out / "vqav2_train.arrow")) == [1, 2, 3]
    ans2label, label2ans = vqa.answer_vocabulary(
        [("a", [{"multiple_choice_answer": x} for x in ["b", "x", "Two", "x"]]),
         ("b", [{"multiple_choice_answer": x} for x in ["c", "2", "b", "b"]])], min_count=2)
    assert label2ans == ["b", "x", "2"] and ans2label == {"b": 0, "x": 1, "2": 2}


def test_vqa_missing_annotation_file(vqa_root, tmp_path):
    root, _ = vqa_root
    os.remove(root / vqa.ANNOTATION_FILES["val"])
    with pytest.raises(RawDataError, match="v2_mscoco_val2014_annotations.json"):
        vqa.make_arrow(str(root), str(tmp_path / "out"), show_progress=False)


def test_vqa_missing_field_names_file_and_question(vqa_root, tmp_path):
    root, _ = vqa_root
    path = root / vqa.ANNOTATION_FILES["train"]
    data = json.loads(path.read_text())
    del data["annotations"][3]["answers"]
    dump_json(path, data)
    with pytest.raises(RawDataError, match=r"v2_mscoco_train2014_annotations\.json: question 30 has no field 'answers'"):
        vqa.make_arrow(str(root), str(tmp_path / "out"), min_answer_count=2, show_progress=False)


def test_vqa_missing_image(vqa_root, tmp_path):
    root, _ = vqa_root
    os.remove(root / "train2014" / "COCO_train2014_000000000003.jpg")
    out = tmp_path / "out"
    with pytest.raises(RawDataError, match=r"image_id 3.*train2014"):
        vqa.make_arrow(str(root), str(out), min_answer_count=2, show_progress=False)
    assert not (out / "vqav2_train.arrow").exists()
    counts = vqa.make_arrow(str(root), str(out), min_answer_count=2, allow_missing_images=True,
                            splits=["train"], show_progress=False)
    assert counts == {"train": 1}


def test_vqa_missing_image_folder(vqa_root, tmp_path):
    root, _ = vqa_root
    for name in os.listdir(root / "test2015"):
        os.remove(root / "test2015" / name)
    os.rmdir(root / "test2015")
    with pytest.raises(RawDataError, match="test2015"):
        vqa.make_arrow(str(root), str(tmp_path / "out"), min_answer_count=2, show_progress=False)


# ---------------------------------------------------------------------------------------------------------------
# NLVR2
# ---------------------------------------------------------------------------------------------------------------


def nlvr2_record(identifier, sentence, label, directory=None):
    record = {"identifier": identifier, "sentence": sentence, "label": label, "synset": "x", "query": "q"}
    if directory is not None:
        record["directory"] = directory
    return record


@pytest.fixture
def nlvr2_root(tmp_path):
    root = tmp_path / "nlvr2raw"
    data = root / "nlvr2" / "data"
    dump_json_lines(data / "train.json", [
        nlvr2_record("train-1-0-0", "s1", "True", 7),
        nlvr2_record("train-2-1-0", "s2", "False", 3),
        nlvr2_record("train-1-0-1", "s3", "False", 7),
    ])
    dev = [nlvr2_record("dev-5-0-0", "d1", "True"), nlvr2_record("dev-5-0-1", "d2", "False"),
           nlvr2_record("dev-6-0-0", "d3", "True")]
    test1 = [nlvr2_record("test1-3-0-0", "t1", "False")]
    dump_json_lines(data / "dev.json", dev)
    dump_json_lines(data / "test1.json", test1)
    dump_json_lines(data / "balanced" / "balanced_dev.json", dev[:2])
    dump_json_lines(data / "balanced" / "balanced_test1.json", test1)
    dump_json_lines(data / "unbalanced" / "unbalanced_dev.json", dev[2:])
    dump_json_lines(data / "unbalanced" / "unbalanced_test1.json", test1)
    images = {}
    paths = {"train-1-0": root / "images" / "train" / "7", "train-2-1": root / "images" / "train" / "3",
             "dev-5-0": root / "dev", "dev-6-0": root / "dev", "test1-3-0": root / "test1"}
    for n, (pair, folder) in enumerate(paths.items()):
        for side in (0, 1):
            images[pair, side] = save_image(str(folder / f"{pair}-img{side}.png"), (n * 30, side * 200, 0), fmt="PNG")
    return root, images


def test_nlvr2_round_trip(nlvr2_root, tmp_path):
    root, images = nlvr2_root
    out = tmp_path / "out"
    counts = nlvr2.make_arrow(str(root), str(out), show_progress=False)
    assert counts == {"train": 2, "dev": 2, "test1": 1, "balanced_dev": 1, "balanced_test1": 1,
                      "unbalanced_dev": 1, "unbalanced_test1": 1}
    assert read_arrow_table(str(out / "nlvr2_train.arrow")).schema == nlvr2.NLVR2_SCHEMA
    train = rows(out / "nlvr2_train.arrow")
    assert [(r["identifier"], r["questions"], r["answers"]) for r in train] == [
        ("train-1-0", ["s1", "s3"], ["True", "False"]), ("train-2-1", ["s2"], ["False"])]
    assert train[0]["image_0"] == images["train-1-0", 0] and train[0]["image_1"] == images["train-1-0", 1]
    assert train[1]["image_1"] == images["train-2-1", 1]
    dev = rows(out / "nlvr2_dev.arrow")
    assert [(r["identifier"], r["questions"]) for r in dev] == [("dev-5-0", ["d1", "d2"]), ("dev-6-0", ["d3"])]
    assert dev[1]["image_0"] == images["dev-6-0", 0]
    assert [r["identifier"] for r in rows(out / "nlvr2_unbalanced_dev.arrow")] == ["dev-6-0"]
    assert rows(out / "nlvr2_test1.arrow")[0]["image_1"] == images["test1-3-0", 1]


def test_nlvr2_errors(nlvr2_root, tmp_path):
    root, _ = nlvr2_root
    os.remove(root / "dev" / "dev-6-0-img1.png")
    with pytest.raises(RawDataError, match=r"dev-6-0-img1\.png"):
        nlvr2.make_arrow(str(root), str(tmp_path / "out"), show_progress=False)
    os.remove(root / "nlvr2" / "data" / "balanced" / "balanced_test1.json")
    with pytest.raises(RawDataError, match=r"balanced_test1\.json"):
        nlvr2.make_arrow(str(root), str(tmp_path / "out"), splits=["balanced_test1"], show_progress=False)
    dump_json_lines(root / "nlvr2" / "data" / "train.json", [nlvr2_record("train-1-0-0", "s1", "True")])
    with pytest.raises(RawDataError, match=r"train\.json: train-1-0-0 has no field 'directory'"):
        nlvr2.make_arrow(str(root), str(tmp_path / "out"), splits=["train"], show_progress=False)


# ---------------------------------------------------------------------------------------------------------------
# Karpathy F30K / COCO
# ---------------------------------------------------------------------------------------------------------------


def karpathy_entry(filename, split, captions, filepath=None):
    entry = {"filename": filename, "split": split, "imgid": 0,
             "sentences": [{"raw": c, "tokens": c.lower().split()} for c in captions]}
    if filepath:
        entry["filepath"] = filepath
    return entry


def test_f30k_round_trip(tmp_path):
    root = tmp_path / "f30k"
    entries = [karpathy_entry("1.jpg", "train", ["A dog.", "A dog runs."]), karpathy_entry("2.jpg", "val", ["A cat."]),
               karpathy_entry("3.jpg", "test", ["A car."]), karpathy_entry("4.jpg", "train", ["A man."])]
    dump_json(root / "karpathy" / "dataset_flickr30k.json", {"images": entries, "dataset": "flickr30k"})
    images = {i: save_image(str(root / "flickr30k-images" / f"{i}.jpg"), (i * 40, 0, 0)) for i in range(1, 6)}
    out = tmp_path / "out"
    assert f30k_karpathy.make_arrow(str(root), str(out), seed=1, show_progress=False) == {"train": 2, "val": 1, "test": 1}
    train_table = read_arrow_table(str(out / "f30k_caption_karpathy_train.arrow"))
    assert train_table.schema == CAPTION_SCHEMA
    train = train_table.to_pylist()
    assert [r["image_id"] for r in train] == [n for n in seeded_shuffle(["1.jpg", "2.jpg", "3.jpg", "4.jpg"], 1)
                                              if n in ("1.jpg", "4.jpg")]
    assert next(r for r in train if r["image_id"] == "1.jpg") == {
        "image": images[1], "caption": ["A dog.", "A dog runs."], "image_id": "1.jpg", "split": "train"}
    assert rows(out / "f30k_caption_karpathy_test.arrow")[0]["caption"] == ["A car."]

    os.remove(root / "flickr30k-images" / "4.jpg")
    with pytest.raises(RawDataError, match=r"4\.jpg"):
        f30k_karpathy.make_arrow(str(root), str(tmp_path / "out2"), show_progress=False)
    counts = f30k_karpathy.make_arrow(str(root), str(tmp_path / "out2"), allow_missing_images=True, show_progress=False)
    assert counts["train"] == 1


def test_coco_round_trip_streams_and_errors(tmp_path):
    root = tmp_path / "coco"
    names = {s: f"COCO_{'train' if s in ('train', 'restval') else 'val'}2014_{i:012d}.jpg"
             for i, s in enumerate(["train", "val", "restval", "test"])}
    entries = [karpathy_entry(n, s, [f"caption of {s}"] * 5, n.split("_")[1]) for s, n in names.items()]
    entries.append(karpathy_entry("COCO_train2014_000000000009.jpg", "train", ["another"], "train2014"))
    path = root / "karpathy" / "dataset_coco.json"
    dump_json(path, {"images": entries})
    for name in list(names.values()) + ["COCO_train2014_000000000009.jpg"]:
        save_image(str(root / name.split("_")[1] / name), (1, 2, 3))
    out = tmp_path / "out"
    counts = coco_karpathy.make_arrow(str(root), str(out), batch_rows=1, show_progress=False)
    assert counts == {"train": 2, "val": 1, "restval": 1, "test": 1}
    assert record_batches(out / "coco_caption_karpathy_train.arrow") == 2
    restval = rows(out / "coco_caption_karpathy_restval.arrow")
    assert [(r["image_id"], r["split"], r["caption"]) for r in restval] == [
        (names["restval"], "restval", ["caption of restval"] * 5)]

    del entries[1]["sentences"]
    dump_json(path, {"images": entries})
    with pytest.raises(RawDataError, match=f"dataset_coco.json: image '{names['val']}' has no field 'sentences'"):
        coco_karpathy.make_arrow(str(root), str(out), show_progress=False)
    os.remove(path)
    with pytest.raises(RawDataError, match=r"dataset_coco\.json"):
        coco_karpathy.make_arrow(str(root), str(out), show_progress=False)


# ---------------------------------------------------------------------------------------------------------------
# NLVR v1
# ---------------------------------------------------------------------------------------------------------------

NLVR1_EXAMPLES = [  # (identifier, directory, label, sentence); examples sharing n share a sentence and a folder
    ("1-0", "0", "true", "there is a yellow square"),
    ("1-1", "0", "false", "there is a yellow square"),
    ("2-0", "1", "true", "there are two towers"),
    ("3-0", "2", "false", "a black circle touches the edge"),
    ("3-1", "2", "true", "a black circle touches the edge"),
]


def nlvr1_color(index, k):
    return (40 * index, 30 * k, 100)


@pytest.fixture
def nlvr1_root(tmp_path):
    """A tiny labelled split named ``test`` (unlike VQAv2's test) in NLVR's layout; image k of example i is
    filled with nlvr1_color(i, k), with a transparent top-left pixel."""
    root = tmp_path / "nlvr"
    records = []
    for i, (identifier, directory, label, sentence) in enumerate(NLVR1_EXAMPLES):
        records.append({"sentence": sentence, "label": label, "identifier": identifier, "directory": directory,
                        "evals": {"r0": label}, "structured_rep": [[], [], []]})
        for k in range(6):
            image = Image.new("RGBA", (40, 10), nlvr1_color(i, k) + (255,))
            image.putpixel((0, 0), (0, 0, 0, 0))
            path = root / "test" / "images" / directory / f"test-{identifier}-{k}.png"
            os.makedirs(path.parent, exist_ok=True)
            image.save(path)
    dump_json_lines(root / "test" / "test.json", records)
    return root


def decode(data):
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_nlvr1_vqa_rows(nlvr1_root, tmp_path):
    out = tmp_path / "out"
    counts = nlvr1.make_arrow(str(nlvr1_root), str(out), split="test", image_index=2, show_progress=False)
    assert counts == {"nlvr1_test.arrow": 5}
    table = read_arrow_table(str(out / "nlvr1_test.arrow"))
    assert table.schema == vqa.vqa_schema(test=False)
    got = table.to_pylist()
    for i, (row, (identifier, _, label, sentence)) in enumerate(zip(got, NLVR1_EXAMPLES)):
        n, m = map(int, identifier.split("-"))
        assert row["questions"] == [sentence]
        assert row["answers"] == [[label]]
        assert row["answer_labels"] == [[1 if label == "true" else 0]]
        assert row["answer_scores"] == [[1.0]]
        assert row["question_id"] == [n * 1000 + m * 10 + 2] and row["image_id"] == n * 1000 + m * 10 + 2
        assert row["split"] == "test"
        image = decode(row["image"])
        assert image.mode == "RGB" and image.size == (40, 10)
        assert image.getpixel((5, 5)) == nlvr1_color(i, 2)
        assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent pixel composited on white
    assert nlvr1.ANSWERS[1] == "true" and nlvr1.ANSWERS[0] == "false"


def test_nlvr1_all_images_limit_and_captions(nlvr1_root, tmp_path):
    out = tmp_path / "out"
    nlvr1.make_arrow(str(nlvr1_root), str(out), split="test", name="all", all_images=True, show_progress=False)
    got = rows(out / "nlvr1_all.arrow")
    assert len(got) == 30 and len({r["question_id"][0] for r in got}) == 30
    assert [decode(r["image"]).getpixel((5, 5)) for r in got[:6]] == [nlvr1_color(0, k) for k in range(6)]

    nlvr1.make_arrow(str(nlvr1_root), str(out), split="test", limit=2, show_progress=False)
    assert [r["questions"] for r in rows(out / "nlvr1_test.arrow")] == [["there is a yellow square"]] * 2

    counts = nlvr1.make_arrow(str(nlvr1_root), str(out), split="test", mode="true_captions", show_progress=False)
    assert counts == {"nlvr1_test_captions.arrow": 3}
    table = read_arrow_table(str(out / "nlvr1_test_captions.arrow"))
    assert table.schema == CAPTION_SCHEMA
    assert [(r["caption"], r["image_id"], r["split"]) for r in table.to_pylist()] == [
        (["there is a yellow square"], "test-1-0-0_1000.png", "test"),
        (["there are two towers"], "test-2-0-0_2000.png", "test"),
        (["a black circle touches the edge"], "test-3-1-0_3010.png", "test"),
    ]


@pytest.mark.parametrize("group_by", ["directory", "set"])
def test_nlvr1_train_val_cut_keeps_groups_apart(nlvr1_root, tmp_path, group_by):
    out = tmp_path / "out"
    counts = nlvr1.make_arrow(str(nlvr1_root), str(out), split="test", val_fraction=0.34, group_by=group_by,
                              all_images=True, seed=5, show_progress=False)
    assert set(counts) == {"nlvr1_test_train.arrow", "nlvr1_test_val.arrow"}
    train, val = rows(out / "nlvr1_test_train.arrow"), rows(out / "nlvr1_test_val.arrow")
    assert len(train) + len(val) == 30 and train and val
    directory = {int(i.split("-")[0]) * 1000 + int(i.split("-")[1]) * 10: d for i, d, _, _ in NLVR1_EXAMPLES}
    groups = lambda part: {directory[r["question_id"][0] // 10 * 10] for r in part}
    assert not groups(train) & groups(val)
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in val} == {"val"}
    again = tmp_path / "again"
    nlvr1.make_arrow(str(nlvr1_root), str(again), split="test", val_fraction=0.34, group_by=group_by,
                     all_images=True, seed=5, show_progress=False)
    assert rows(again / "nlvr1_test_val.arrow") == val


def test_nlvr1_group_split_never_puts_a_folder_or_sentence_set_on_both_sides():
    """Like the public hidden split, some examples spread their six images over two folders: folders chained by
    such examples form one group. Checked for many seeds and fractions against the folders and sets by hand."""
    examples = []
    for n in range(12):
        for m in range(2):
            folder = str(n % 4)
            spill = {k: (str((n + 1) % 4) if n in (2, 7) and k >= 4 else folder) for k in range(6)}
            examples.append({"identifier": f"{n}-{m}", "directory": folder, "image_folders": spill})
    # folders 2-3 are chained by example 2 and folders 3-0 by example 7: groups {0, 2, 3} and {1}
    keys = nlvr1.group_keys(examples, "directory")
    assert {frozenset(e["image_folders"].values()) | {e["directory"]} for e in examples} >= {frozenset({"2", "3"})}
    assert len(set(keys)) == 2
    for group_by in ("directory", "set"):
        for seed in range(8):
            for fraction in (0.2, 0.5, 0.8):
                train, val = nlvr1.split_by_group(examples, fraction, seed=seed, group_by=group_by)
                assert train and val and len(train) + len(val) == len(examples)
                folders = lambda part: {f for e in part for f in e["image_folders"].values()}
                sets = lambda part: {e["identifier"].split("-")[0] for e in part}
                assert not sets(train) & sets(val)
                if group_by == "directory":
                    assert not folders(train) & folders(val)


def test_nlvr1_errors(nlvr1_root, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(RawDataError, match=r"hidden"):
        nlvr1.make_arrow(str(nlvr1_root), out, split="hidden", show_progress=False)
    os.remove(nlvr1_root / "test" / "images" / "2" / "test-3-1-0.png")
    with pytest.raises(RawDataError, match=r"test-3-1-0\.png"):
        nlvr1.make_arrow(str(nlvr1_root), out, split="test", show_progress=False)
    assert not os.path.exists(os.path.join(out, "nlvr1_test.arrow"))
    records = [json.loads(line) for line in (nlvr1_root / "test" / "test.json").read_text().splitlines()]
    del records[1]["label"]
    dump_json_lines(nlvr1_root / "test" / "test.json", records)
    with pytest.raises(RawDataError, match=r"test\.json: example 1-1 has no field 'label'"):
        nlvr1.make_arrow(str(nlvr1_root), out, split="test", show_progress=False)


@pytest.mark.skipif(not os.path.isdir(NLVR1_ROOT), reason="real NLVR corpus not present at ../shared/data/nlvr1")
def test_nlvr1_real_test_split(tmp_path):
    out = tmp_path / "out"
    with open(os.path.join(NLVR1_ROOT, "test", "test.json")) as fp:
        first = [json.loads(next(fp)) for _ in range(4)]
    nlvr1.make_arrow(NLVR1_ROOT, str(out), split="test", limit=4, show_progress=False)
    got = rows(out / "nlvr1_test.arrow")
    assert [r["questions"][0] for r in got] == [e["sentence"] for e in first]
    assert [r["answers"][0][0] for r in got] == [e["label"] for e in first]
    assert all(decode(r["image"]).mode == "RGB" and decode(r["image"]).size == (400, 100) for r in got)
    counts = nlvr1.make_arrow(NLVR1_ROOT, str(out), split="test", limit=4, mode="true_captions", show_progress=False)
    assert counts == {"nlvr1_test_captions.arrow": sum(e["label"] == "true" for e in first)}


# ---------------------------------------------------------------------------------------------------------------
# Command lines and upstream-named entry points
# ---------------------------------------------------------------------------------------------------------------


def test_cli_reports_missing_input(tmp_path, capsys):
    assert f30k_karpathy.main([str(tmp_path / "nowhere"), str(tmp_path / "out"), "--no-progress"]) == 1
    assert "dataset_flickr30k.json" in capsys.readouterr().err


def test_upstream_entry_points(nlvr1_root, tmp_path):
    for name, module in (("vqa", vqa), ("nlvr2", nlvr2), ("f30k_karpathy", f30k_karpathy),
                         ("coco_karpathy", coco_karpathy), ("nlvr1", nlvr1)):
        path = os.path.join(REPO, "ViLT", "vilt", "utils", f"write_{name}.py")
        spec = importlib.util.spec_from_file_location(f"upstream_write_{name}", path)
        entry = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(entry)
        assert entry.make_arrow is module.make_arrow and entry.main is module.main
    script = os.path.join(REPO, "ViLT", "vilt", "utils", "write_nlvr1.py")
    result = subprocess.run([sys.executable, script, str(nlvr1_root), str(tmp_path / "out"), "--split", "test",
                             "--no-progress"], capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert len(rows(tmp_path / "out" / "nlvr1_test.arrow")) == 5


def test_nlvr1_split_without_directory_field_finds_its_image_folders(nlvr1_root, tmp_path):
    """NLVR's public ``hidden`` split has no ``directory`` field: the folder is found from the images."""
    path = nlvr1_root / "test" / "test.json"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    want = [r.pop("directory") for r in records]
    dump_json_lines(path, records)
    examples = nlvr1.load_examples(str(nlvr1_root), "test")
    assert [e["directory"] for e in examples] == want
    nlvr1.make_arrow(str(nlvr1_root), str(tmp_path / "o"), split="test", show_progress=False)
    records[0]["identifier"] = "999-0"
    dump_json_lines(path, records)
    with pytest.raises(RawDataError, match=r"no 'directory' field and no image test-999-0-<k>\.png"):
        nlvr1.load_examples(str(nlvr1_root), "test")


@pytest.mark.skipif(not os.path.isdir(NLVR1_ROOT), reason="real NLVR corpus not present at ../shared/data/nlvr1")
def test_nlvr1_real_hidden_split_writes(tmp_path):
    counts = nlvr1.make_arrow(NLVR1_ROOT, str(tmp_path), split="hidden", limit=3, show_progress=False)
    assert counts == {"nlvr1_hidden.arrow": 3}


# NLVR's hidden split spreads the six permutations of one identifier over two image folders (as hidden-3291-2 does)
SPREAD_LAYOUT = {"1-0": ["0"] * 6, "2-0": ["0"] * 4 + ["1"] * 2, "3-0": ["2"] * 6, "4-0": ["3"] * 3 + ["2"] * 3}


@pytest.fixture
def spread_root(tmp_path):
    """A ``hidden`` split without ``directory`` fields whose permutations sit in the folders of SPREAD_LAYOUT;
    image k of example i is filled with nlvr1_color(i, k)."""
    root = tmp_path / "nlvr"
    records = []
    for i, (identifier, folders) in enumerate(SPREAD_LAYOUT.items()):
        records.append({"sentence": f"sentence {i}", "label": "true" if i % 2 else "false", "identifier": identifier})
        for k, folder in enumerate(folders):
            path = root / "hidden" / "images" / folder / f"hidden-{identifier}-{k}.png"
            os.makedirs(path.parent, exist_ok=True)
            Image.new("RGBA", (40, 10), nlvr1_color(i, k) + (255,)).save(path)
    dump_json_lines(root / "hidden" / "hidden.json", records)
    return root


def test_nlvr1_images_found_by_file_name_across_folders(spread_root, tmp_path):
    out = tmp_path / "out"
    counts = nlvr1.make_arrow(str(spread_root), str(out), split="hidden", name="hidden_train", all_images=True,
                              show_progress=False)
    assert counts == {"nlvr1_hidden_train.arrow": 24}
    got = rows(out / "nlvr1_hidden_train.arrow")
    assert [decode(r["image"]).getpixel((5, 5)) for r in got] == [nlvr1_color(i, k) for i in range(4)
                                                                  for k in range(6)]
    assert [r["question_id"][0] for r in got] == [n * 1000 + k for n in (1, 2, 3, 4) for k in range(6)]


def test_nlvr1_directory_cut_keeps_every_folder_on_one_side(spread_root, tmp_path):
    out = tmp_path / "out"
    nlvr1.make_arrow(str(spread_root), str(out), split="hidden", val_fraction=0.5, all_images=True, seed=1,
                     show_progress=False)
    folder_of = {n * 1000 + k: SPREAD_LAYOUT[f"{n}-0"][k] for n in (1, 2, 3, 4) for k in range(6)}
    train = {folder_of[r["question_id"][0]] for r in rows(out / "nlvr1_hidden_train.arrow")}
    val = {folder_of[r["question_id"][0]] for r in rows(out / "nlvr1_hidden_val.arrow")}
    assert train and val and not train & val and train | val == {"0", "1", "2", "3"}
    # folders 0 and 1 share example 2-0, folders 2 and 3 share 4-0: two groups, one per side
    assert {frozenset(train), frozenset(val)} == {frozenset({"0", "1"}), frozenset({"2", "3"})}


def test_nlvr1_image_in_two_folders_is_an_error(spread_root, tmp_path):
    src = spread_root / "hidden" / "images" / "0" / "hidden-1-0-0.png"
    os.makedirs(spread_root / "hidden" / "images" / "9")
    (spread_root / "hidden" / "images" / "9" / "hidden-1-0-0.png").write_bytes(src.read_bytes())
    with pytest.raises(RawDataError, match=r"NLVR image hidden-1-0-0\.png is in two folders: .*images/0 and "
                                           r".*images/9"):
        nlvr1.make_arrow(str(spread_root), str(tmp_path / "out"), split="hidden", show_progress=False)


@pytest.mark.skipif(not os.path.isdir(NLVR1_ROOT), reason="real NLVR corpus not present at ../shared/data/nlvr1")
def test_nlvr1_real_hidden_split_as_a_training_split(tmp_path, tokenizer):
    """hidden-3291-2-0..3.png are in images/0/, -4 and -5 in images/1/ (example 165 of hidden.json)."""
    from shared_apt.vl.data.datasets import NLVR1Dataset

    out = tmp_path / "out"
    counts = nlvr1.make_arrow(NLVR1_ROOT, str(out), split="hidden", name="hidden", limit=170, image_index=5,
                              val_fraction=0.2, group_by="set", seed=0, show_progress=False)
    assert sum(counts.values()) == 170 and set(counts) == {"nlvr1_hidden_train.arrow", "nlvr1_hidden_val.arrow"}
    got = {r["question_id"][0]: r for name in counts for r in rows(out / name)}
    with Image.open(os.path.join(NLVR1_ROOT, "hidden", "images", "1", "hidden-3291-2-5.png")) as raw:
        rgba = raw.convert("RGBA")
    want = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    assert decode(got[3291025]["image"]).tobytes() == want.tobytes()
    with pytest.raises(RawDataError, match=r"only 1 group\(s\).*group_by='set'"):
        nlvr1.make_arrow(NLVR1_ROOT, str(out), split="hidden", limit=170, val_fraction=0.2, show_progress=False)
    ds = NLVR1Dataset(str(out), ["pixelbert"], split="train", names=["nlvr1_hidden_train", "nlvr1_hidden_val"],
                      image_size=128, max_text_len=16, tokenizer=tokenizer)
    assert len(ds) == 170
    sample = ds[0]
    assert sample["vqa_labels"] in ([0], [1]) and sample["image"][0].shape[0] == 3
