"""Datasets over tiny arrow files in the upstream schemas (docs/backbones.md, ViLT), the collate (6.4), and the
bad-image / bad-file policy."""
import logging
import pickle

import pytest
import torch

from shared_apt.vl.data.arrow import ArrowFileError
from meter.config import METER_VQA_SPLITS
from shared_apt.vl.data.datasets import (BadImageError, BadSample, CocoCaptionKarpathyDataset,
                                      ConceptualCaptionDataset, F30KCaptionKarpathyDataset, NLVR2Dataset,
                                      VisualGenomeCaptionDataset, VQAv2Dataset, is_empty_batch)
from shared_apt.vl.data.text import MLMCollator

KW = dict(image_size=64, max_text_len=12)


def test_vqa_dataset_samples_per_question(vqa_root, tokenizer):
    ds = VQAv2Dataset(vqa_root, ["pixelbert"], split="train", tokenizer=tokenizer, **KW)
    assert ds.names == ["vqav2_train", "vqav2_trainable_val"]
    assert len(ds) == 4 and ds.index_mapper == [(0, 0), (0, 1), (1, 0), (2, 0)]
    s = ds[1]
    assert s["text"][0] == "is there a dog"
    assert (s["vqa_answer"], s["vqa_labels"], s["vqa_scores"], s["qid"]) == (["yes"], [2], [0.9], 12)
    assert len(s["text"][1]["input_ids"]) == 12
    assert s["image"][0].shape == (3, 64, 96)  # 96x64 image: shorter side 64, longer 96 (<= 106)
    s = ds[3]
    assert (s["vqa_labels"], s["qid"], s["text"][0]) == ([4], 31, "is there a horse")


def test_vqa_test_split_has_empty_answers(vqa_root, tokenizer):
    ds = VQAv2Dataset(vqa_root, ["pixelbert"], split="test", tokenizer=tokenizer, **KW)
    assert ds.names == ["vqav2_test"] and len(ds) == 2
    s = ds[1]
    assert (s["vqa_answer"], s["vqa_labels"], s["vqa_scores"], s["qid"]) == ([], [], [], 52)


def test_vqa_meter_splits_and_names_override(vqa_root, tokenizer, writers, tmp_path):
    assert METER_VQA_SPLITS["val"] == ["vqav2_val"]
    ds = VQAv2Dataset(vqa_root, ["clip"], split="val", names=["vqav2_rest_val", "vqav2_trainable_val"],
                      tokenizer=tokenizer, **KW)
    assert len(ds) == 2 and ds.image_mode == "RGBA"
    assert ds[0]["image"][0].shape == (3, 64, 64)  # clip: always size x size
    assert ds.locate_row(1) == ("vqav2_trainable_val", 0)


def test_nlvr2_dataset_pairs_and_table_names(tmp_path, tokenizer, writers):
    im = writers.image
    writers.nlvr2(tmp_path / "nlvr2_dev.arrow", [
        (im(96, 64), im(32, 96), ["the left image has two dogs", "there are cats"], ["True", "False"], "dev-1-0"),
    ])
    writers.nlvr2(tmp_path / "nlvr2_test1.arrow", [
        (im(64, 64), im(64, 64), ["a horse"], ["False"], "test1-5-1"),
    ])
    ds = NLVR2Dataset(str(tmp_path), ["pixelbert"], split="val", tokenizer=tokenizer, **KW)
    assert len(ds) == 3
    samples = [ds[i] for i in range(3)]
    assert [s["answers"] for s in samples] == [True, False, False]
    assert [s["table_name"] for s in samples] == ["nlvr2_dev", "nlvr2_dev", "nlvr2_test1"]
    assert ds.table_names == ["nlvr2_dev", "nlvr2_test1"]
    batch = ds.collate(samples, MLMCollator(tokenizer))
    # image_0: 96x64 -> [3, 64, 96], 64x64 -> [3, 64, 64]; image_1: 32x96 -> (64, 192) capped at 106 ->
    # (35.3, 106) -> [3, 96, 32]. One padded size over BOTH keys: 96 x 96
    assert samples[0]["image_1"][0].shape == (3, 96, 32)
    assert batch["image_0"][0].shape == batch["image_1"][0].shape == (3, 3, 96, 96)
    assert batch["answers"] == [True, False, False]


