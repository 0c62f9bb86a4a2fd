"""CoOp's dataset readers, each on a tiny hand-written copy of its on-disk layout (KaiyangZhou/CoOp DATASETS.md):
split JSONs, FGVC-Aircraft's text files, ImageNet's folders + classnames.txt, and the four variants' folders (A and R
hold class subsets)."""
import json
import os

import pytest
from PIL import Image

from clip_apt.datasets import DatasetLayoutError, load_dataset

# (key, folder, image root under it, split file, CoOp template): transcribed from CoOp's datasets/*.py and
# trainers/zsclip.py CUSTOM_TEMPLATES
SPLIT_DATASETS = [
    ("caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", "a photo of a {}."),
    ("oxford_pets", "oxford_pets", "images", "split_zhou_OxfordPets.json", "a photo of a {}, a type of pet."),
    ("stanford_cars", "stanford_cars", "", "split_zhou_StanfordCars.json", "a photo of a {}."),
    ("oxford_flowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
     "a photo of a {}, a type of flower."),
    ("food101", "food-101", "images", "split_zhou_Food101.json", "a photo of {}, a type of food."),
    ("sun397", "sun397", "SUN397", "split_zhou_SUN397.json", "a photo of a {}."),
    ("dtd", "dtd", "images", "split_zhou_DescribableTextures.json", "{} texture."),
    ("eurosat", "eurosat", "2750", "split_zhou_EuroSAT.json", "a centered satellite photo of {}."),
    ("ucf101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", "a photo of a person doing {}."),
]


def png(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (4, 4), (200, 10, 10)).save(path)


def write_classnames(folder, lines):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "classnames.txt"), "w") as f:
        f.write("".join(f"{w} {n}\n" for w, n in lines))


@pytest.mark.parametrize("key,folder,image_dir,split_file,template", SPLIT_DATASETS)
def test_split_json_datasets(tmp_path, key, folder, image_dir, split_file, template):
    d = tmp_path / folder
    root = d / image_dir if image_dir else d
    split = {"train": [["b/1.png", 1, "Bo_b"], ["a/1.png", 0, "al"], ["a/2.png", 0, "al"]],
             "val": [["a/3.png", 0, "al"]], "test": [["b/2.png", 1, "Bo_b"]]}
    for part in split.values():
        for rel, _, _ in part:
            png(str(root / rel))
    (d / split_file).write_text(json.dumps(split))
    data = load_dataset(key, str(tmp_path))
    assert data.template == template and data.key == key
    train = data.split("train")
    assert [(it.impath, it.label, it.classname) for it in train] == [
        (os.path.join(str(root), "b/1.png"), 1, "Bo_b"), (os.path.join(str(root), "a/1.png"), 0, "al"),
        (os.path.join(str(root), "a/2.png"), 0, "al")]
    assert data.classnames == ["al", "Bo_b"]  # ordered by label, from the train split (Dassl)
    assert [it.impath for it in data.split("test")] == [os.path.join(str(root), "b/2.png")]
    assert len(data.split("val")) == 1 and not data.test_only and data.fewshot_val


def test_split_json_missing_file_names_it_and_the_layout(tmp_path):
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"split_zhou_OxfordPets\.json.*not found.*DATASETS\.md"):
        load_dataset("oxford_pets", str(tmp_path))
    with pytest.raises(DatasetLayoutError, match=r"folder .*eurosat.* not found.*2750/"):
        load_dataset("eurosat", str(tmp_path))
    with pytest.raises(ValueError, match="dataset='pets'.*oxford_pets"):
        load_dataset("pets", str(tmp_path))


def test_fgvc_aircraft_text_files(tmp_path):
    d = tmp_path / "fgvc_aircraft"
    d.mkdir()
    (d / "variants.txt").write_text("707-320\nA300B4\nCessna 172\n")
    (d / "images_variant_train.txt").write_text("0001 Cessna 172\n0002 707-320\n")
    (d / "images_variant_val.txt").write_text("0003 A300B4\n")
    (d / "images_variant_test.txt").write_text("0004 Cessna 172\n0005 A300B4\n")
    for i in range(1, 6):
        png(str(d / "images" / f"000{i}.jpg"))
    data = load_dataset("fgvc_aircraft", str(tmp_path))
    img = str(d / "images")
    assert [(it.impath, it.label, it.classname) for it in data.split("train")] == [
        (os.path.join(img, "0001.jpg"), 2, "Cessna 172"), (os.path.join(img, "0002.jpg"), 0, "707-320")]
    assert [it.label for it in data.split("test")] == [2, 1] and [it.label for it in data.split("val")] == [1]
    assert data.classnames == ["707-320", "A300B4", "Cessna 172"]  # variants.txt order, even if train lacks one
    assert data.template == "a photo of a {}, a type of aircraft."
    (d / "images_variant_val.txt").write_text("0003 Boeing 999\n")
    with pytest.raises(DatasetLayoutError, match="Boeing 999.*variants.txt"):
        load_dataset("fgvc_aircraft", str(tmp_path)).split("val")


