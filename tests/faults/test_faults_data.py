"""Fault injection on the data side: corrupted, truncated or re-shaped arrow files and broken images must end in an
error that names the file (and the column), never in a crash or silently changed samples; bad images are counted
over all DataLoader workers and reported at the end of every fit and evaluation."""
from __future__ import annotations

import functools
import io
import json
import logging
import os
import subprocess
import sys

import pyarrow as pa
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from shared_apt.vl.data.arrow import ArrowFileError, read_arrow_table, write_arrow_table
from shared_apt.vl.data.bad_images import BadImageAccounting
from shared_apt.vl.data.datamodules import VQAv2DataModule
from shared_apt.vl.data.datasets import (BadImageError, F30KCaptionKarpathyDataset, NLVR2Dataset, TooManyBadImagesError,
                                      VQAv2Dataset, is_empty_batch)
from shared_apt.vl.data.text import MLMCollator, get_tokenizer, train_wordpiece_tokenizer
from shared_apt.vl.data.writers.vqa import vqa_schema

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KW = dict(image_size=32, max_text_len=8)
CORRUPT_IMAGE = b"\x89PNG\r\n\x1a\n not an image at all"


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8 + i % 3, 8), (20 * i % 256, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


def vqa_columns(n: int, first_qid: int = 0, label_offset: int = 0) -> dict:
    return {
        "image": [png(i) for i in range(n)],
        "questions": [[f"is it red {i}", f"how many {i}"] for i in range(n)],
        "answers": [[["yes", "no"], ["2"]] for _ in range(n)],
        "answer_labels": [[[0 + label_offset, 1 + label_offset], [2 + label_offset]] for _ in range(n)],
        "answer_scores": [[[1.0, 0.3], [0.6]] for _ in range(n)],
        "image_id": list(range(first_qid, first_qid + n)),
        "question_id": [[first_qid + 2 * i, first_qid + 2 * i + 1] for i in range(n)],
        "split": ["train"] * n,
    }


def write_vqa(path, n=4, first_qid=0, drop=(), rename=None, schema_changes=None, label_offset=0, **overrides):
    cols = vqa_columns(n, first_qid, label_offset)
    cols.update(overrides)
    fields = [f for f in vqa_schema(test=False) if f.name not in drop]
    if schema_changes:
        fields = [pa.field(f.name, schema_changes.get(f.name, f.type)) for f in fields]
    table = pa.table({f.name: cols[f.name] for f in fields}, schema=pa.schema(fields))
    if rename:
        table = table.rename_columns([rename.get(c, c) for c in table.column_names])
    write_arrow_table(table, str(path))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tok"))
    train_wordpiece_tokenizer(["is it red", "how many", "a cat on a mat", "two dogs"] * 5, folder, vocab_size=80,
                              min_frequency=1)
    return get_tokenizer(folder)


def vqa_train(tmp_path, **kw):
    return VQAv2Dataset(str(tmp_path), ["pixelbert"], split="train", **KW, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Corrupted bytes: every offset loads the identical table or raises ArrowFileError naming the file; no crash
# ---------------------------------------------------------------------------------------------------------------

CHILD = r'''
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("arrow_under_test", sys.argv[1])
arrow = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arrow)
path, offsets = sys.argv[2], json.loads(sys.argv[3])
original = arrow.read_arrow_table(path)
data = open(path, "rb").read()
for offset in offsets:
    bad = f"{path}.corrupt{offset}.arrow"
    patched = bytearray(data)
    patched[offset:offset + 8] = b"\xff\x7f\x00\x80\x01\xfe\x10\x41"
    with open(bad, "wb") as fp:
        fp.write(patched)
    try:
        table = arrow.read_arrow_table(bad)
        outcome = ["same" if table.equals(original) else "changed", ""]
    except arrow.ArrowFileError as e:
        outcome = ["error", str(e)]
    except Exception as e:
        outcome = ["other " + type(e).__name__, str(e)]
    print(json.dumps([offset, bad] + outcome), flush=True)
'''


def corrupt_at_offsets(path: str, n_offsets: int = 100, chunks: int = 4):
    """Overwrite 8 bytes at `n_offsets` offsets spread over the file, each read in a child process (a chunk of
    offsets per process), so that a crash shows as a failed chunk instead of killing pytest."""
    size = os.path.getsize(path)
    step = max(1, (size - 8) // n_offsets)
    offsets = list(range(0, size - 8, step))[:n_offsets]
    results = []
    for c in range(chunks):
        part = offsets[c::chunks]
        proc = subprocess.run([sys.executable, "-c", CHILD, os.path.join(REPO, "shared_apt", "vl", "data", "arrow.py"),
                               path, json.dumps(part)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"reading corrupted copies crashed (rc {proc.returncode}) on offsets " \
                                     f"{part}: {proc.stderr[-2000:]}"
        results += [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(r[0] for r in results) == offsets
    return results


def test_corrupt_bytes_at_100_offsets_load_identically_or_name_the_file(tmp_path):
    path = str(tmp_path / "vqav2_train.arrow")
    write_vqa(path, n=6)
    results = corrupt_at_offsets(path)
    for offset, bad, outcome, message in results:
        assert outcome in ("same", "error"), f"offset {offset}: {outcome} {message}"
        if outcome == "error":
            assert repr(bad) in message, f"offset {offset}: the error does not name the file: {message}"
    errors = sum(r[2] == "error" for r in results)
    assert errors >= len(results) // 2, f"only {errors} of {len(results)} corruptions detected"


def test_corrupt_bytes_in_a_file_without_digests_never_crash(tmp_path):
    """Files written by other tools (upstream's pandas writers) carry no digest: structure is still validated, so a
    corrupted byte never crashes the reader; changed payload bytes cannot be told from real content there."""
    path = str(tmp_path / "vqav2_train.arrow")
    cols = vqa_columns(6)
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, vqa_schema(test=False)) as writer:
        writer.write_table(pa.table(cols, schema=vqa_schema(test=False)))
    results = corrupt_at_offsets(path, n_offsets=60, chunks=2)
    for offset, bad, outcome, message in results:
        assert outcome in ("same", "error", "changed"), f"offset {offset}: {outcome} {message}"
        if outcome == "error":
            assert repr(bad) in message
    assert any(r[2] == "error" for r in results)


def test_truncated_file_names_it(tmp_path):
    path = tmp_path / "vqav2_train.arrow"
    write_vqa(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArrowFileError, match=r"vqav2_train\.arrow.*corrupt or not an Arrow IPC file"):
        read_arrow_table(str(path))


# ---------------------------------------------------------------------------------------------------------------
# Columns: missing, renamed, mistyped, null, out of range
# ---------------------------------------------------------------------------------------------------------------


def test_required_column_dropped_from_one_of_two_training_files(tmp_path):
    write_vqa(tmp_path / "vqav2_train.arrow")
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100, drop=("answer_labels",))
    with pytest.raises(ArrowFileError, match=r"vqav2_trainable_val\.arrow' lacks required column\(s\) "
                                             r"\['answer_labels'\]"):
        vqa_train(tmp_path)


def test_other_column_dropped_from_one_of_two_training_files_is_not_null_filled(tmp_path):
    write_vqa(tmp_path / "vqav2_train.arrow")
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100, drop=("image_id",))
    with pytest.raises(ArrowFileError, match=r"vqav2_trainable_val\.arrow' lacks column\(s\) \['image_id'\] that "
                                             r".*vqav2_train\.arrow' of the same split has"):
        vqa_train(tmp_path)
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100, schema_changes={"image_id": pa.int32()})
    with pytest.raises(ArrowFileError, match=r"vqav2_trainable_val\.arrow': column 'image_id' has type int32, but "
                                             r"int64 in .*vqav2_train\.arrow"):
        vqa_train(tmp_path)


def test_column_dropped_from_both_training_files(tmp_path):
    write_vqa(tmp_path / "vqav2_train.arrow", drop=("question_id",))
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100, drop=("question_id",))
    with pytest.raises(ArrowFileError, match=r"vqav2_train\.arrow' lacks required column\(s\) \['question_id'\]"):
        vqa_train(tmp_path)


def test_renamed_image_column_is_a_missing_column_not_a_bad_image(tmp_path):
    write_vqa(tmp_path / "vqav2_train.arrow", rename={"image": "img"})
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100, rename={"image": "img"})
    with pytest.raises(ArrowFileError, match=r"vqav2_train\.arrow' lacks required column\(s\) \['image'\]; it has "
                                             r"\['img',"):
        vqa_train(tmp_path)


