"""Arrow-backed datasets of upstream ViLT / METER (vilt/datasets, docs/backbones.md, ViLT, docs/backbones.md, METER).

:class:`BaseDataset` keeps upstream's constructor, sample index and collate. Subclasses carry upstream's class names,
arrow file names and split tables (``split_names``; a backbone passes its own, e.g. METER's ``meter.config.METER_VQA_SPLITS``). Every table is
read with :func:`shared_apt.vl.data.arrow.read_arrow_table`, so a missing or corrupt file raises
:class:`~shared_apt.vl.data.arrow.ArrowFileError` naming the path (upstream skipped missing files silently). On opening,
every file of a split is also checked against what its dataset class reads (:meth:`BaseDataset.required_columns`:
the columns, their types, no nulls; :meth:`BaseDataset.check_table`: per-row list lengths and value ranges), and all
files of a split must have the same columns and types: a column missing from one of two training files is an error
naming that file and column (upstream's ``concat_tables`` filled it with nulls).

Deliberate deviations from upstream:

* A sample whose image cannot be decoded is NOT replaced by a random other sample (upstream's silent retry). The
  dataset logs the table name and row and ``__getitem__`` returns a :class:`BadSample` marker;
  :meth:`BaseDataset.collate` drops the markers and records them in the batch (``batch["bad_images"]``: the
  (table, row, column) of each, ``batch["samples_read"]``: samples the batch was made of; a batch of only bad
  samples has no other keys, see :func:`is_empty_batch`). Counting therefore happens where the batches arrive, in
  the main process, whatever the number of DataLoader workers: :mod:`shared_apt.vl.data.bad_images` sums over workers
  and processes, applies ``max_bad_image_fraction`` to the total and reports at the end of every fit and
  evaluation. A random NEGATIVE image (``false_image_i``) that fails is logged, counted separately and redrawn,
  which is the same distribution as upstream's retry.
* Caption de-duplication keeps first-appearance order (upstream's ``list(set(...))`` order changed between runs).
"""
from __future__ import annotations

import bisect
import io
import logging
import os
import random
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from .arrow import ArrowFileError, read_arrow_table
from .transforms import image_mode_for_keys, keys_to_transforms

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_KEY = re.compile(r"^(false_)?image(_\d+)?$")
TEXT_KEY = re.compile(r"^(false_)?text(_\d+)?$")


class BadImageError(RuntimeError):
    """An image cell could not be decoded; carries the table name and the row inside that table."""

    def __init__(self, table: str, row: int, column: str, cause: BaseException):
        self.table, self.row, self.column, self.cause = table, row, column, cause
        super().__init__(f"cannot decode image column {column!r} of row {row} in table {table!r}: "
                         f"{type(cause).__name__}: {cause}")


class TooManyBadImagesError(RuntimeError):
    """More undecodable images than ``max_bad_image_fraction`` allows."""


class BadSample:
    """What ``__getitem__`` returns for a sample whose image cannot be decoded (collate drops and counts it)."""

    __slots__ = ("table", "row", "column", "message")

    def __init__(self, table: str, row: int, column: str, message: str):
        self.table, self.row, self.column, self.message = table, row, column, message

    def __repr__(self) -> str:
        return f"BadSample({self.table!r}, {self.row}, {self.column!r})"

    def __reduce__(self):
        return (BadSample, (self.table, self.row, self.column, self.message))


#: batch keys of the bad-image accounting (see the module docstring)
BAD_IMAGES_KEY = "bad_images"
SAMPLES_READ_KEY = "samples_read"


def is_empty_batch(batch) -> bool:
    """True for a batch without samples (every sample of it had an undecodable image)."""
    return batch is None or (isinstance(batch, dict) and not (set(batch) - {BAD_IMAGES_KEY, SAMPLES_READ_KEY}))


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _list_of(pred):
    return lambda t: _is_list(t) and pred(t.value_type)


