"""The real-data bench (clip_apt.bench, script/clip_bench.sh): folder layouts, the stratified split, odd images, and a
tiny end-to-end run under ``sh``."""
import json
import os
import subprocess
import zlib

import numpy as np
import pytest
from PIL import Image

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _img(path, mode="RGB", size=(12, 10), value=100):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.encode()))
    if mode == "I;16":
        Image.fromarray((rng.integers(0, 4000, size[::-1])).astype(np.uint16)).save(path)
        return
    a = np.clip(value + rng.integers(-30, 30, (size[1], size[0], 4)), 0, 255).astype(np.uint8)
    im = Image.fromarray(a, "RGBA")
    if mode == "P":
        im = im.convert("RGB").convert("P")
        im.info["transparency"] = 0
        im.save(path, transparency=0)
        return
    im.convert(mode).save(path)


def test_stratified_split_is_deterministic_and_follows_the_rule():
    from clip_apt.bench import stratified_split

    paths = [f"c/{i:02d}.png" for i in range(10)]
    train, val, test = stratified_split(paths, "c")
    assert (len(train), len(val), len(test)) == (5, 2, 3)          # round(0.3 * 10), round(0.2 * 10), rest
    assert sorted(train + val + test) == paths
    assert stratified_split(list(reversed(paths)), "c") == (train, val, test)   # input order does not matter
    assert stratified_split(paths, "other class") != (train, val, test)        # seeded per class
    assert [len(s) for s in stratified_split(paths[:1], "c")] == [1, 0, 0]       # one image: train only
    assert [len(s) for s in stratified_split(paths[:2], "c")] == [1, 0, 1]
    assert [len(s) for s in stratified_split(paths[:3], "c")] == [1, 1, 1]


def test_read_folder_layouts(tmp_path):
    from clip_apt.bench import BenchDataError, read_folder

    # class folders: a class with one image has no test image; names keep underscores; junk files ignored
    cf = tmp_path / "classes"
    for c, n in (("b_cat", 10), ("a_dog", 4), ("z", 1)):
        for i in range(n):
            _img(str(cf / c / "sub" / f"{i}.JPG"))
    (cf / "a_dog" / "README.txt").write_text("not an image")
    (cf / "empty").mkdir()
    splits, layout, notes = read_folder(str(cf))
    assert layout.startswith("class folders")
    assert sorted({(y, c) for _, y, c in splits["train"]}) == [(0, "a_dog"), (1, "b_cat"), (2, "z")]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2 + 5 + 1, 1 + 2, 1 + 3]
    assert any("empty" in n for n in notes)
    # train/ + val/ folders: val is the test split; a class only in val is dropped (no train image)
    sf = tmp_path / "splits"
    for part, c, n in (("train", "x", 3), ("train", "y", 2), ("val", "x", 1), ("val", "y", 1), ("val", "w", 2)):
        for i in range(n):
            _img(str(sf / part / c / f"{i}.png"))
    splits, layout, notes = read_folder(str(sf))
    assert layout == "split folders train=train/, test=val/"
    assert [len(splits[s]) for s in ("train", "val", "test")] == [5, 0, 2]
    assert {c for _, _, c in splits["test"]} == {"x", "y"} and any("'w'" in n for n in notes)
    # CoOp split JSON with its image root found among the sub-folders
    jf = tmp_path / "coop"
    _img(str(jf / "jpg" / "a.png"))
    _img(str(jf / "jpg" / "b.png"))
    (jf / "split_zhou_Toy.json").write_text(json.dumps(
        {"train": [["a.png", 0, "one"], ["b.png", 1, "two"]], "val": [], "test": [["b.png", 1, "two"]]}))
    splits, layout, _ = read_folder(str(jf))
    assert "images under jpg" in layout and splits["train"][0][0] == str(jf / "jpg" / "a.png")
    with pytest.raises(BenchDataError, match="at least two class folders"):
        read_folder(str(cf / "z"))


def test_prepare_copies_odd_images_to_rgb(tmp_path):
    from clip_apt.bench import prepare

    folder = tmp_path / "odd"
    for i, (mode, size) in enumerate((("L", (8, 8)), ("RGBA", (300, 200)), ("P", (3, 2)), ("I;16", (9, 31)),
                                      ("CMYK", (20, 20)), ("RGB", (5, 7)))):
        ext = "jpg" if mode == "CMYK" else "png"
        _img(str(folder / ("grey_things" if i % 2 else "colour_things") / f"{i}.{ext}"), mode, size)
    data, info = prepare(str(folder), str(tmp_path / "cache"), 32, log=None)
    assert info["classes"] == 2 and info["classnames"] == ["colour_things", "grey_things"]
    split = json.load(open(os.path.join(data, "split_zhou_Bench.json")))
    rels = [r[0] for s in ("train", "val", "test") for r in split[s]]
    assert len(rels) == 6
    for rel in rels:
        with Image.open(os.path.join(data, "images", rel)) as im:
            assert im.mode == "RGB" and min(im.size) == 64
    # same content -> same digest, copy reused
    assert prepare(str(folder), str(tmp_path / "cache"), 32, log=None)[1]["digest"] == info["digest"]


def test_bench_script_end_to_end_under_sh(tmp_path):
    """4 classes (2 base, 2 new) of coloured images, zero-shot and CoOp, one epoch, a few pre-training steps."""
    folder = tmp_path / "four"
    colours = {"red_square": (200, 30, 30), "green": (30, 200, 30), "blue_sky": (30, 30, 200), "grey": (128,) * 3}
    for c, rgb in colours.items():
        for i in range(6):
            a = np.clip(np.array(rgb) + np.random.default_rng(i).integers(-20, 20, (16, 16, 3)), 0, 255)
            os.makedirs(folder / c, exist_ok=True)
            Image.fromarray(a.astype(np.uint8)).save(folder / c / f"{i}.png")
    out = tmp_path / "bench.json"
    env = dict(os.environ, CLIP_BENCH_CACHE=str(tmp_path / "cache"))
    p = subprocess.run(["sh", os.path.join(REPO, "script", "clip_bench.sh"), str(folder), "--shots", "2",
                        "--methods", "zeroshot,coop", "--epochs", "1", "--min-steps", "1", "--pretrain-steps", "4",
                        "--json", str(out)], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.load(open(out))
    assert set(r["methods"]) == {"zeroshot", "coop"}
    for m in r["methods"].values():
        b, n = m["base"], m["new"]
        assert 0 <= b <= 100 and 0 <= n <= 100
        assert m["h"] == pytest.approx(0.0 if b + n == 0 else 2 * b * n / (b + n))
        assert {"params", "vit_b16_params", "gflops_per_image", "label", "seeds"} <= set(m)
    assert r["methods"]["zeroshot"]["params"] == 0 and r["methods"]["coop"]["vit_b16_params"] == 2048
    assert r["n_base_classes"] == 2 and r["dataset"]["classes"] == 4 and r["seeds"] == [1]
    assert "| CoOp | 256 | 2,048 |" in p.stdout
    # each run left a results.json the report reads (method_label and dataset added)
    runs = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "cache") for f in fs if f == "results.json"]
    labels = {json.load(open(f))["method_label"] for f in runs}
    assert labels == {"zeroshot", "coop"}
