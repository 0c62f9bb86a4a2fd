"""VQAv2 raw download -> ``vqav2_<split>.arrow`` (re-implements upstream ViLT ``vilt/utils/write_vqa.py``).

Raw layout under `root` (the official VQAv2 files next to the COCO image folders)::

    v2_OpenEnded_mscoco_train2014_questions.json   v2_mscoco_train2014_annotations.json   train2014/*.jpg
    v2_OpenEnded_mscoco_val2014_questions.json     v2_mscoco_val2014_annotations.json     val2014/*.jpg
    v2_OpenEnded_mscoco_test2015_questions.json                                           test2015/*.jpg
    v2_OpenEnded_mscoco_test-dev2015_questions.json

Output under `dataset_root`: ``vqav2_train``, ``vqav2_val``, ``vqav2_trainable_val``, ``vqav2_rest_val``,
``vqav2_test``, ``vqav2_test-dev`` (.arrow), one row per image, plus ``vqa_dict.json`` (``{"<id>": answer}``).

Reproduced upstream behaviour:

* answer vocabulary: ``normalize_word`` of every ``multiple_choice_answer`` of train2014 then val2014 (file order),
  kept when it occurs >= 9 times, class id = order of first appearance;
* per question: count each distinct RAW ``answers[*].answer`` string (not normalised); every one that is a vocabulary
  key gets label = its id, score = 0.3 x count capped at 1.0, in first-occurrence order
  (:func:`shared_apt.vl.data.vqa.labels_and_scores`);
* train/val questions with no label are dropped, then images with no question left;
* ``vqav2_trainable_val`` = ``vqav2_val`` without its last 1000 rows, ``vqav2_rest_val`` = those 1000 rows;
* test / test-dev rows carry empty ``answers``/``answer_labels``/``answer_scores`` lists of arrow type list<null>;
  test-dev images are the test2015 images that have test-dev questions.

Differences: rows are streamed (bounded record batches), the image order is a seeded shuffle instead of an unseeded
one, and an image that questions need but that is not on disk is an error (upstream dropped it silently; pass
``allow_missing_images`` to skip it with a warning).
"""
from __future__ import annotations

import argparse
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa

from shared_apt.peft.atomic import atomic_write_json
from shared_apt.vl.data.vqa import build_answer_vocabulary, labels_and_scores
from shared_apt.vl.data.writers.common import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    ImageSource,
    RawDataError,
    add_common_arguments,
    check_missing_images,
    load_json,
    open_arrow_writers,
    progress,
    read_image_bytes,
    require_dir,
    require_field,
    require_list_field,
    run_cli,
    seeded_shuffle,
)

SPLITS = ("train", "val", "test", "test-dev")
TEST_SPLITS = ("test", "test-dev")
QUESTION_FILES = {
    "train": "v2_OpenEnded_mscoco_train2014_questions.json",
    "val": "v2_OpenEnded_mscoco_val2014_questions.json",
    "test": "v2_OpenEnded_mscoco_test2015_questions.json",
    "test-dev": "v2_OpenEnded_mscoco_test-dev2015_questions.json",
}
ANNOTATION_FILES = {
    "train": "v2_mscoco_train2014_annotations.json",
    "val": "v2_mscoco_val2014_annotations.json",
}
IMAGE_FOLDERS = {"train": "train2014", "val": "val2014", "test": "test2015", "test-dev": "test2015"}
DEFAULT_MIN_ANSWER_COUNT = 9
DEFAULT_REST_VAL_SIZE = 1000
VQA_DICT_NAME = "vqa_dict.json"


def vqa_schema(test: bool = False) -> pa.Schema:
    """Columns of ``vqav2_<split>.arrow``; test splits hold empty answer lists, typed list<null> as upstream's."""
    if test:
        answers, labels, scores = pa.list_(pa.null()), pa.list_(pa.null()), pa.list_(pa.null())
    else:
        answers = pa.list_(pa.list_(pa.string()))
        labels = pa.list_(pa.list_(pa.int64()))
        scores = pa.list_(pa.list_(pa.float64()))
    return pa.schema(
        [
            ("image", pa.binary()),
            ("questions", pa.list_(pa.string())),
            ("answers", answers),
            ("answer_labels", labels),
            ("answer_scores", scores),
            ("image_id", pa.int64()),
            ("question_id", pa.list_(pa.int64())),
            ("split", pa.string()),
        ]
    )


# ---------------------------------------------------------------------------------------------------------------
# Answer vocabulary (normalisation, counting and soft scores live in shared_apt.vl.data.vqa)
# ---------------------------------------------------------------------------------------------------------------


def multiple_choice_answers(annotations: Sequence[Mapping], source: str) -> List[str]:
    """Every ``multiple_choice_answer`` of an annotation list, in file order."""
    return [
        require_field(a, "multiple_choice_answer", f"annotation file {source}: {_annotation_name(a, i)}")
        for i, a in enumerate(annotations)
    ]