BINARY = (_binary, "binary")
STRING = (_string, "string")
LIST_OF_STRING = (_list_of(_string), "list<string>")
LIST_OF_INT = (_list_of(pa.types.is_integer), "list<int64>")
# VQA answer columns: per question a list (test tables: list<null>, empty lists)
ANSWERS_TYPE = (lambda t: _is_list(t) and (pa.types.is_null(t.value_type) or _list_of(_string)(t.value_type)),
                "list<list<string>> (or list<null> in test tables)")
LABELS_TYPE = (lambda t: _is_list(t) and (pa.types.is_null(t.value_type)
                                          or _list_of(pa.types.is_integer)(t.value_type)),
               "list<list<int64>> (or list<null> in test tables)")
SCORES_TYPE = (lambda t: _is_list(t) and (pa.types.is_null(t.value_type)
                                          or _list_of(pa.types.is_floating)(t.value_type)),
               "list<list<float64>> (or list<null> in test tables)")


def _list_lengths(col) -> "pa.ChunkedArray":
    return pc.list_value_length(col)


def _first_mismatch(a, b) -> Optional[int]:
    """First row where the two integer arrays differ, or None."""
    diff = pc.not_equal(a, b)
    if not pc.any(diff).as_py():
        return None
    return int(pc.index(diff, True).as_py())


