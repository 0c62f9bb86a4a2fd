"""CoOp-format folder data, few-shot sampling, base-to-new relabelling, H, the schedule, and a Sacred run."""
import json
import math
import os
import random

import pytest
import torch

from clip_apt.datasets import SplitItem, classnames_of, fewshot, read_split, subsample_classes
from clip_apt.modules.clip_module import coop_lr_factor, harmonic_mean


def _items(labels):
    return [SplitItem(f"/img/{i}.png", y, f"class_{y}") for i, y in enumerate(labels)]


def test_base_to_new_relabelling_by_hand():
    splits = {"train": _items([4, 0, 2, 1, 3, 0]), "val": _items([1, 4]), "test": _items([3, 2, 4, 0, 1])}
    base = subsample_classes(splits, "base")  # 5 labels -> m = 3: base {0, 1, 2}, new {3, 4}
    new = subsample_classes(splits, "new")
    assert [it.label for it in base["train"]] == [0, 2, 1, 0]
    assert [it.classname for it in base["train"]] == ["class_0", "class_2", "class_1", "class_0"]
    assert [it.label for it in base["test"]] == [2, 0, 1] and [it.label for it in base["val"]] == [1]
    assert [it.label for it in new["train"]] == [1, 0] and [it.classname for it in new["train"]] == ["class_4",
                                                                                                    "class_3"]
    assert [it.label for it in new["test"]] == [0, 1] and [it.label for it in new["val"]] == [1]
    assert classnames_of(base["train"]) == ["class_0", "class_1", "class_2"]
    assert classnames_of(new["train"]) == ["class_3", "class_4"]
    assert subsample_classes(splits, "all") == splits
    with pytest.raises(ValueError, match="subsample"):
        subsample_classes(splits, "half")


def test_fewshot_is_coops_sampling():
    splits = {"train": _items([0] * 5 + [1] * 2 + [0] * 3 + [2] * 6), "val": _items([0] * 6 + [1] * 6),
              "test": _items([0, 1])}
    got = fewshot(splits, 4, seed=3)
    random.seed(3)  # CoOp: global seed, then per class in order of first appearance, train then val (min(K, 4))
    tr = splits["train"]
    want_train = random.sample([t for t in tr if t.label == 0], 4) + [t for t in tr if t.label == 1] + \
        random.sample([t for t in tr if t.label == 2], 4)
    want_val = random.sample(splits["val"][:6], 4) + random.sample(splits["val"][6:], 4)
    assert got["train"] == want_train and got["val"] == want_val and got["test"] == splits["test"]
    assert fewshot(splits, 0, 1) == splits


def test_harmonic_mean_and_schedule_by_hand():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(100.0, 50.0) == pytest.approx(200 / 3)
    assert harmonic_mean(0.0, 0.0) == 0.0 and harmonic_mean(70.0, 0.0) == 0.0
    # CoOp: epoch 0 at 1e-5, then 0.001 * (1 + cos(pi * (e - 1) / 200)) for lr 0.002
    assert coop_lr_factor(0, 0.002, 200) * 0.002 == pytest.approx(1e-5)
    assert coop_lr_factor(1, 0.002, 200) * 0.002 == pytest.approx(0.002)
    assert coop_lr_factor(101, 0.002, 200) * 0.002 == pytest.approx(0.001 * (1 + math.cos(math.pi * 100 / 200)))


def test_read_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="split_zhou"):
        read_split(str(tmp_path))
    (tmp_path / "split_zhou_X.json").write_text(json.dumps({"train": [["a.png", "0", "a"]], "val": [], "test": []}))
    with pytest.raises(ValueError, match="integer label"):
        read_split(str(tmp_path))


def test_sacred_run_base_to_new_writes_results_and_tuned_weights(tmp_path):
    from clip_apt.config import ex
    from clip_apt.datasets.demo_world import CLASSES, make_world
    from clip_tiny import open_clip_reference

    world = make_world(str(tmp_path / "world"), per_class=(3, 1, 2), pretrain_per_class=0, image_size=32)
    splits = read_split(world)
    assert len(splits["train"]) == 3 * len(CLASSES) and classnames_of(splits["train"]) == CLASSES
    clip_path = str(tmp_path / "clip.pt")
    torch.save(open_clip_reference().state_dict(), clip_path)
    run = ex.run(named_configs=["peft_coop"], config_updates=dict(
        data_root=world, clip_path=clip_path, text_heads=4, vision_heads=4, image_size=32, max_epochs=2,
        batch_size=6, num_shots=2, output_dir=str(tmp_path / "out"), precision="32"), options={"--loglevel": "ERROR"})
    out = tmp_path / "out" / "clip_coop_seed1"
    result = json.loads((out / "results.json").read_text())
    assert result["trainable_params"] == 4 * 32 and result["peft_options"]["ctx_init"] == "a photo of a"
    assert 0 <= result["base_acc"] <= 100 and 0 <= result["new_acc"] <= 100
    assert result["harmonic_mean"] == pytest.approx(harmonic_mean(result["base_acc"], result["new_acc"]))
    assert os.path.isfile(out / "tuned" / "tuned.safetensors") and run.result["base_acc"] == result["base_acc"]