def test_caption_dataset_index_dedup_and_suite(f30k_root, tokenizer):
    ds = F30KCaptionKarpathyDataset(f30k_root, ["pixelbert"], split="train", tokenizer=tokenizer,
                                    draw_false_image=1, draw_false_text=2, **KW)
    # duplicate caption of image 0 removed, first-appearance order kept
    assert ds.all_texts == [["a man is riding a horse", "a man on a horse"], ["two dogs are playing"],
                            ["a woman holds an umbrella"]]
    assert ds.index_mapper == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert ds.corpus[1] == "a man on a horse"
    s = ds[1]
    assert (s["img_index"], s["cap_index"], s["raw_index"], s["replica"]) == (0, 1, 1, True)
    assert {"false_image_0", "false_text_0", "false_text_1"} <= set(s)
    assert len(s["false_text_0"][1]["input_ids"]) <= 12  # false texts are not padded
    only = F30KCaptionKarpathyDataset(f30k_root, ["pixelbert"], split="train", image_only=True, **KW)
    assert len(only) == 3 and "text" not in only[2] and only[2]["cap_index"] is None


def test_coco_test_samples_carry_iid(tmp_path, tokenizer, writers):
    writers.caption(tmp_path / "coco_caption_karpathy_test.arrow",
                    [(writers.image(64, 64), ["a cat"], "COCO_val2014_000000391895.jpg")], split="test")
    ds = CocoCaptionKarpathyDataset(str(tmp_path), ["pixelbert"], split="test", tokenizer=tokenizer, **KW)
    assert ds[0]["iid"] == 391895


def test_collate_pads_images_top_left_and_texts(f30k_root, tokenizer):
    ds = F30KCaptionKarpathyDataset(f30k_root, ["pixelbert", "pixelbert"], split="train", tokenizer=tokenizer,
                                    draw_false_text=1, **KW)
    samples = [ds[0], ds[2]]  # image 96x64 -> [3, 64, 96]; 64x128 -> [3, 96, 32] (106 cap, floor to 32)
    assert samples[0]["image"][0].shape == (3, 64, 96) and samples[1]["image"][0].shape == (3, 96, 32)
    batch = ds.collate(samples, MLMCollator(tokenizer, generator=torch.Generator().manual_seed(0)))
    assert len(batch["image"]) == 2  # one tensor per view
    img = batch["image"][0]
    assert img.shape == (2, 3, 96, 96)
    assert torch.equal(img[0, :, :64, :96], samples[0]["image"][0])
    assert (img[0, :, 64:, :] == 0).all()
    assert torch.equal(img[1, :, :96, :32], samples[1]["image"][0])
    assert (img[1, :, :, 32:] == 0).all()
    for key in ("text", "false_text_0"):
        assert batch[f"{key}_ids"].shape == batch[f"{key}_masks"].shape == (2, 12)
        assert (batch[f"{key}_labels"] == -100).all()
        assert batch[f"{key}_ids_mlm"].shape == batch[f"{key}_labels_mlm"].shape == (2, 12)
    assert batch["text"] == ["a man is riding a horse", "two dogs are playing"]
    enc = samples[0]["text"][1]
    assert batch["text_ids"][0].tolist() == enc["input_ids"]
    assert batch["text_masks"][0].tolist() == enc["attention_mask"]
    n = len(samples[0]["false_text_0"][1]["input_ids"])
    assert (batch["false_text_0_ids"][0, n:] == 0).all() and (batch["false_text_0_masks"][0, n:] == 0).all()
    assert batch["img_index"] == [0, 1] and batch["raw_index"] == [0, 2]


def test_missing_and_corrupt_arrow_files_name_the_path(tmp_path, tokenizer):
    with pytest.raises(ArrowFileError, match="f30k_caption_karpathy_test.arrow"):
        F30KCaptionKarpathyDataset(str(tmp_path), ["pixelbert"], split="val", **KW)
    (tmp_path / "f30k_caption_karpathy_test.arrow").write_bytes(b"ARROW1 but not really an arrow file")
    with pytest.raises(ArrowFileError, match="f30k_caption_karpathy_test.arrow.*corrupt"):
        F30KCaptionKarpathyDataset(str(tmp_path), ["pixelbert"], split="val", **KW)


def test_missing_text_column_is_an_arrow_file_error(tmp_path, writers):
    writers.nlvr2(tmp_path / "vg.arrow", [(writers.image(64, 64), writers.image(64, 64), ["x"], ["True"], "a")])
    with pytest.raises(ArrowFileError, match="caption"):
        VisualGenomeCaptionDataset(str(tmp_path), ["pixelbert"], split="train", **KW)