class BaseDataset(torch.utils.data.Dataset):
    """Upstream ``BaseDataset``: one or more arrow tables concatenated, one sample per (image row, text) pair.

    Args (upstream's, plus `tokenizer` as in METER):
        data_dir: folder holding ``<name>.arrow``.
        transform_keys: image transform names (one image view per key), see ``transforms.keys_to_transforms``.
        image_size: size passed to the transforms.
        names: table names (file stems); empty -> an empty dataset (upstream's VG/SBU validation splits).
        text_column_name: list<string> column with the texts of each row; "" -> one sample per row, no text.
        remove_duplicate: de-duplicate each row's texts (caption datasets).
        max_text_len: tokenizer max_length (padding and truncation), includes [CLS]/[SEP].
        draw_false_image / draw_false_text: random negatives per sample (``false_image_i``, ``false_text_i``).
        image_only: one sample per row with no text (image side of retrieval evaluation).
        tokenizer: a transformers tokenizer (also settable later through the attribute, as upstream ViLT does).
        text_only: skip image decoding (text side of retrieval evaluation); not an upstream option.
    """

    split_names: Dict[str, List[str]] = {}

    def __init__(
        self,
        data_dir: str,
        transform_keys: Sequence[str],
        image_size: int,
        names: Sequence[str],
        text_column_name: str = "",
        remove_duplicate: bool = True,
        max_text_len: int = 40,
        draw_false_image: int = 0,
        draw_false_text: int = 0,
        image_only: bool = False,
        tokenizer=None,
        text_only: bool = False,
    ):
        super().__init__()
        if not transform_keys:
            raise ValueError(f"{type(self).__name__}: transform_keys must name at least one transform")
        self.transform_keys = list(transform_keys)
        self.transforms = keys_to_transforms(self.transform_keys, size=image_size)
        self.image_mode = image_mode_for_keys(self.transform_keys)
        self.image_size = image_size
        self.text_column_name = text_column_name
        self.names = list(names)
        self.max_text_len = max_text_len
        self.draw_false_image = draw_false_image
        self.draw_false_text = draw_false_text
        self.image_only = image_only
        self.text_only = text_only
        self.data_dir = data_dir
        self.tokenizer = tokenizer

        self.table: Optional[pa.Table] = None
        self.table_lengths: List[int] = []
        self._load_tables()
        self.table_offsets = [0]
        for n in self.table_lengths:
            self.table_offsets.append(self.table_offsets[-1] + n)

        self.all_texts: List[List[str]] = []
        if self.table is not None and text_column_name:
            if text_column_name not in self.table.column_names:
                raise ArrowFileError(f"tables {self.table_paths} lack the text column {text_column_name!r}; "
                                     f"they have {self.table.column_names}")
            texts = self.table[text_column_name].to_pylist()
            texts = [list(t) if t is not None else [] for t in texts]
            self.all_texts = [list(dict.fromkeys(t)) for t in texts] if remove_duplicate else texts

        self.index_mapper: List[Tuple[int, Optional[int]]] = []
        if text_column_name and not image_only:
            for row, texts in enumerate(self.all_texts):
                self.index_mapper.extend((row, j) for j in range(len(texts)))
        else:
            self.index_mapper = [(row, None) for row in range(self.num_rows)]

        self.samples_read = 0
        self.bad_samples: List[Tuple[str, int]] = []
        self.bad_false_images = 0

    # ------------------------------------------------------------------------------------------------------------
    # tables
    # ------------------------------------------------------------------------------------------------------------

    @property
    def table_paths(self) -> List[str]:
        return [os.path.join(self.data_dir, f"{name}.arrow") for name in self.names]

    def required_columns(self) -> Dict[str, Any]:
        """{column: type spec} that every file of this dataset must hold (see ``shared_apt.vl.data.arrow``)."""
        columns: Dict[str, Any] = {}
        if self.text_column_name:
            columns[self.text_column_name] = LIST_OF_STRING
        columns["image"] = BINARY
        return columns

    def check_table(self, table: pa.Table, path: str) -> None:
        """Per-row content checks beyond the column types (subclasses add theirs); ArrowFileError naming `path`."""

    def _load_tables(self, verify_digest: bool = True) -> None:
        required = self.required_columns()
        tables = []
        for path in self.table_paths:
            table = read_arrow_table(path, required, verify_digest=verify_digest)
            if tables:
                self._check_same_schema(tables[0], self.table_paths[0], table, path)
                table = table.select(tables[0].column_names)
            self.check_table(table, path)
            tables.append(table)
        self.table_lengths = [len(t) for t in tables]
        self.table = pa.concat_tables(tables) if tables else None

    @staticmethod
    def _check_same_schema(first: pa.Table, first_path: str, table: pa.Table, path: str) -> None:
        """The files of one split must have the same columns with the same types (no null-filled columns)."""
        missing = [c for c in first.column_names if c not in table.column_names]
        if missing:
            raise ArrowFileError(f"arrow file {path!r} lacks column(s) {missing} that {first_path!r} of the same "
                                 f"split has; all files of a split need the same columns")
        extra = [c for c in table.column_names if c not in first.column_names]
        if extra:
            raise ArrowFileError(f"arrow file {path!r} has column(s) {extra} that {first_path!r} of the same split "
                                 f"lacks; all files of a split need the same columns")
        for name in first.column_names:
            if table[name].type != first[name].type:
                raise ArrowFileError(f"arrow file {path!r}: column {name!r} has type {table[name].type}, but "
                                     f"{first[name].type} in {first_path!r} of the same split")

    def __getstate__(self):
        # the memory-mapped table is re-opened in the receiving process instead of being serialised
        state = self.__dict__.copy()
        state["table"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load_tables(verify_digest=False)  # verified when the dataset was built; structure is re-checked

    @property
    def num_rows(self) -> int:
        return 0 if self.table is None else len(self.table)

    def locate_row(self, row: int) -> Tuple[str, int]:
        """(table name, row inside that table) of a row of the concatenated table."""
        t = bisect.bisect_right(self.table_offsets, row) - 1
        return self.names[t], row - self.table_offsets[t]

    @property
    def table_names(self) -> List[str]:
        """Upstream's per-row table-name list."""
        return [name for name, n in zip(self.names, self.table_lengths) for _ in range(n)]

    def cell(self, column: str, row: int):
        return self.table[column][row].as_py()

    @property
    def corpus(self) -> List[str]:
        return [text for texts in self.all_texts for text in texts]

    def __len__(self) -> int:
        return len(self.index_mapper)

    # ------------------------------------------------------------------------------------------------------------
    # images and texts (upstream get_raw_image / get_image / get_false_image / get_text / get_false_text)
    # ------------------------------------------------------------------------------------------------------------

    def get_raw_image(self, index: int, image_key: str = "image") -> Image.Image:
        """Decode the image of sample `index` (RGB, or RGBA for METER's clip transforms); BadImageError if it fails."""
        row = self.index_mapper[index][0]
        try:
            data = self.table[image_key][row].as_py()
            if data is None:
                raise ValueError("the image cell is null")
            image = Image.open(io.BytesIO(data))
            return image.convert(self.image_mode)
        except KeyError:
            raise ArrowFileError(f"tables {self.table_paths} have no image column {image_key!r}; "
                                 f"they have {self.table.column_names}")
        except Exception as e:
            table, table_row = self.locate_row(row)
            raise BadImageError(table, table_row, image_key, e) from e

    def get_image(self, index: int, image_key: str = "image") -> Dict[str, Any]:
        image = self.get_raw_image(index, image_key=image_key)
        row, caption_index = self.index_mapper[index]
        return {"image": [tr(image) for tr in self.transforms], "img_index": row, "cap_index": caption_index,
                "raw_index": index}

    def get_false_image(self, rep: int, image_key: str = "image", attempts: int = 10) -> Dict[str, Any]:
        """A random image of the dataset (upstream: uniform over samples); an undecodable one is redrawn."""
        for _ in range(attempts):
            random_index = random.randint(0, len(self.index_mapper) - 1)
            try:
                image = self.get_raw_image(random_index, image_key=image_key)
            except BadImageError as e:
                self.bad_false_images += 1
                logger.warning("%s (drawn as negative image; drawing another)", e)
                continue
            return {f"false_image_{rep}": [tr(image) for tr in self.transforms]}
        raise TooManyBadImagesError(f"{attempts} random negative images in a row could not be decoded from "
                                    f"{self.table_paths}")

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__} over {self.names} has no tokenizer: pass tokenizer=... or set "
                               f"dataset.tokenizer before reading texts")
        return self.tokenizer

    def get_text(self, raw_index: int) -> Dict[str, Any]:
        row, caption_index = self.index_mapper[raw_index]
        text = self.all_texts[row][caption_index]
        encoding = self._require_tokenizer()(text, padding="max_length", truncation=True,
                                             max_length=self.max_text_len, return_special_tokens_mask=True)
        return {"text": (text, encoding), "img_index": row, "cap_index": caption_index, "raw_index": raw_index}

    def get_false_text(self, rep: int) -> Dict[str, Any]:
        random_index = random.randint(0, len(self.index_mapper) - 1)
        row, caption_index = self.index_mapper[random_index]
        text = self.all_texts[row][caption_index]
        encoding = self._require_tokenizer()(text, truncation=True, max_length=self.max_text_len,
                                             return_special_tokens_mask=True)
        return {f"false_text_{rep}": (text, encoding)}

    def get_suite(self, index: int) -> Dict[str, Any]:
        """Upstream ``get_suite`` (caption datasets), without its catch-all retry."""
        ret: Dict[str, Any] = {}
        if not self.text_only:
            ret.update(self.get_image(index))
        if not self.image_only:
            txt = self.get_text(index)
            ret["replica"] = txt["cap_index"] > 0
            ret.update(txt)
        for i in range(self.draw_false_image):
            ret.update(self.get_false_image(i))
        for i in range(self.draw_false_text):
            ret.update(self.get_false_text(i))
        return ret

    # ------------------------------------------------------------------------------------------------------------
    # sample access with the bad-image policy
    # ------------------------------------------------------------------------------------------------------------

    def get_sample(self, index: int) -> Dict[str, Any]:
        """The sample dict of `index`; subclasses override (caption datasets use ``get_suite``)."""
        return self.get_suite(index)

    def __getitem__(self, index: int) -> Union[Dict[str, Any], BadSample]:
        """The sample dict, or a :class:`BadSample` when its image cannot be decoded (counted by the caller of
        collate, see the module docstring; this process's own tally is in ``bad_samples``)."""
        self.samples_read += 1
        try:
            return self.get_sample(index)
        except BadImageError as e:
            self.bad_samples.append((e.table, e.row))
            logger.warning("skipping sample: %s", e)
            return BadSample(f"{e.table}.arrow", e.row, e.column, str(e))

    def bad_image_report(self) -> Dict[str, Any]:
        return {"samples_read": self.samples_read, "bad_samples": list(self.bad_samples),
                "bad_false_images": self.bad_false_images}

    # ------------------------------------------------------------------------------------------------------------
    # collate (docs/backbones.md, ViLT)
    # ------------------------------------------------------------------------------------------------------------

    def collate(self, batch: Sequence[Union[Dict[str, Any], BadSample]], mlm_collator) -> Dict[str, Any]:
        """Upstream ``BaseDataset.collate``: pad images top-left to one size, pad and MLM-mask every text key.

        :class:`BadSample` markers (undecodable images) are dropped first and recorded as ``batch["bad_images"]``
        ([(table file, row, column)]) with ``batch["samples_read"]`` = all samples given; a batch of only bad
        samples holds just those two keys (:func:`is_empty_batch`).
        """
        bad = [(b.table, b.row, b.column) for b in batch if isinstance(b, BadSample)]
        samples_read = len(batch)
        batch = [b for b in batch if not isinstance(b, BadSample)]
        if any(b is None for b in batch):
            raise TypeError("collate: got a None sample; undecodable images are BadSample markers")
        if not batch:
            return {BAD_IMAGES_KEY: bad, SAMPLES_READ_KEY: samples_read}
        batch_size = len(batch)
        keys = sorted({k for b in batch for k in b.keys()})
        dict_batch = {k: [b.get(k) for b in batch] for k in keys}
        dict_batch[BAD_IMAGES_KEY] = bad
        dict_batch[SAMPLES_READ_KEY] = samples_read

        img_keys = [k for k in keys if IMAGE_KEY.match(k)]
        if img_keys:
            self._collate_images(dict_batch, img_keys, batch_size)
        txt_keys = [k for k in keys if TEXT_KEY.match(k)]
        if txt_keys:
            self._collate_texts(dict_batch, txt_keys, batch_size, mlm_collator)
        return dict_batch

    @staticmethod
    def _collate_images(dict_batch: Dict[str, Any], img_keys: Sequence[str], batch_size: int) -> None:
        sizes = [v.shape for k in img_keys for views in dict_batch[k] if views is not None for v in views]
        for s in sizes:
            if len(s) != 3:
                raise ValueError(f"collate: an image should have shape (3, H, W), got {tuple(s)}")
        max_h = max(s[1] for s in sizes)
        max_w = max(s[2] for s in sizes)
        for k in img_keys:
            images = dict_batch[k]
            n_views = max(len(v) for v in images if v is not None)
            padded = [torch.zeros(batch_size, 3, max_h, max_w) for _ in range(n_views)]
            for bi, views in enumerate(images):
                if views is None:
                    continue
                for vi, v in enumerate(views):
                    padded[vi][bi, :, : v.shape[1], : v.shape[2]] = v
            dict_batch[k] = padded

    def _collate_texts(self, dict_batch, txt_keys, batch_size, mlm_collator) -> None:
        texts = [[d[0] for d in dict_batch[k]] for k in txt_keys]
        encodings = [[d[1] for d in dict_batch[k]] for k in txt_keys]
        flat = [e for per_key in encodings for e in per_key]
        mlm = mlm_collator(flat)
        mlm_ids, mlm_labels = mlm["input_ids"], mlm["labels"]
        width = max(self.max_text_len, mlm_ids.shape[1])
        if mlm_ids.shape[1] < width:
            pad = width - mlm_ids.shape[1]
            pad_id = self.tokenizer.pad_token_id if self.tokenizer is not None else 0
            mlm_ids = torch.nn.functional.pad(mlm_ids, (0, pad), value=pad_id)
            mlm_labels = torch.nn.functional.pad(mlm_labels, (0, pad), value=-100)
        for i, k in enumerate(txt_keys):
            ids = torch.zeros(batch_size, width, dtype=torch.long)  # upstream fills with 0 (docs/backbones.md, METER)
            masks = torch.zeros(batch_size, width, dtype=torch.long)
            for bi, enc in enumerate(encodings[i]):
                e_ids, e_mask = list(enc["input_ids"]), list(enc["attention_mask"])
                ids[bi, : len(e_ids)] = torch.as_tensor(e_ids, dtype=torch.long)
                masks[bi, : len(e_mask)] = torch.as_tensor(e_mask, dtype=torch.long)
            dict_batch[k] = texts[i]
            dict_batch[f"{k}_ids"] = ids
            dict_batch[f"{k}_labels"] = torch.full_like(ids, -100)
            dict_batch[f"{k}_ids_mlm"] = mlm_ids[batch_size * i: batch_size * (i + 1)]
            dict_batch[f"{k}_labels_mlm"] = mlm_labels[batch_size * i: batch_size * (i + 1)]
            dict_batch[f"{k}_masks"] = masks