def test_nlvr2_renamed_right_image_column(tmp_path):
    cols = {"image_0": [png(0)], "image_right": [png(1)], "questions": [["s"]], "answers": [["True"]],
            "identifier": ["train-1-0"]}
    write_arrow_table(pa.table(cols), str(tmp_path / "nlvr2_train.arrow"))
    with pytest.raises(ArrowFileError, match=r"nlvr2_train\.arrow' lacks required column\(s\) \['image_1'\]"):
        NLVR2Dataset(str(tmp_path), ["pixelbert"], split="train", **KW)


@pytest.mark.parametrize("column,new_type,values,expected", [
    ("question_id", pa.list_(pa.string()), [["a", "b"]] * 4, r"list<item: string>, expected list<int64>"),
    ("questions", pa.string(), ["q"] * 4, r"string, expected list<string>"),
    ("image", pa.string(), ["x"] * 4, r"string, expected binary"),
    ("answer_scores", pa.list_(pa.list_(pa.string())), [[["1"], ["1"]]] * 4, r"expected list<list<float64>>"),
])
def test_mistyped_column_names_file_column_and_types(tmp_path, column, new_type, values, expected):
    write_vqa(tmp_path / "vqav2_train.arrow")
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100, schema_changes={column: new_type},
              **{column: values})
    with pytest.raises(ArrowFileError, match=rf"vqav2_trainable_val\.arrow': column '{column}' has type .*{expected}"):
        vqa_train(tmp_path)


