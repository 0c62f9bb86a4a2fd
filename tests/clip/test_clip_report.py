"""clip_apt.report on hand-made results.json trees (numbers computed by hand in the comments) and UPT's variance
measures on features with known variance."""
import json
import os

import pytest


def _write(root, rel, obj):
    path = os.path.join(root, rel, "results.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def _b2n(method, dataset, seed, base, new, label=None):
    r = {"method": method, "dataset": dataset, "protocol": "base2new", "num_shots": 16, "seed": seed,
         "trainable_params": 8, "base_acc": base, "new_acc": new,
         "harmonic_mean": None if new is None else 2 * base * new / (base + new)}
    if label:
        r["method_label"] = label
    return r


@pytest.fixture()
def b2n_tree(tmp_path):
    root = str(tmp_path / "runs")
    # coop: pets base 80, 90 / new 60, 70; dtd base 70, 70 / new 20, 30
    _write(root, "pets/coop1", _b2n("coop", "oxford_pets", 1, 80.0, 60.0))
    _write(root, "pets/coop2", _b2n("coop", "oxford_pets", 2, 90.0, 70.0))
    _write(root, "dtd/coop1", _b2n("coop", "dtd", 1, 70.0, 20.0))
    _write(root, "dtd/coop2", _b2n("coop", "dtd", 2, 70.0, 30.0))
    # upt (token mixing variant, told apart by method_label): pets both seeds, dtd seed 1 only
    _write(root, "pets/upt1", _b2n("upt", "oxford_pets", 1, 90.0, 70.0, "upt_token_mixing"))
    _write(root, "pets/upt2", _b2n("upt", "oxford_pets", 2, 80.0, 80.0, "upt_token_mixing"))
    _write(root, "dtd/upt1", _b2n("upt", "dtd", 1, 60.0, 40.0, "upt_token_mixing"))
    # class-specific CoOp: no new accuracy
    _write(root, "pets/csc1", _b2n("coop", "oxford_pets", 1, 95.0, None, "coop_csc"))
    _write(root, "pets/csc2", _b2n("coop", "oxford_pets", 2, 93.0, None, "coop_csc"))
    # vpt: the same seed twice on pets (a conflict), fine on dtd
    _write(root, "pets/vpt1", _b2n("vpt_deep", "oxford_pets", 1, 50.0, 50.0))
    _write(root, "pets/vpt1_again", _b2n("vpt_deep", "oxford_pets", 1, 52.0, 50.0))
    _write(root, "pets/vpt2", _b2n("vpt_deep", "oxford_pets", 2, 50.0, 50.0))
    # a results.json that is not a run (the demo's summary)
    _write(root, "demo_summary", {"rows": [], "epochs": 15})
    return root


def test_base2new_mean_std_and_h_of_the_means(b2n_tree, tmp_path):
    from clip_apt.report import report

    out = str(tmp_path / "out")
    r = report([b2n_tree], out)
    b = r["json"]["base2new"]
    coop = b["datasets"]["oxford_pets"]["coop"]
    assert coop["base"] == pytest.approx(85.0) and coop["base_std"] == pytest.approx(5.0)   # population std
    assert coop["new"] == pytest.approx(65.0) and coop["new_std"] == pytest.approx(5.0)
    assert coop["h"] == pytest.approx(2 * 85 * 65 / 150)                                     # 73.667
    dtd = b["datasets"]["dtd"]["coop"]
    assert (dtd["base"], dtd["base_std"], dtd["new"], dtd["h"]) == pytest.approx((70.0, 0.0, 25.0, 2 * 70 * 25 / 95))
    # average: base (85 + 70) / 2 = 77.5, new (65 + 25) / 2 = 45, H of those 56.94 (not the mean of the H, 55.25)
    avg = b["average"]["coop"]
    assert (avg["base"], avg["new"], avg["h"]) == pytest.approx((77.5, 45.0, 2 * 77.5 * 45 / 122.5))
    assert avg["h"] != pytest.approx((2 * 85 * 65 / 150 + 2 * 70 * 25 / 95) / 2, abs=0.5)
    # std of the per-seed dataset averages: base 75, 80 -> 2.5; new 40, 50 -> 5
    assert avg["base_std"] == pytest.approx(2.5) and avg["new_std"] == pytest.approx(5.0)
    # the missing upt seed is listed and marked; its dtd cell is seed 1 alone
    upt = b["datasets"]["dtd"]["upt_token_mixing"]
    assert upt["partial"] and upt["seeds"] == [1] and upt["base"] == 60.0
    assert any("dtd / upt_token_mixing: seeds [2] missing" in m for m in r["json"]["missing"])
    assert b["average"]["upt_token_mixing"]["partial"]
    # class-specific: base only
    csc = b["datasets"]["oxford_pets"]["coop_csc"]
    assert csc["base"] == pytest.approx(94.0) and csc["new"] is None and csc["h"] is None
    assert any("dtd / coop_csc: no run" in m for m in r["json"]["missing"])
    # the duplicated vpt seed is a conflict, not averaged
    assert b["datasets"]["oxford_pets"]["vpt_deep"] == {"conflict": True}
    assert any("oxford_pets / vpt_deep seed 1: 2 runs" in c for c in r["json"]["conflicts"])
    assert [s["path"].endswith(os.path.join("demo_summary", "results.json")) for s in r["json"]["skipped"]] == [True]
    text = open(os.path.join(out, "report.md")).read()
    assert "| coop | 85.00 ± 5.00 | 65.00 ± 5.00 | 73.67 |" in text
    assert "| coop | 77.50 ± 2.50 | 45.00 ± 5.00 | 56.94 |" in text
    assert "| upt_token_mixing | 60.00 ± 0.00† | 40.00 ± 0.00† | 48.00† |" in text
    assert json.load(open(os.path.join(out, "report.json")))["base2new"]["average"]["coop"]["h"] == pytest.approx(
        56.9388, abs=1e-4)


def test_fewshot_table_plot_and_dg_table(tmp_path):
    from PIL import Image

    from clip_apt.report import report

    root = str(tmp_path / "runs")
    accs = {("oxford_pets", 1): (40.0, 50.0), ("oxford_pets", 2): (60.0, 60.0), ("dtd", 1): (20.0, 30.0)}
    for (d, k), vals in accs.items():
        for seed, a in enumerate(vals, 1):
            _write(root, f"fs/{d}/coop_{k}_{seed}", {"method": "coop", "dataset": d, "protocol": "fewshot",
                                                    "num_shots": k, "seed": seed, "acc": a})
    for d, a in (("oxford_pets", 88.0), ("dtd", 44.0)):
        for seed in (1, 2):
            _write(root, f"fs/{d}/zs{seed}", {"method": "zeroshot", "dataset": d, "protocol": "fewshot",
                                              "num_shots": 1, "seed": seed, "acc": a})
    for seed, (src, v2, sk) in enumerate(((70.0, 60.0, 40.0), (72.0, 62.0, 44.0)), 1):
        _write(root, f"dg/coop{seed}", {"method": "coop", "dataset": "imagenet", "protocol": "dg", "num_shots": 16,
                                        "seed": seed, "acc": src,
                                        "target_accs": {"imagenet_sketch": sk, "imagenetv2": v2}})
    out = str(tmp_path / "out")
    r = report([root], out)
    fs = r["json"]["fewshot"]
    assert fs["shots"] == [1, 2]
    pets = fs["datasets"]["oxford_pets"]["coop"]
    assert (pets[1]["acc"], pets[1]["std"], pets[2]["acc"]) == pytest.approx((45.0, 5.0, 60.0))
    # average at 1 shot over pets (45) and dtd (25) = 35; at 2 shots only pets: listed as incomplete
    assert fs["average"]["coop"][1]["acc"] == pytest.approx(35.0)
    assert fs["average"]["coop"][2]["partial"]
    assert any("fewshot dtd / coop / 2 shots: no run" in m for m in r["json"]["missing"])
    png = os.path.join(out, "fewshot.png")
    assert png in r["files"]
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300
    dg = r["json"]["dg"]["imagenet"]
    assert dg["targets"] == ["imagenetv2", "imagenet_sketch"]   # the papers' order, not the file's
    c = dg["methods"]["coop"]
    assert c["imagenet"]["mean"] == pytest.approx(71.0) and c["imagenet_sketch"]["std"] == pytest.approx(2.0)
    assert c["average"] == pytest.approx((71 + 61 + 42) / 3) and c["target_average"] == pytest.approx((61 + 42) / 2)
    assert "| coop | 71.00 ± 1.00 | 61.00 ± 1.00 | 42.00 ± 2.00 | 58.00 | 51.50 |" in r["text"]


def test_variance_measures_hand_case():
    from clip_apt.report import inter_class_variance, intra_class_variance

    # class 0: (2, 0) and (0, 3) normalise to e1, e2; mean (.5, .5); each squared distance .5 -> var 0.5
    # class 1: three copies of one direction -> var 0.   Var_v = (0.5 + 0) / 2
    feats = [[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [2.0, 2.0], [5.0, 5.0]]
    assert intra_class_variance(feats, [0, 0, 1, 1, 1]) == pytest.approx(0.25)
    # (3, 0), (-1, 0) -> e1, -e1; mean 0; squared distances 1 -> Var_t 1.  Adding (0, 7) -> e2: mean (0, 1/3);
    # squared distances 1 + 1/9, 1 + 1/9, (2/3)^2 -> (10 + 10 + 4) / 27 = 8/9
    assert inter_class_variance([[3.0, 0.0], [-1.0, 0.0]]) == pytest.approx(1.0)
    assert inter_class_variance([[3.0, 0.0], [-1.0, 0.0], [0.0, 7.0]]) == pytest.approx(8 / 9)
    assert inter_class_variance([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(0.5)


def test_variance_command_on_a_tiny_clip(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from clip_apt.report import main
    from clip_tiny import TINY, tiny_clip

    model, _ = tiny_clip()
    clip_path = str(tmp_path / "tiny.pt")
    torch.save(model.state_dict(), clip_path)
    folder = tmp_path / "colours"
    rng = np.random.default_rng(0)
    for c, rgb in (("dark_red", (150, 0, 0)), ("sky_blue", (90, 160, 255)), ("grass", (0, 170, 0))):
        (folder / c).mkdir(parents=True)
        for i in range(4):
            a = np.clip(np.array(rgb) + rng.integers(-40, 40, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(folder / c / f"{i}.png")
    out = str(tmp_path / "var")
    assert main(["variance", "--clip-path", clip_path, "--data", str(folder), "--split", "train", "--out", out,
                 "--text-heads", str(TINY["text_heads"]), "--vision-heads", str(TINY["vision_heads"])]) == 0
    row = json.load(open(os.path.join(out, "variance.json")))["datasets"]["colours"]
    assert row["classes"] == 3 and row["images"] == 6      # 4 images per class: 2 train (50 %), 1 val, 1 test
    # independent check of Var_t: trace of the population covariance of the normalised text features
    from clip_apt.modules.tokenizer import tokenize

    with torch.no_grad():
        ids = tokenize([f"a photo of a {c}." for c in ("dark red", "grass", "sky blue")], model.context_length)
        w = torch.nn.functional.normalize(model.encode_text(ids), dim=-1).double().numpy()
    assert row["var_t"] == pytest.approx(float(np.trace(np.cov(w.T, bias=True))), rel=1e-5)
    assert 0 < row["var_v"] < 2
    with Image.open(os.path.join(out, "variance.png")) as im:
        assert im.format == "PNG"