def _split_tables(cls, split: str, names: Optional[Sequence[str]]) -> List[str]:
    if split not in SPLITS:
        raise ValueError(f"{cls.__name__}: split={split!r}; expected one of {SPLITS}")
    if names is not None:
        return list(names)
    return list(cls.split_names[split])


# ----------------------------------------------------------------------------------------------------------------
# Task datasets
# ----------------------------------------------------------------------------------------------------------------


class _QuestionDataset(BaseDataset):
    """Datasets with one sample per question (VQA, NLVR2): the tables come from the split (``split_names``, or
    ``names`` given), text from the ``questions`` column, duplicates kept, as upstream."""

    split_names: Dict[str, List[str]] = {}

    def __init__(self, *args, split: str = "", names: Optional[Sequence[str]] = None, **kwargs):
        self.split = split
        kwargs.pop("text_column_name", None)
        kwargs.pop("remove_duplicate", None)
        super().__init__(*args, names=_split_tables(type(self), split, names), text_column_name="questions",
                         remove_duplicate=False, **kwargs)


VILT_VQA_SPLITS = {"train": ["vqav2_train", "vqav2_trainable_val"], "val": ["vqav2_rest_val"], "test": ["vqav2_test"]}


class VQAv2Dataset(_QuestionDataset):
    """Upstream ``VQAv2Dataset``: one sample per question (duplicates kept); ViLT tables by default.

    Sample: image, text, vqa_answer, vqa_labels, vqa_scores (empty lists where a row carries no answers, e.g. the
    test tables), qid. `names` overrides the split's tables (METER: ``meter.config.METER_VQA_SPLITS``).
    """

    split_names = VILT_VQA_SPLITS

    def required_columns(self) -> Dict[str, Any]:
        return {"image": BINARY, "questions": LIST_OF_STRING, "answers": ANSWERS_TYPE, "answer_labels": LABELS_TYPE,
                "answer_scores": SCORES_TYPE, "question_id": LIST_OF_INT}

    def check_table(self, table: pa.Table, path: str) -> None:
        """Per row: one question id per question; answers, labels and scores given for every question or for none
        (test tables); per question as many labels and scores as answers; labels >= 0; scores in [0, 1]."""
        n_q = _list_lengths(table["questions"])
        row = _first_mismatch(_list_lengths(table["question_id"]), n_q)
        if row is not None:
            raise ArrowFileError(f"arrow file {path!r}, row {row}: {len(table['question_id'][row])} question ids for "
                                 f"{len(table['questions'][row])} questions")
        n_a = _list_lengths(table["answers"])
        bad = pc.and_(pc.not_equal(n_a, 0), pc.not_equal(n_a, n_q))
        if pc.any(bad).as_py():
            row = int(pc.index(bad, True).as_py())
            raise ArrowFileError(f"arrow file {path!r}, row {row}: answers given for {n_a[row].as_py()} of "
                                 f"{n_q[row].as_py()} questions (expected all or none)")
        for column in ("answer_labels", "answer_scores"):
            row = _first_mismatch(_list_lengths(table[column]), n_a)
            if row is not None:
                raise ArrowFileError(f"arrow file {path!r}, row {row}: column {column!r} has "
                                     f"{len(table[column][row])} entries for {n_a[row].as_py()} answered questions")
        if pa.types.is_null(table["answers"].type.value_type):
            return
        per_q_answers = _list_lengths(pc.list_flatten(table["answers"]))
        for column in ("answer_labels", "answer_scores"):
            if pa.types.is_null(table[column].type.value_type):
                raise ArrowFileError(f"arrow file {path!r}: column {column!r} is {table[column].type} while "
                                     f"'answers' holds answers")
            if _first_mismatch(_list_lengths(pc.list_flatten(table[column])), per_q_answers) is not None:
                raise ArrowFileError(f"arrow file {path!r}: column {column!r} does not give one value per answer "
                                     f"(per question as many entries as 'answers')")
        labels = pc.list_flatten(pc.list_flatten(table["answer_labels"]))
        if len(labels) and pc.min(labels).as_py() < 0:
            raise ArrowFileError(f"arrow file {path!r}: column 'answer_labels' holds the negative label "
                                 f"{pc.min(labels).as_py()}; labels index the answer table (>= 0)")
        scores = pc.list_flatten(pc.list_flatten(table["answer_scores"]))
        if len(scores):
            finite_in_range = pc.and_(pc.greater_equal(scores, 0.0), pc.less_equal(scores, 1.0))
            if not pc.all(finite_in_range).as_py():
                bad_value = scores.filter(pc.invert(finite_in_range))[0].as_py()
                raise ArrowFileError(f"arrow file {path!r}: column 'answer_scores' holds {bad_value!r}; VQA soft "
                                     f"scores are in [0, 1]")

    def _answer_cell(self, column: str, row: int, question_index: int) -> list:
        per_question = self.table[column][row].as_py() or []
        return list(per_question[question_index]) if question_index < len(per_question) else []

    def get_sample(self, index: int) -> Dict[str, Any]:
        image = self.get_image(index)["image"]
        text = self.get_text(index)["text"]
        row, q = self.index_mapper[index]
        return {
            "image": image,
            "text": text,
            "vqa_answer": self._answer_cell("answers", row, q),
            "vqa_labels": self._answer_cell("answer_labels", row, q),
            "vqa_scores": self._answer_cell("answer_scores", row, q),
            "qid": self.table["question_id"][row][q].as_py(),
        }