def answer_vocabulary(
    annotation_lists: Sequence[Tuple[str, Sequence[Mapping]]], min_count: int = DEFAULT_MIN_ANSWER_COUNT
) -> Tuple[Dict[str, int], List[str]]:
    """(ans2label, label2ans) from (source name, annotations) pairs, in order (upstream: train2014 then val2014).

    Normalised ``multiple_choice_answer`` values seen >= `min_count` times, ids in order of first appearance
    (:func:`shared_apt.vl.data.vqa.build_answer_vocabulary`).
    """
    ans2label = build_answer_vocabulary(
        chain.from_iterable(multiple_choice_answers(annotations, source) for source, annotations in annotation_lists),
        min_count,
    )
    return ans2label, list(ans2label)


# ---------------------------------------------------------------------------------------------------------------
# Question index: image id -> questions of that image
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class VqaQuestion:
    """One question of an image; labels/scores stay None until its annotation is attached (never for test)."""

    question_id: int
    question: str
    labels: Optional[List[int]] = None
    scores: Optional[List[float]] = None


QuestionIndex = "OrderedDict[int, OrderedDict[int, VqaQuestion]]"


def _annotation_name(record: Mapping, i: int) -> str:
    qid = record.get("question_id") if isinstance(record, Mapping) else None
    return f"question {qid}" if qid is not None else f"entry {i}"


def index_questions(questions_file: Mapping, source: str) -> QuestionIndex:
    """Group a questions file's ``questions`` by image id, both levels in file order (upstream ``_annot``)."""
    index: QuestionIndex = OrderedDict()
    for i, q in enumerate(require_list_field(questions_file, "questions", f"question file {source}")):
        where = f"question file {source}: {_annotation_name(q, i)}"
        image_id = int(require_field(q, "image_id", where))
        question_id = int(require_field(q, "question_id", where))
        text = require_field(q, "question", where)
        index.setdefault(image_id, OrderedDict())[question_id] = VqaQuestion(question_id, text)
    return index


def attach_answers(
    index: QuestionIndex, annotations: Sequence[Mapping], ans2label: Mapping[str, int], source: str
) -> None:
    """Set labels/scores of every question from its annotation's raw answers; every question needs one."""
    for i, a in enumerate(annotations):
        where = f"annotation file {source}: {_annotation_name(a, i)}"
        image_id = int(require_field(a, "image_id", where))
        question_id = int(require_field(a, "question_id", where))
        raw = [
            require_field(r, "answer", f"{where}, answers[{j}]")
            for j, r in enumerate(require_list_field(a, "answers", where))
        ]
        question = index.get(image_id, {}).get(question_id)
        if question is None:
            raise RawDataError(f"{where} (image {image_id}) is not in the matching question file")
        question.labels, question.scores = labels_and_scores(raw, ans2label)
    for image_id, questions in index.items():
        for question in questions.values():
            if question.labels is None:
                raise RawDataError(
                    f"annotation file {source} has no annotation for question {question.question_id} (image {image_id})"
                )


def drop_unanswerable(index: QuestionIndex) -> QuestionIndex:
    """Drop questions without a vocabulary label, then images left without questions (upstream filtering)."""
    kept: QuestionIndex = OrderedDict()
    for image_id, questions in index.items():
        answerable = OrderedDict((qid, q) for qid, q in questions.items() if q.labels)
        if answerable:
            kept[image_id] = answerable
    return kept


def vqa_row(
    image: ImageSource,
    image_id: int,
    questions: Iterable[VqaQuestion],
    split: str,
    label2ans: Sequence[str],
    test: Optional[bool] = None,
) -> dict:
    """One row of ``vqav2_<split>.arrow`` (upstream ``path2rest``); answer columns are empty lists for test rows
    (default: `split` is "test" or "test-dev")."""
    questions = list(questions)
    if test is None:
        test = split in TEST_SPLITS
    return {
        "image": read_image_bytes(image, f"image {image_id}"),
        "questions": [q.question for q in questions],
        "answers": [] if test else [[label2ans[label] for label in q.labels] for q in questions],
        "answer_labels": [] if test else [list(q.labels) for q in questions],
        "answer_scores": [] if test else [list(q.scores) for q in questions],
        "image_id": image_id,
        "question_id": [q.question_id for q in questions],
        "split": split,
    }


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def split_targets(dataset_root: str, split: str) -> Dict[str, Tuple[str, pa.Schema]]:
    """Output files of one split: ``vqav2_<split>.arrow``, plus trainable_val and rest_val for val."""
    names = ["val", "trainable_val", "rest_val"] if split == "val" else [split]
    schema = vqa_schema(split in TEST_SPLITS)
    return {name: (os.path.join(dataset_root, f"vqav2_{name}.arrow"), schema) for name in names}