def test_corrupt_image_is_counted_logged_and_never_replaced(tmp_path, tokenizer, writers, caplog):
    im = writers.image
    writers.caption(tmp_path / "f30k_caption_karpathy_test.arrow", [
        (im(64, 64), ["a"], "0.jpg"), (writers.corrupt, ["b"], "1.jpg"), (im(64, 64), ["c"], "2.jpg"),
        (im(64, 64), ["d"], "3.jpg"),
    ], split="test")
    ds = F30KCaptionKarpathyDataset(str(tmp_path), ["pixelbert"], split="test", tokenizer=tokenizer, **KW)
    with pytest.raises(BadImageError, match=r"row 1 in table 'f30k_caption_karpathy_test'"):
        ds.get_raw_image(1)
    with caplog.at_level(logging.WARNING, logger="shared_apt.vl.data.datasets"):
        samples = [ds[i] for i in range(4)]
    assert isinstance(samples[1], BadSample)
    assert (samples[1].table, samples[1].row, samples[1].column) == ("f30k_caption_karpathy_test.arrow", 1, "image")
    assert [s["text"][0] for s in samples if not isinstance(s, BadSample)] == ["a", "c", "d"]
    assert ds.bad_samples == [("f30k_caption_karpathy_test", 1)]
    assert "f30k_caption_karpathy_test" in caplog.text and "row 1" in caplog.text
    batch = ds.collate(samples, MLMCollator(tokenizer))
    assert batch["text"] == ["a", "c", "d"] and batch["image"][0].shape[0] == 3
    assert batch["bad_images"] == [("f30k_caption_karpathy_test.arrow", 1, "image")] and batch["samples_read"] == 4
    empty = ds.collate([samples[1], samples[1]], MLMCollator(tokenizer))
    assert empty == {"bad_images": [("f30k_caption_karpathy_test.arrow", 1, "image")] * 2, "samples_read": 2}
    assert is_empty_batch(empty) and not is_empty_batch(batch)


def test_nlvr2_bad_right_image_skips_the_sample(tmp_path, tokenizer, writers):
    writers.nlvr2(tmp_path / "nlvr2_train.arrow", [
        (writers.image(64, 64), writers.corrupt, ["s1", "s2"], ["True", "False"], "train-1-0"),
    ])
    ds = NLVR2Dataset(str(tmp_path), ["pixelbert"], split="train", tokenizer=tokenizer, **KW)
    assert [(b.table, b.row, b.column) for b in (ds[0], ds[1])] == [("nlvr2_train.arrow", 0, "image_1")] * 2
    assert ds.bad_samples == [("nlvr2_train", 0), ("nlvr2_train", 0)]


def test_dataset_pickles_without_its_table(f30k_root, tokenizer):
    ds = F30KCaptionKarpathyDataset(f30k_root, ["pixelbert"], split="val", tokenizer=tokenizer, **KW)
    blob = pickle.dumps(ds)
    assert len(blob) < 200_000
    clone = pickle.loads(blob)
    assert torch.equal(clone[1]["image"][0], ds[1]["image"][0]) and clone[1]["text"][0] == ds[1]["text"][0]


def test_sharded_and_empty_pretraining_splits(tmp_path, writers):
    for i in range(2):
        writers.caption(tmp_path / f"conceptual_caption_train_{i}.arrow", [(writers.image(64, 64), [f"c{i}"], "x")])
    ds = ConceptualCaptionDataset(str(tmp_path), ["pixelbert"], split="train", **KW)
    assert ds.names == ["conceptual_caption_train_0", "conceptual_caption_train_1"] and len(ds) == 2
    assert len(VisualGenomeCaptionDataset(str(tmp_path), ["pixelbert"], split="val", **KW)) == 0
    with pytest.raises(ArrowFileError, match="sbu_0.arrow"):
        from shared_apt.vl.data.datasets import SBUCaptionDataset
        SBUCaptionDataset(str(tmp_path), ["pixelbert"], split="train", **KW)


def test_text_requires_a_tokenizer(f30k_root):
    ds = F30KCaptionKarpathyDataset(f30k_root, ["pixelbert"], split="val", **KW)
    with pytest.raises(RuntimeError, match="no tokenizer"):
        ds[0]