class NLVR1Dataset(VQAv2Dataset):
    """NLVR (v1.0) as a binary VQA-schema task (``nlvr1_{train,val,test}.arrow`` by default; pass `names` for other
    file names). Its test table carries answers, so test metrics can be computed."""

    split_names = {"train": ["nlvr1_train"], "val": ["nlvr1_val"], "test": ["nlvr1_test"]}


class NLVR2Dataset(_QuestionDataset):
    """Upstream ``NLVR2Dataset``: one sample per sentence; image_0, image_1, text, answers (bool), table_name."""

    split_names = {"train": ["nlvr2_train"], "val": ["nlvr2_dev", "nlvr2_test1"], "test": ["nlvr2_dev", "nlvr2_test1"]}

    def required_columns(self) -> Dict[str, Any]:
        return {"image_0": BINARY, "image_1": BINARY, "questions": LIST_OF_STRING, "answers": LIST_OF_STRING}

    def check_table(self, table: pa.Table, path: str) -> None:
        """One answer per sentence, each "True" or "False"."""
        row = _first_mismatch(_list_lengths(table["answers"]), _list_lengths(table["questions"]))
        if row is not None:
            raise ArrowFileError(f"arrow file {path!r}, row {row}: {len(table['answers'][row])} answers for "
                                 f"{len(table['questions'][row])} sentences")
        answers = pc.list_flatten(table["answers"])
        valid = pc.is_in(answers, value_set=pa.array(["True", "False"]))
        if len(answers) and not pc.all(valid).as_py():
            value = answers.filter(pc.invert(valid))[0].as_py()
            raise ArrowFileError(f"arrow file {path!r}: column 'answers' holds {value!r}; expected 'True' or 'False'")

    def get_sample(self, index: int) -> Dict[str, Any]:
        image_0 = self.get_image(index, image_key="image_0")["image"]
        image_1 = self.get_image(index, image_key="image_1")["image"]
        text = self.get_text(index)["text"]
        row, q = self.index_mapper[index]
        return {
            "image_0": image_0,
            "image_1": image_1,
            "text": text,
            "answers": self.table["answers"][row][q].as_py() == "True",
            "table_name": self.locate_row(row)[0],
        }