def write_vqa_split(
    dataset_root: str,
    split: str,
    images: Sequence[Tuple[int, ImageSource]],
    index: QuestionIndex,
    label2ans: Sequence[str],
    rest_val_size: int = DEFAULT_REST_VAL_SIZE,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    show_progress: bool = True,
) -> Dict[str, int]:
    """Stream the rows of `images` ((image_id, image) in output order) into the split's arrow file(s).

    For ``val`` the same pass also writes ``vqav2_trainable_val`` (all rows but the last `rest_val_size`) and
    ``vqav2_rest_val`` (the last `rest_val_size` rows), as upstream's ``pdtable[:-1000]`` / ``pdtable[-1000:]``.
    Returns rows written per file key.
    """
    trainable = max(0, len(images) - rest_val_size)
    with open_arrow_writers(split_targets(dataset_root, split), batch_rows, batch_bytes) as writers:
        rows = progress(images, f"vqav2_{split}", len(images), show_progress)
        for position, (image_id, image) in enumerate(rows):
            row = vqa_row(image, image_id, index[image_id].values(), split, label2ans)
            writers[split].append(row)
            if split == "val":
                writers["trainable_val" if position < trainable else "rest_val"].append(row)
    return {name: w.rows_written for name, w in writers.items()}


_IMAGE_ID = re.compile(r"_(\d+)\.jpg$")


def index_coco_images(folder: str) -> Dict[int, str]:
    """COCO image id -> path for ``<folder>/*.jpg`` (id = digits after the last "_", as upstream parses it)."""
    require_dir(folder, "VQA image folder")
    index: Dict[int, str] = {}
    for name in os.listdir(folder):
        if not name.endswith(".jpg"):
            continue
        m = _IMAGE_ID.search(name)
        if m is None:
            raise RawDataError(f"VQA image folder {folder}: cannot parse a COCO image id from file name {name!r}")
        index[int(m.group(1))] = os.path.join(folder, name)
    return index


def write_vqa_dict(dataset_root: str, label2ans: Sequence[str]) -> str:
    """``vqa_dict.json``: ``{"<class id>": answer}``, the format of upstream's released id->answer file."""
    path = os.path.join(dataset_root, VQA_DICT_NAME)
    atomic_write_json(path, {str(i): answer for i, answer in enumerate(label2ans)}, ensure_ascii=False)
    return path


def make_arrow(
    root: str,
    dataset_root: str,
    seed: Optional[int] = 0,
    min_answer_count: int = DEFAULT_MIN_ANSWER_COUNT,
    rest_val_size: int = DEFAULT_REST_VAL_SIZE,
    splits: Sequence[str] = SPLITS,
    allow_missing_images: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    show_progress: bool = True,
) -> Dict[str, int]:
    """Write the VQAv2 arrow files of `splits` and ``vqa_dict.json``; return the row count per written file.

    The vocabulary always comes from both train and val annotation files, whichever splits are written.
    """
    splits = list(dict.fromkeys(splits))
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown VQAv2 split(s) {unknown}; choose from {list(SPLITS)}")
    annotations = {}
    for split, name in ANNOTATION_FILES.items():
        path = os.path.join(root, name)
        data = load_json(path, "annotation file")
        annotations[split] = require_list_field(data, "annotations", f"annotation file {path}")
    ans2label, label2ans = answer_vocabulary(
        [(os.path.join(root, name), annotations[split]) for split, name in ANNOTATION_FILES.items()], min_answer_count
    )
    write_vqa_dict(dataset_root, label2ans)

    counts: Dict[str, int] = {}
    for split in splits:
        question_path = os.path.join(root, QUESTION_FILES[split])
        index = index_questions(load_json(question_path, "question file"), question_path)
        if split in ANNOTATION_FILES:
            attach_answers(index, annotations[split], ans2label, os.path.join(root, ANNOTATION_FILES[split]))
            annotations[split] = None  # free the raw annotations early
            index = drop_unanswerable(index)
        folder = os.path.join(root, IMAGE_FOLDERS[split])
        files = index_coco_images(folder)
        missing = [f"image_id {i} ({folder}/COCO_{IMAGE_FOLDERS[split]}_{i:012d}.jpg)" for i in index if i not in files]
        check_missing_images(missing, f"{question_path} (looked in {folder})", allow_missing_images)
        order = seeded_shuffle((i for i in index if i in files), seed)
        counts.update(
            write_vqa_split(
                dataset_root, split, [(i, files[i]) for i in order], index, label2ans,
                rest_val_size, batch_rows, batch_bytes, show_progress,
            )
        )
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m shared_apt.vl.data.writers.vqa ROOT DATASET_ROOT [--seed 0] [--min-answer-count 9] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--min-answer-count", type=int, default=DEFAULT_MIN_ANSWER_COUNT,
                        help="vocabulary threshold on normalised multiple_choice_answer counts (default 9)")
    parser.add_argument("--rest-val-size", type=int, default=DEFAULT_REST_VAL_SIZE,
                        help="last val rows moved to vqav2_rest_val (default 1000)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to write")
    args = parser.parse_args(argv)
    return run_cli(lambda: print(make_arrow(
        args.root, args.dataset_root, seed=args.seed, min_answer_count=args.min_answer_count,
        rest_val_size=args.rest_val_size, splits=args.splits, allow_missing_images=args.allow_missing_images,
        batch_rows=args.batch_rows, show_progress=not args.no_progress,
    )))


if __name__ == "__main__":
    raise SystemExit(main())