def test_nulls_in_a_required_column(tmp_path):
    write_vqa(tmp_path / "vqav2_train.arrow", questions=[["q a", "q b"], None, ["q e", "q f"], ["q g", "q h"]])
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100)
    with pytest.raises(ArrowFileError, match=r"vqav2_train\.arrow': column 'questions' has 1 null value"):
        vqa_train(tmp_path)
    write_vqa(tmp_path / "vqav2_train.arrow", image=[png(0), None, png(2), png(3)])
    with pytest.raises(ArrowFileError, match=r"vqav2_train\.arrow': column 'image' has 1 null value"):
        vqa_train(tmp_path)


def test_row_shapes_and_value_ranges(tmp_path):
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100)
    write_vqa(tmp_path / "vqav2_train.arrow", question_id=[[0, 1], [2], [4, 5], [6, 7]])
    with pytest.raises(ArrowFileError, match=r"vqav2_train\.arrow', row 1: 1 question ids for 2 questions"):
        vqa_train(tmp_path)
    write_vqa(tmp_path / "vqav2_train.arrow", label_offset=-3)
    with pytest.raises(ArrowFileError, match=r"vqav2_train\.arrow': column 'answer_labels' holds the negative label "
                                             r"-3"):
        vqa_train(tmp_path)
    write_vqa(tmp_path / "vqav2_train.arrow", answer_scores=[[[1.0, 0.3], [6.0]]] * 4)
    with pytest.raises(ArrowFileError, match=r"vqav2_train\.arrow': column 'answer_scores' holds 6\.0"):
        vqa_train(tmp_path)
    write_vqa(tmp_path / "vqav2_train.arrow", answer_labels=[[[0], [2]]] * 4)
    with pytest.raises(ArrowFileError, match=r"vqav2_train\.arrow': column 'answer_labels' does not give one value "
                                             r"per answer"):
        vqa_train(tmp_path)