class _CaptionDataset(BaseDataset):
    """Caption datasets: text column "caption", de-duplicated; samples from ``get_suite``."""

    def __init__(self, *args, split: str = "", names: Optional[Sequence[str]] = None, **kwargs):
        self.split = split
        kwargs.pop("text_column_name", None)
        super().__init__(*args, names=self.resolve_names(args, kwargs, split, names), text_column_name="caption",
                         **kwargs)

    @classmethod
    def resolve_names(cls, args, kwargs, split: str, names: Optional[Sequence[str]]) -> List[str]:
        return _split_tables(cls, split, names)


class F30KCaptionKarpathyDataset(_CaptionDataset):
    split_names = {
        "train": ["f30k_caption_karpathy_train", "f30k_caption_karpathy_val"],
        "val": ["f30k_caption_karpathy_test"],
        "test": ["f30k_caption_karpathy_test"],
    }


class CocoCaptionKarpathyDataset(_CaptionDataset):
    """Upstream adds ``iid`` (the COCO image id parsed from the file name) to test samples."""

    split_names = {
        "train": ["coco_caption_karpathy_train", "coco_caption_karpathy_restval"],
        "val": ["coco_caption_karpathy_test"],
        "test": ["coco_caption_karpathy_test"],
    }

    def required_columns(self) -> Dict[str, Any]:
        columns = super().required_columns()
        if "test" in self.split:
            columns["image_id"] = STRING
        return columns

    def get_sample(self, index: int) -> Dict[str, Any]:
        suite = self.get_suite(index)
        if "test" in self.split:
            image_id = str(self.cell("image_id", self.index_mapper[index][0]))
            suite["iid"] = int(image_id.split(".")[0].split("_")[-1])
        return suite