def _imagenet(root, wnids=("n02", "n01", "n03"), names=None):
    names = names or {"n01": "tench", "n02": "great white shark", "n03": "goldfish"}
    write_classnames(str(root / "imagenet"), sorted(names.items()))
    for part, count in (("train", 3), ("val", 2)):
        for w in wnids:
            for i in range(count):
                png(str(root / "imagenet" / "images" / part / w / f"{w}_{part}_{i}.JPEG"))


def test_imagenet_folders_and_classnames(tmp_path):
    _imagenet(tmp_path)
    data = load_dataset("imagenet", str(tmp_path))
    assert data.classnames == ["tench", "great white shark", "goldfish"] and data.wnids == ["n01", "n02", "n03"]
    train = data.split("train")
    assert len(train) == 9 and [it.label for it in train] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert train[3].impath == str(tmp_path / "imagenet/images/train/n02/n02_train_0.JPEG")
    assert train[3].classname == "great white shark"
    test = data.split("test")
    assert [it.label for it in test] == [0, 0, 1, 1, 2, 2] and data.split("val") == test  # CoOp: val = test
    assert not data.fewshot_val and data.template == "a photo of a {}."
    os.rename(tmp_path / "imagenet/classnames.txt", tmp_path / "imagenet/names.txt")
    with pytest.raises(DatasetLayoutError, match=r"classnames\.txt.*not found.*<wnid> <class name>"):
        load_dataset("imagenet", str(tmp_path))


def test_imagenet_folder_missing_from_classnames(tmp_path):
    _imagenet(tmp_path, names={"n01": "tench", "n02": "great white shark"})
    with pytest.raises(DatasetLayoutError, match=r"\['n03'\].*classnames\.txt"):
        load_dataset("imagenet", str(tmp_path))


def test_imagenet_variants_and_their_class_subsets(tmp_path):
    lines = [("n01", "tench"), ("n02", "great white shark"), ("n03", "goldfish"), ("n04", "tiger shark")]
    # V2: folder k = class k of classnames.txt
    write_classnames(str(tmp_path / "imagenetv2"), lines)
    v2 = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    for k in range(4):
        png(str(v2 / str(k) / "a.jpeg"))
    png(str(v2 / "2" / "b.jpeg"))
    data = load_dataset("imagenetv2", str(tmp_path))
    assert [(os.path.relpath(it.impath, str(v2)), it.label, it.classname) for it in data.split("test")] == [
        ("0/a.jpeg", 0, "tench"), ("1/a.jpeg", 1, "great white shark"), ("2/a.jpeg", 2, "goldfish"),
        ("2/b.jpeg", 2, "goldfish"), ("3/a.jpeg", 3, "tiger shark")]
    assert data.test_only and data.split("train") == [] and data.wnids == ["n01", "n02", "n03", "n04"]
    # Sketch: every wnid folder
    write_classnames(str(tmp_path / "imagenet-sketch"), lines)
    for w, _ in lines:
        png(str(tmp_path / "imagenet-sketch" / "images" / w / "s.JPEG"))
    sketch = load_dataset("imagenet_sketch", str(tmp_path))
    assert [it.label for it in sketch.split("test")] == [0, 1, 2, 3] and sketch.classnames == [n for _, n in lines]
    # A and R: a subset of the wnids, label = index among the folders present, README.txt ignored
    for key, folder, sub, present in (("imagenet_a", "imagenet-adversarial", "imagenet-a", ("n04", "n02")),
                                      ("imagenet_r", "imagenet-rendition", "imagenet-r", ("n03",))):
        write_classnames(str(tmp_path / folder), lines)
        for w in present:
            png(str(tmp_path / folder / sub / w / "x.jpg"))
        (tmp_path / folder / sub / "README.txt").write_text("not a class")
        data = load_dataset(key, str(tmp_path))
        assert data.wnids == sorted(present)
        assert data.classnames == [dict(lines)[w] for w in sorted(present)]
        assert [(it.label, it.classname) for it in data.split("test")] == [
            (i, dict(lines)[w]) for i, w in enumerate(sorted(present))]
    assert load_dataset("imagenet_a", str(tmp_path)).classnames == ["great white shark", "tiger shark"]
    (tmp_path / "imagenet-rendition" / "imagenet-r" / "n09").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"\['n09'\].*classnames\.txt"):
        load_dataset("imagenet_r", str(tmp_path))
    with pytest.raises(DatasetLayoutError, match=r"imagenet-a/.*200 wnid folders"):
        load_dataset("imagenet_a", str(tmp_path / "elsewhere"))