def test_labels_outside_the_label_table_or_inconsistent_between_files(tmp_path, tokenizer):
    for name in ("vqav2_train", "vqav2_rest_val", "vqav2_test"):
        write_vqa(tmp_path / f"vqav2_{name[6:]}.arrow")
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100, label_offset=1)
    cfg = {"data_root": str(tmp_path), "per_gpu_batchsize": 2, "num_workers": 0, "image_size": 32,
           "max_text_len": 8, "datasets": ["vqa"]}
    dm = VQAv2DataModule(cfg, "vqa", tokenizer=tokenizer)
    with pytest.raises(ArrowFileError, match=r"vqav2_trainable_val\.arrow': answer 'yes' has label 1, but label 0 in "
                                             r".*vqav2_train\.arrow"):
        dm.setup()
    write_vqa(tmp_path / "vqav2_trainable_val.arrow", first_qid=100)
    write_vqa(tmp_path / "vqav2_rest_val.arrow", first_qid=200, answers=[[["yes", "no"], ["7"]]] * 4,
              answer_labels=[[[0, 1], [9]]] * 4)
    dm = VQAv2DataModule({**cfg, "vqav2_label_size": 5}, "vqa", tokenizer=tokenizer)
    with pytest.raises(ArrowFileError, match=r"vqav2_rest_val\.arrow': answer '7' has label 9, outside the label "
                                             r"table \[0, vqav2_label_size=5\)"):
        dm.setup()
    dm = VQAv2DataModule({**cfg, "vqav2_label_size": 10}, "vqa", tokenizer=tokenizer)
    dm.setup()
    assert dm.num_class == 10 and dm.answer2id == {"yes": 0, "no": 1, "2": 2, "7": 9}


# ---------------------------------------------------------------------------------------------------------------
# Broken images with 2 DataLoader workers: counted in total, limit on the total, one report line per run
# ---------------------------------------------------------------------------------------------------------------


class _ImageMean(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen = 0

    def training_step(self, batch, batch_idx):
        if is_empty_batch(batch):
            return None
        self.seen += batch["image"][0].shape[0]
        return (self.w * batch["image"][0].mean()).sum()

    def test_step(self, batch, batch_idx):
        if not is_empty_batch(batch):
            self.seen += batch["image"][0].shape[0]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _caption_loader(tmp_path, tokenizer, bad_rows, n=20):
    rows = {"image": [CORRUPT_IMAGE if i in bad_rows else png(i) for i in range(n)],
            "caption": [[f"a cat on a mat {i}"] for i in range(n)], "image_id": [f"{i}.jpg" for i in range(n)],
            "split": ["train"] * n}
    write_arrow_table(pa.table(rows), str(tmp_path / "f30k_caption_karpathy_train.arrow"))
    good = {"image": [png(0), png(1)], "caption": [["two dogs"], ["a cat"]], "image_id": ["a.jpg", "b.jpg"],
            "split": ["val", "val"]}
    write_arrow_table(pa.table(good), str(tmp_path / "f30k_caption_karpathy_val.arrow"))
    ds = F30KCaptionKarpathyDataset(str(tmp_path), ["pixelbert"], split="train", tokenizer=tokenizer, **KW)
    assert len(ds) == n + 2
    collate = functools.partial(ds.collate, mlm_collator=MLMCollator(tokenizer))
    return torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate, shuffle=False,
                                       multiprocessing_context="fork")


def _trainer(limit):
    accounting = BadImageAccounting(limit)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, callbacks=[accounting], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer, accounting


