"""Fixtures of the data-pipeline tests: a WordPiece tokenizer trained here, small images, tiny arrow tables in the
upstream schemas (docs/backbones.md, ViLT) written with shared_apt.vl.data.arrow.write_arrow_table."""
from __future__ import annotations

import io
import os

import pyarrow as pa
import pytest
from PIL import Image

from shared_apt.vl.data.arrow import write_arrow_table
from shared_apt.vl.data.text import get_tokenizer, train_wordpiece_tokenizer

CORPUS = [
    "a man is riding a horse on the beach",
    "two dogs are playing with a red frisbee in the park",
    "a woman holds an umbrella in the rain",
    "there are three cats sleeping on a sofa",
    "the left image contains exactly two birds",
    "a child eats an ice cream cone outside",
    "is there a dog in the picture",
    "what color is the umbrella",
    "how many cats are on the sofa",
    "the right image shows a horse near the water",
]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tokenizer"))
    train_wordpiece_tokenizer(CORPUS * 3, folder, vocab_size=160, min_frequency=1)
    return folder


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return get_tokenizer(tokenizer_dir)


def image_bytes(width: int, height: int, color=(200, 30, 60), fmt: str = "PNG") -> bytes:
    """Encoded bytes of a `width` x `height` image: a solid colour with a bright top-left pixel."""
    img = Image.new("RGB", (width, height), color)
    img.putpixel((0, 0), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


CORRUPT_IMAGE = b"\x89PNG\r\n\x1a\n this is not an image"


@pytest.fixture
def make_image():
    return image_bytes


def write_vqa_table(path, rows, test=False):
    """rows: (image bytes, questions, answers, labels, scores, question ids)."""
    if test:
        answers_t = labels_t = scores_t = pa.list_(pa.null())
    else:
        answers_t = pa.list_(pa.list_(pa.string()))
        labels_t = pa.list_(pa.list_(pa.int64()))
        scores_t = pa.list_(pa.list_(pa.float64()))
    schema = pa.schema([
        ("image", pa.binary()), ("questions", pa.list_(pa.string())), ("answers", answers_t),
        ("answer_labels", labels_t), ("answer_scores", scores_t), ("image_id", pa.int64()),
        ("question_id", pa.list_(pa.int64())), ("split", pa.string()),
    ])
    cols = {
        "image": [r[0] for r in rows], "questions": [r[1] for r in rows],
        "answers": [[] if test else r[2] for r in rows], "answer_labels": [[] if test else r[3] for r in rows],
        "answer_scores": [[] if test else r[4] for r in rows], "image_id": list(range(len(rows))),
        "question_id": [r[5] for r in rows], "split": ["test" if test else "train"] * len(rows),
    }
    write_arrow_table(pa.table(cols, schema=schema), str(path))


def write_caption_table(path, rows, split="train"):
    """rows: (image bytes, captions, image_id string)."""
    schema = pa.schema([("image", pa.binary()), ("caption", pa.list_(pa.string())), ("image_id", pa.string()),
                        ("split", pa.string())])
    cols = {"image": [r[0] for r in rows], "caption": [r[1] for r in rows], "image_id": [r[2] for r in rows],
            "split": [split] * len(rows)}
    write_arrow_table(pa.table(cols, schema=schema), str(path))


def write_nlvr2_table(path, rows):
    """rows: (image_0 bytes, image_1 bytes, sentences, answers "True"/"False", identifier)."""
    schema = pa.schema([("image_0", pa.binary()), ("image_1", pa.binary()), ("questions", pa.list_(pa.string())),
                        ("answers", pa.list_(pa.string())), ("identifier", pa.string())])
    cols = {"image_0": [r[0] for r in rows], "image_1": [r[1] for r in rows], "questions": [r[2] for r in rows],
            "answers": [r[3] for r in rows], "identifier": [r[4] for r in rows]}
    write_arrow_table(pa.table(cols, schema=schema), str(path))


@pytest.fixture
def writers():
    class W:
        vqa = staticmethod(write_vqa_table)
        caption = staticmethod(write_caption_table)
        nlvr2 = staticmethod(write_nlvr2_table)
        image = staticmethod(image_bytes)
        corrupt = CORRUPT_IMAGE

    return W


@pytest.fixture
def vqa_root(tmp_path):
    """vqav2_train (2 images, 3 questions), vqav2_trainable_val (1 image), vqav2_rest_val, vqav2_test."""
    a, b, c = image_bytes(96, 64), image_bytes(64, 128, (10, 200, 10)), image_bytes(80, 80, (0, 0, 250))
    write_vqa_table(tmp_path / "vqav2_train.arrow", [
        (a, ["what color is the umbrella", "is there a dog"], [["red", "blue"], ["yes"]], [[0, 1], [2]],
         [[1.0, 0.3], [0.9]], [11, 12]),
        (b, ["how many cats"], [["3"]], [[3]], [[0.6]], [21]),
    ])
    write_vqa_table(tmp_path / "vqav2_trainable_val.arrow", [
        (c, ["is there a horse"], [["no"]], [[4]], [[1.0]], [31]),
    ])
    write_vqa_table(tmp_path / "vqav2_rest_val.arrow", [
        (a, ["what color is the umbrella"], [["red"]], [[0]], [[1.0]], [41]),
    ])
    write_vqa_table(tmp_path / "vqav2_test.arrow", [
        (b, ["how many cats", "is there a dog"], None, None, None, [51, 52]),
    ], test=True)
    return str(tmp_path)


@pytest.fixture
def f30k_root(tmp_path):
    imgs = [image_bytes(96, 64), image_bytes(64, 128), image_bytes(70, 90), image_bytes(128, 64)]
    write_caption_table(tmp_path / "f30k_caption_karpathy_train.arrow", [
        (imgs[0], ["a man is riding a horse", "a man is riding a horse", "a man on a horse"], "1.jpg"),
        (imgs[1], ["two dogs are playing"], "2.jpg"),
    ])
    write_caption_table(tmp_path / "f30k_caption_karpathy_val.arrow", [
        (imgs[2], ["a woman holds an umbrella"], "3.jpg"),
    ], split="val")
    write_caption_table(tmp_path / "f30k_caption_karpathy_test.arrow", [
        (imgs[3], ["three cats sleeping", "cats on a sofa"], "4.jpg"),
        (imgs[0], ["a horse on the beach"], "5.jpg"),
    ], split="test")
    return str(tmp_path)


@pytest.fixture
def data_config(tokenizer_dir):
    def make(root, datasets, **kw):
        cfg = {
            "data_root": root, "datasets": datasets, "num_workers": 0, "per_gpu_batchsize": 2, "image_size": 64,
            "max_text_len": 12, "draw_false_image": 0, "draw_false_text": 0, "image_only": False,
            "tokenizer": tokenizer_dir, "whole_word_masking": False, "mlm_prob": 0.15,
            "train_transform_keys": ["pixelbert"], "val_transform_keys": ["pixelbert"],
        }
        cfg.update(kw)
        return cfg

    return make


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
