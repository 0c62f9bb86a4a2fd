"""MTDataModule / BaseDataModule over tiny arrow files: datasets per split, VQA answer maps, loaders, overrides."""
import pytest
import torch

from shared_apt.vl.data.datamodules import (DataConfigError, MTDataModule, UnpaddedDistributedSampler,
                                         VQAv2DataModule)
from shared_apt.vl.data.datasets import NLVR1Dataset, VQAv2Dataset
from shared_apt.vl.data.text import MLMCollator, WholeWordMaskCollator


class MeterVQA(VQAv2Dataset):
    split_names = {"train": ["vqav2_train"], "val": ["vqav2_rest_val"], "test": ["vqav2_test"]}


def test_vqa_datamodule_answer_maps_and_loaders(vqa_root, data_config):
    dm = MTDataModule(data_config(vqa_root, ["vqa"]), dist=True)  # no process group: plain samplers
    dm.setup("fit")
    vqa = dm.dm_dicts["vqa"]
    assert isinstance(vqa, VQAv2DataModule)
    assert vqa.answer2id == {"red": 0, "blue": 1, "yes": 2, "3": 3, "no": 4}
    assert vqa.num_class == 5 and vqa.id2answer[4] == "no" and vqa.id2answer[99] == "unknown"
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (4, 1, 2)
    assert dm.train_sampler is None and dm.val_sampler is None
    assert isinstance(dm.mlm_collator, MLMCollator) and dm.tokenizer is vqa.tokenizer
    batches = list(dm.train_dataloader())
    assert [len(b["text"]) for b in batches] == [2, 2]
    assert sorted(q for b in batches for q in b["qid"]) == [11, 12, 21, 31]
    b = batches[0]
    assert b["text_ids"].shape == (2, 12) and b["image"][0].dim() == 4
    test = next(iter(dm.test_dataloader()))
    assert test["qid"] == [51, 52] and test["vqa_labels"] == [[], []]


def test_caption_datamodule_negatives_and_no_false_val(f30k_root, data_config):
    cfg = data_config(f30k_root, ["f30k"], draw_false_image=1, draw_false_text=3, whole_word_masking=True,
                      train_transform_keys=["pixelbert_randaug"])
    dm = MTDataModule(cfg)
    dm.setup("fit")
    assert isinstance(dm.mlm_collator, WholeWordMaskCollator)
    batch = next(iter(dm.train_dataloader()))
    assert {"false_image_0", "false_text_2_ids_mlm", "text_labels_mlm"} <= set(batch)
    assert batch["false_image_0"][0].shape[:2] == (2, 3)
    val = dm.make_no_false_val_dset()
    assert val.draw_false_image == 0 and val.draw_false_text == 0 and len(val) == 3
    images = dm.dms[0].make_no_false_val_dset(image_only=True)
    assert len(images) == 2 and "text" not in images[0]
    texts = dm.make_no_false_val_dset(text_only=True)
    assert "image" not in texts[0] and texts[0]["img_index"] == 0


def test_concatenated_caption_datasets(f30k_root, writers, data_config):
    import os

    for split, n in (("train", 2), ("restval", 1), ("test", 1)):
        rows = [(writers.image(64, 64), [f"coco {split} {i}"], f"COCO_{i}.jpg") for i in range(n)]
        writers.caption(os.path.join(f30k_root, f"coco_caption_karpathy_{split}.arrow"), rows, split=split)
    dm = MTDataModule(data_config(f30k_root, ["coco", "f30k"]))
    dm.setup()
    assert dm.dm_keys == ["coco", "f30k"] and list(dm.dm_dicts) == ["coco", "f30k"]
    assert len(dm.train_dataset) == 3 + 4 and len(dm.val_dataset) == 1 + 3
    texts = [t for b in dm.val_dataloader() for t in b["text"]]
    assert texts == ["coco test 0", "three cats sleeping", "cats on a sofa", "a horse on the beach"]


def test_dataset_class_and_split_overrides(vqa_root, data_config):
    cfg = data_config(vqa_root, ["vqa"], dataset_class_overrides={"vqa": f"{__name__}:MeterVQA"},
                      val_transform_keys=["clip"])
    dm = MTDataModule(cfg)
    dm.setup()
    assert type(dm.dms[0].train_dataset) is MeterVQA
    assert len(dm.train_dataset) == 3   # vqav2_train only
    assert dm.val_dataset.datasets[0][0]["image"][0].shape == (3, 64, 64)
    cfg2 = data_config(vqa_root, ["vqa"], dataset_class_overrides={"vqa": MeterVQA},
                       dataset_split_names={"vqa": {"train": ["vqav2_train", "vqav2_rest_val"]}})
    dm2 = MTDataModule(cfg2)
    dm2.setup()
    assert len(dm2.train_dataset) == 4


def test_nlvr1_uses_vqa_schema_with_configurable_names(tmp_path, writers, data_config):
    im = writers.image(64, 64)
    for name, label in (("nlvr1_x_train", 1), ("nlvr1_x_val", 0), ("nlvr1_test", 1)):
        ans = ["true", "false"][1 - label]
        writers.vqa(tmp_path / f"{name}.arrow", [(im, ["there is a blue square"], [[ans]], [[label]], [[1.0]], [7])])
    cfg = data_config(str(tmp_path), ["nlvr1"],
                      dataset_split_names={"nlvr1": {"train": ["nlvr1_x_train"], "val": ["nlvr1_x_val"]}})
    dm = MTDataModule(cfg)
    dm.setup()
    assert isinstance(dm.dms[0].train_dataset, NLVR1Dataset)
    assert dict(dm.dm_dicts["nlvr1"].id2answer) == {0: "false", 1: "true"}
    assert dm.test_dataset[0]["vqa_labels"] == [1]   # NLVR1 test carries its answers


def test_config_errors(vqa_root, data_config):
    with pytest.raises(DataConfigError, match="unknown dataset key 'nope'"):
        MTDataModule(data_config(vqa_root, ["nope"]))
    with pytest.raises(DataConfigError, match="per_gpu_batchsize"):
        MTDataModule(data_config(vqa_root, ["vqa"], per_gpu_batchsize=0))
    with pytest.raises(DataConfigError, match="data_root"):
        MTDataModule({"per_gpu_batchsize": 2, "datasets": ["vqa"]})
    with pytest.raises(DataConfigError, match="cannot be imported"):
        MTDataModule(data_config(vqa_root, ["vqa"], dataset_class_overrides={"vqa": "no.such.module:X"}))


def test_distributed_samplers_when_a_process_group_exists(vqa_root, data_config, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        dm = MTDataModule(data_config(vqa_root, ["vqa"]), dist=True)
        dm.setup()
        assert isinstance(dm.train_sampler, torch.utils.data.DistributedSampler) and dm.train_sampler.shuffle
        assert isinstance(dm.val_sampler, UnpaddedDistributedSampler)
        assert list(dm.test_sampler) == [0, 1]
        assert dm.val_dataloader().sampler is dm.val_sampler
    finally:
        dist.destroy_process_group()