class VisualGenomeCaptionDataset(_CaptionDataset):
    """Pre-training only: ``vg.arrow``; no validation tables (test -> val -> empty)."""

    split_names = {"train": ["vg"], "val": [], "test": []}


def discover_shards(data_dir: str, prefix: str) -> List[str]:
    """Consecutive ``<prefix>0.arrow, <prefix>1.arrow, ...`` in `data_dir` (stems); ArrowFileError if none."""
    names = []
    while os.path.isfile(os.path.join(data_dir, f"{prefix}{len(names)}.arrow")):
        names.append(f"{prefix}{len(names)}")
    if not names:
        raise ArrowFileError(f"arrow file not found: {os.path.join(data_dir, prefix + '0.arrow')!r} "
                             f"(expected shards {prefix}0.arrow, {prefix}1.arrow, ... written by the writer)")
    return names


class _ShardedCaptionDataset(_CaptionDataset):
    """Caption datasets stored as numbered shards; the train split takes every consecutive shard present."""

    train_shard_prefix = ""

    @classmethod
    def resolve_names(cls, args, kwargs, split, names):
        if names is None and split == "train":
            data_dir = kwargs.get("data_dir", args[0] if args else "")
            return discover_shards(data_dir, cls.train_shard_prefix)
        return _split_tables(cls, split, names)


class SBUCaptionDataset(_ShardedCaptionDataset):
    """Pre-training only: ``sbu_0.arrow`` ... (upstream: 9 shards); no validation tables."""

    train_shard_prefix = "sbu_"
    split_names = {"train": [f"sbu_{i}" for i in range(9)], "val": [], "test": []}


class ConceptualCaptionDataset(_ShardedCaptionDataset):
    """Pre-training only: ``conceptual_caption_train_0.arrow`` ... (ViLT 30 shards, METER 31);
    validation ``conceptual_caption_val_0`` (ViLT)."""

    train_shard_prefix = "conceptual_caption_train_"
    split_names = {"train": [f"conceptual_caption_train_{i}" for i in range(30)],
                   "val": ["conceptual_caption_val_0"], "test": ["conceptual_caption_val_0"]}


DATASETS = {
    "vqa": VQAv2Dataset,
    "nlvr2": NLVR2Dataset,
    "f30k": F30KCaptionKarpathyDataset,
    "coco": CocoCaptionKarpathyDataset,
    "vg": VisualGenomeCaptionDataset,
    "sbu": SBUCaptionDataset,
    "gcc": ConceptualCaptionDataset,
    "nlvr1": NLVR1Dataset,
}
