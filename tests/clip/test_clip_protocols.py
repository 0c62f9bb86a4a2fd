"""Few-shot subsets per seed and their cache, the protocol config checks, and the domain-generalisation evaluation
over a variant's class subset on a hand-made case."""
import json
import os
import random

import pytest
import torch
from PIL import Image
from torch import nn

from clip_apt.datasets import FewshotCacheError, fewshot_splits, load_dataset
from clip_apt.train import CLIPRunError, check_config, evaluate, run, target_datasets
from test_clip_coop_datasets import _imagenet, png, write_classnames


def _pets(root, per_class=(6, 5, 3)):
    """An oxford_pets copy with 3 classes: per class train / val / test images."""
    d = root / "oxford_pets"
    split = {"train": [], "val": [], "test": []}
    for y, name in enumerate(["abyssinian", "beagle", "boxer"]):
        for part, n in zip(("train", "val", "test"), per_class):
            for i in range(n):
                rel = f"{name}_{part}_{i}.jpg"
                png(str(d / "images" / rel))
                split[part].append([rel, y, name])
    (d / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return split


def test_fewshot_cached_per_seed_val_capped_and_reused(tmp_path):
    split = _pets(tmp_path)
    data = load_dataset("oxford_pets", str(tmp_path))
    got = fewshot_splits(data, 5, seed=2)
    cache = tmp_path / "oxford_pets" / "split_fewshot" / "shot_5-seed_2.json"
    assert cache.is_file()
    # CoOp: random.seed(seed); per class (first-appearance order) random.sample(items, K), then val with min(K, 4)
    random.seed(2)
    want_train = [e[0] for y in range(3) for e in random.sample([e for e in split["train"] if e[1] == y], 5)]
    want_val = [e[0] for y in range(3) for e in random.sample([e for e in split["val"] if e[1] == y], 4)]
    rel = lambda items: [os.path.basename(it.impath) for it in items]  # noqa: E731
    assert rel(got["train"]) == want_train and rel(got["val"]) == want_val
    assert len(got["test"]) == 9 and rel(got["test"]) == [e[0] for e in split["test"]]
    assert not {it.impath for it in got["train"] + got["val"]} & {it.impath for it in got["test"]}
    # another seed, another subset; the same seed in a fresh dataset object, the same subset
    assert rel(fewshot_splits(load_dataset("oxford_pets", str(tmp_path)), 5, seed=3)["train"]) != want_train
    again = fewshot_splits(load_dataset("oxford_pets", str(tmp_path)), 5, seed=2)
    assert again == got
    # the next run reads the cache as it is: an edited file is what comes back
    record = json.loads(cache.read_text())
    assert record["train"][0] == [want_train[0], 0, "abyssinian"]
    record["train"] = record["train"][:2]
    cache.write_text(json.dumps(record))
    edited = fewshot_splits(load_dataset("oxford_pets", str(tmp_path)), 5, seed=2)
    assert rel(edited["train"]) == want_train[:2]
    # a cache that puts a test image into training is refused
    record["train"].append(["boxer_test_0.jpg", 2, "boxer"])
    cache.write_text(json.dumps(record))
    with pytest.raises(FewshotCacheError, match=r"shot_5-seed_2\.json.*1 train image\(s\) are test images"):
        fewshot_splits(load_dataset("oxford_pets", str(tmp_path)), 5, seed=2)
    # fewer images than K: all of them (CoOp without repeat); other cache folder
    small = fewshot_splits(data, 8, seed=1, cache_dir=str(tmp_path / "elsewhere"))
    assert len(small["train"]) == 18 and len(small["val"]) == 12
    assert (tmp_path / "elsewhere/shot_8-seed_1.json").is_file()


def test_fewshot_imagenet_samples_train_only(tmp_path):
    _imagenet(tmp_path)
    data = load_dataset("imagenet", str(tmp_path))
    got = fewshot_splits(data, 2, seed=1)
    record = json.loads((tmp_path / "imagenet/split_fewshot/shot_2-seed_1.json").read_text())
    assert set(record) == {"dataset", "num_shots", "seed", "train"}  # CoOp caches ImageNet's train only
    assert [e[1] for e in record["train"]] == [0, 0, 1, 1, 2, 2] and record["train"][0][0].startswith("train/n01/")
    assert got["val"] == got["test"] == data.split("test")


def test_protocol_config_errors(tmp_path):
    clip = tmp_path / "clip.pt"
    clip.write_bytes(b"x")
    base = dict(dataset="imagenet", data_root=str(tmp_path), clip_path=str(clip), protocol="dg", template=None,
                num_shots=16, max_epochs=1, batch_size=4, target_datasets=None, image_dir="images")
    check_config(base)
    assert target_datasets(base) == ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    assert target_datasets(dict(base, protocol="xd")) == [
        "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft", "sun397", "dtd",
        "eurosat", "ucf101"]
    assert target_datasets(dict(base, protocol="xd", dataset="dtd"))[:2] == ["imagenet", "caltech101"]
    bad = [(dict(dataset="pets"), "dataset='pets'.*oxford_pets"), (dict(protocol="b2n"), "protocol='b2n'.*fewshot"),
           (dict(target_datasets=["imagenet_x"]), "target_datasets.*imagenet_a"),
           (dict(protocol="dg", dataset="oxford_pets"), "dataset='oxford_pets'.*imagenet for protocol=dg"),
           (dict(protocol="xd", dataset="folder"), "dataset='folder'.*CoOp dataset key"),
           (dict(protocol="xd", dataset="imagenet_r"), "test-only"),
           (dict(protocol="base2new", target_datasets=["imagenet_a"]), "protocol=base2new has no targets"),
           (dict(protocol="fewshot", num_shots=0), "K >= 1"), (dict(template="a photo"), "template"),
           (dict(test_only=True, peft="coop"), "load_path"), (dict(image_dir="jpg"), "image_dir")]
    for change, message in bad:
        with pytest.raises(CLIPRunError, match=message):
            check_config(dict(base, **change))


class TableCLIP(nn.Module):
    """Logits from a hand-written table: image i (its red value is 10 * i) gets ``table[i][classname]`` (0 if
    absent) for every class name asked for."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def classify(self, images, classnames, template):
        # Normalize((r/255 - 0.48145466) / 0.26862954): recover r, then the image index
        r = (images[:, 0, 0, 0] * 0.26862954 + 0.48145466) * 255
        ids = torch.round(r / 10).long().tolist()
        return torch.tensor([[float(self.table[i].get(c, 0.0)) for c in classnames] for i in ids])


def test_dg_evaluation_restricts_to_the_variant_classes_by_hand(tmp_path):
    lines = [("n01", "ant"), ("n02", "bee"), ("n03", "cat"), ("n04", "dog")]
    write_classnames(str(tmp_path / "imagenet-adversarial"), lines)
    # ImageNet-A copy with 2 of the 4 classes: bee (label 0) and dog (label 1); image i has red 10 * i
    for i, w in enumerate(["n02", "n04", "n04"]):
        path = str(tmp_path / "imagenet-adversarial" / "imagenet-a" / w / f"{i}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.new("RGB", (4, 4), (10 * i, 0, 0)).save(path)
    target = load_dataset("imagenet_a", str(tmp_path))
    table = {0: {"ant": 9, "bee": 5, "cat": 1, "dog": 2},   # bee: right within {bee, dog} (ant would win over 4)
             1: {"ant": 1, "bee": 3, "cat": 10, "dog": 1},  # dog image, bee wins within the subset: wrong
             2: {"ant": 7, "bee": 2, "cat": 8, "dog": 4}}   # dog: right within the subset
    cfg = dict(image_size=4, test_batch_size=2, num_workers=0)
    acc = evaluate(TableCLIP(table), target.split("test"), target.classnames, "a photo of a {}.", cfg,
                   torch.device("cpu"), False)
    assert target.classnames == ["bee", "dog"] and acc == pytest.approx(200 / 3)
    all_four = [n for _, n in lines]  # over all 4 ImageNet classes, the same images would score 0 right
    relabelled = [it.__class__(it.impath, {"bee": 1, "dog": 3}[it.classname], it.classname)
                  for it in target.split("test")]
    assert evaluate(TableCLIP(table), relabelled, all_four, "{}", cfg, torch.device("cpu"), False) == 0.0


def test_dg_refuses_a_target_with_classes_the_source_lacks(tmp_path):
    _imagenet(tmp_path)  # wnids n01..n03
    write_classnames(str(tmp_path / "imagenet-rendition"), [("n01", "tench"), ("n07", "hen")])
    png(str(tmp_path / "imagenet-rendition" / "imagenet-r" / "n07" / "x.jpg"))
    clip = tmp_path / "clip.pt"
    clip.write_bytes(b"x")
    with pytest.raises(CLIPRunError, match=r"ImageNetR classes \['n07'\] are not classes of ImageNet"):
        run(dict(dataset="imagenet", data_root=str(tmp_path), clip_path=str(clip), protocol="dg", template=None,
                 num_shots=1, max_epochs=1, batch_size=4, target_datasets=["imagenet_r"], seed=1))


def test_transforms_are_coops():
    """Dassl (CoOp configs): test = Resize(shorter side, bicubic) -> CenterCrop -> ToTensor -> Normalize(CLIP);
    train = RandomResizedCrop(scale (0.08, 1), bicubic) -> RandomHorizontalFlip -> ToTensor -> Normalize(CLIP)."""
    import numpy as np
    from torchvision import transforms as T

    from clip_apt.datasets import test_transform, train_transform

    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))  # 30 wide, 20 high
    hand = np.asarray(im.resize((12, 8), Image.BICUBIC).crop((2, 0, 10, 8)), dtype=np.float32) / 255
    hand = (hand - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array([0.26862954, 0.26130258, 0.27577711])
    got = test_transform(8)(im)
    assert got.shape == (3, 8, 8)
    assert torch.allclose(got, torch.tensor(hand, dtype=torch.float32).permute(2, 0, 1), atol=1e-5)
    steps = train_transform(224).transforms
    assert [type(s) for s in steps] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert steps[0].scale == (0.08, 1.0) and steps[0].size == (224, 224)
    assert steps[0].interpolation == T.InterpolationMode.BICUBIC and steps[1].p == 0.5