def test_bad_images_under_the_limit_with_two_workers_are_reported(tmp_path, tokenizer, caplog):
    # rows 1 and 3: one in each worker's batches (batch_size 2, workers take batches in turn) -> 2 of 22 in total
    loader = _caption_loader(tmp_path, tokenizer, bad_rows={1, 3})
    trainer, accounting = _trainer(0.1)
    model = _ImageMean()
    with caplog.at_level(logging.INFO, logger="shared_apt.vl.data.bad_images"):
        trainer.fit(model, train_dataloaders=loader)
    assert model.seen == 20
    line = ("bad images (train): 2 of 22 samples skipped (9.09%, limit max_bad_image_fraction=0.1) from "
            "f30k_caption_karpathy_train.arrow: 2")
    assert accounting.reports[0] == line and line in caplog.text
    assert accounting.reports[1].startswith("bad images (val): 0 of 0 samples skipped")
    assert sorted(accounting.counts["train"].bad) == [("f30k_caption_karpathy_train.arrow", 1, "image"),
                                                      ("f30k_caption_karpathy_train.arrow", 3, "image")]

    trainer, accounting = _trainer(0.1)
    model = _ImageMean()
    trainer.test(model, dataloaders=loader)
    assert model.seen == 20 and accounting.reports == [line.replace("(train)", "(test)")]


def test_bad_images_over_the_limit_in_total_with_two_workers_stop_the_run(tmp_path, tokenizer):
    """Rows 1 and 17 reach worker 0, row 3 worker 1 (batches of 2 taken in turn): per worker at most 2 of the 22
    samples (9.1%), in total 3 (13.6% of 22) > 12%. Only the total crosses the limit (at row 17, 18 samples read)."""
    loader = _caption_loader(tmp_path, tokenizer, bad_rows={1, 3, 17})
    trainer, _ = _trainer(0.12)
    with pytest.raises(TooManyBadImagesError, match=r"bad images \(train\): 3 of 18 samples skipped \(16\.67%.* from "
                                                    r"f30k_caption_karpathy_train\.arrow: 3.*first: "
                                                    r"f30k_caption_karpathy_train\.arrow\[1\] \(image\)"):
        trainer.fit(_ImageMean(), train_dataloaders=loader)


def test_dataset_reports_a_bad_image_by_file_and_row(tmp_path, tokenizer):
    loader = _caption_loader(tmp_path, tokenizer, bad_rows={5})
    ds = loader.dataset
    with pytest.raises(BadImageError, match=r"row 5 in table 'f30k_caption_karpathy_train'"):
        ds.get_raw_image(5)


class _ReportToFile(BadImageAccounting):
    """Rank 0 writes its report lines to a file (DDP ranks are forked processes)."""

    def __init__(self, limit, path):
        super().__init__(limit)
        self.path = path

    def on_fit_end(self, trainer, pl_module):
        super().on_fit_end(trainer, pl_module)
        if trainer.global_rank == 0:
            with open(self.path, "w") as fp:
                fp.write("\n".join(self.reports))


def _ddp_fit(loader, limit, report_path):
    from pytorch_lightning.strategies import DDPStrategy

    trainer = pl.Trainer(accelerator="cpu", devices=2, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         strategy=DDPStrategy(start_method="fork", process_group_backend="gloo"),
                         callbacks=[_ReportToFile(limit, str(report_path))])
    trainer.fit(_ImageMean(), train_dataloaders=loader)


def test_bad_images_summed_over_two_ddp_processes(tmp_path, tokenizer):
    """Lightning's DistributedSampler gives rank 0 the even indices and rank 1 the odd ones (no shuffle): bad rows
    2 (rank 0), 3 and 9 (rank 1). Under the limit the report counts all three; with a limit of 12% only the total
    (3 of at least 22 = 13.6%) crosses it: rank 1 alone has 2."""
    loader = _caption_loader(tmp_path, tokenizer, bad_rows={2, 3, 9})
    report = tmp_path / "report.txt"
    _ddp_fit(loader, 0.2, report)
    assert report.read_text().splitlines()[0] == (
        "bad images (train): 3 of 22 samples skipped (13.64%, limit max_bad_image_fraction=0.2) from "
        "f30k_caption_karpathy_train.arrow: 3")
    with pytest.raises(Exception, match=r"TooManyBadImagesError: bad images \(train\): 3 of \d+ samples skipped"):
        _ddp_fit(loader, 0.12, tmp_path / "unused.txt")
