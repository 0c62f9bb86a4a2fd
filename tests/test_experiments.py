"""The comparison driver (shared_apt.harness.experiments): pre-train -> fine-tune every method -> table / JSON / PNG, on a very
small demo world and on a synthetic NLVR v1 split layout (a few steps each)."""
import json
import os
import random

import pytest
import torch
from PIL import Image, ImageDraw

from shared_apt.harness.experiments import compare, nlvr1
from shared_apt.vl.data.arrow import read_arrow_table
from shared_apt.vl.training.demo import ensure_demo

torch.set_num_threads(1)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = {"hidden_size": 32, "num_heads": 2, "num_layers": 1, "drop_rate": 0.0}


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    return ensure_demo(str(tmp_path_factory.mktemp("demo")), scale=0.1, seed=0)


def _demo_task(info):
    from shared_apt.harness.experiments.demo import VQA_SPLITS

    task = compare.TaskData(
        name="demo VQA", data_root=info["data_root"], tokenizer=info["tokenizer"], vocab_size=info["vocab_size"],
        cls_token_id=info["cls_token_id"], num_labels=info["vqa_labels"], pretrain_datasets=["coco"],
        pretrain_split_names={}, finetune_datasets=["vqa"], finetune_split_names={"vqa": dict(VQA_SPLITS)},
        eval_tables=["vqav2_rest_val"], info={"eval_rows": 0})
    return compare.with_majority(task)


def test_demo_comparison_table_json_png(small_demo, tmp_path):
    bb = compare.get_backbone("vilt")
    task = _demo_task(small_demo)
    assert 0.0 < task.majority < 1.0
    res = compare.compare(bb, task, str(tmp_path / "out"), methods=["full", "apt"], pretrain_epochs=1,
                          pretrain_lr=1e-3, finetune_epochs=1, finetune_lr=1e-3, batch_size=8, progress_bar=False,
                          quiet=True, pretrain_overrides=TINY, finetune_overrides=TINY)

    # table: header with the sequence length, one line per method, the majority baseline line
    lines = res["table"].splitlines()
    n = res["meta"]["seq_len"]
    assert f"additional GFLOPs (n={n})" in res["table"]
    # demo images 128x128 at image_size 64: 4x4 patches of 16 + image [CLS], 24 text slots
    assert (res["meta"]["text_len"], res["meta"]["image_len"], n) == (24, 17, 41)
    body = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| method")]
    assert [ln.split("|")[1].strip() for ln in body][:2] == ["full", "apt"]
    assert body[2].startswith("| majority answer")

    # JSON: every field of a row, consistent with the run
    doc = json.load(open(res["json"]))
    assert doc["backbone"] == "vilt" and doc["seq_len"] == n
    assert doc["pretrain"]["steps"] > 0 and os.path.isfile(doc["pretrain"]["checkpoint"])
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"full", "apt"}
    for r in rows.values():
        assert {"updated_params", "additional_macs", "additional_gflops", "score", "train_time_s", "steps",
                "trainable_params", "learning_rate", "options"} <= set(r)
        assert 0.0 <= r["score"] <= 1.0 and r["train_time_s"] > 0 and r["steps"] > 0
    full, apt = rows["full"], rows["apt"]
    assert full["additional_macs"] == 0 and full["updated_params"] == full["trainable_params"]
    assert 0 < apt["updated_params"] < full["updated_params"] and apt["additional_macs"] > 0
    assert apt["options"] == {"num_prompts": 10, "apt_rank": 4}
    assert apt["learning_rate"] == pytest.approx(5e-3)   # peft_apt's 5x learning rate
    # the table's figures are the JSON's
    assert f"| apt | {apt['updated_params']:,} | {apt['additional_gflops']:.6f} | {100 * apt['score']:.1f} |" \
        in res["table"]

    with open(res["png"], "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert open(tmp_path / "out" / "table.md").read().strip() == res["table"].strip()

    # the fine-tuned runs started from the pre-trained checkpoint
    ft = json.load(open(res["json"]))["pretrain"]["checkpoint"]
    cfg = compare.finetune_config(bb, task, "apt", ft, str(tmp_path / "out"), epochs=1, learning_rate=1e-3)
    assert cfg["load_path"] == ft and cfg["peft"] == "apt" and cfg["vqav2_label_size"] == task.num_labels

    # a second pre-training with the same config is taken from the cache
    pcfg = compare.pretrain_config(bb, task, str(tmp_path / "out"), epochs=1, learning_rate=1e-3, batch_size=8,
                                   progress_bar=False, **TINY)
    again = compare.pretrain(pcfg, bb, quiet=True)
    assert again["reused"] and again["checkpoint"] == doc["pretrain"]["checkpoint"]


def test_majority_baseline_matches_a_hand_count(small_demo):
    from shared_apt.vl.data.arrow import read_arrow_table

    task = _demo_task(small_demo)
    id2answer = json.load(open(os.path.join(small_demo["data_root"], "vqa_dict.json")))
    best = [int(k) for k, v in id2answer.items() if v == task.majority_answer]
    assert len(best) == 1
    best = best[0]
    t = read_arrow_table(os.path.join(small_demo["data_root"], "vqav2_rest_val.arrow"))
    scores = [sum(s for lab, s in zip(labs, scs) if lab == best)
              for labs_q, scs_q in zip(t["answer_labels"].to_pylist(), t["answer_scores"].to_pylist())
              for labs, scs in zip(labs_q, scs_q)]
    assert task.majority == pytest.approx(sum(scores) / len(scores))


def test_unknown_method_and_unknown_key_are_errors(small_demo, tmp_path):
    bb = compare.get_backbone("vilt")
    task = _demo_task(small_demo)
    with pytest.raises(ValueError, match="prefix"):
        compare.finetune_all(bb, task, ["prefix"], "", str(tmp_path), epochs=1, learning_rate=1e-3)
    with pytest.raises(KeyError, match="hiden_size"):
        compare.pretrain_config(bb, task, str(tmp_path), epochs=1, learning_rate=1e-3, hiden_size=8)


# ---------------------------------------------------------------------------------------------------------------
# NLVR v1 layout


COLORS = {"yellow": (230, 200, 20), "black": (20, 20, 20), "blue": (40, 80, 220)}


def _nlvr_split(root, split, n_sets, with_directory, seed):
    """<root>/<split>/<split>.json + images/<dir>/<split>-<n>-<m>-<k>.png (RGBA 400x100), 2 statements per set."""
    rng = random.Random(seed)
    lines = []
    for n in range(n_sets):
        directory = str(n % 3)
        color = rng.choice(sorted(COLORS))
        for m in range(2):
            truth = (m == 0) == (n % 2 == 0)
            said = color if truth else next(c for c in sorted(COLORS) if c != color)
            ex = {"sentence": f"there is a {said} box", "label": "true" if truth else "false",
                  "identifier": f"{n}-{m}"}
            if with_directory:
                ex["directory"] = directory
            lines.append(ex)
            folder = os.path.join(root, split, "images", directory)
            os.makedirs(folder, exist_ok=True)
            for k in range(6):
                img = Image.new("RGBA", (400, 100), (0, 0, 0, 0))
                d = ImageDraw.Draw(img)
                x = 20 + 130 * (k % 3)
                d.rectangle([x, 20, x + 60, 80], fill=COLORS[color] + (255,))
                img.save(os.path.join(folder, f"{split}-{n}-{m}-{k}.png"))
    os.makedirs(os.path.join(root, split), exist_ok=True)
    with open(os.path.join(root, split, f"{split}.json"), "w") as f:
        for ex in lines:
            f.write(json.dumps(ex) + "\n")
    return lines


def test_nlvr1_benchmark_on_a_synthetic_split(tmp_path, capsys):
    src = tmp_path / "nlvr"
    train = _nlvr_split(str(src), "train", 6, True, 0)
    ev = _nlvr_split(str(src), "hidden", 3, False, 1)     # no 'directory' field, like the public hidden split
    cache, out = tmp_path / "cache", tmp_path / "bench"
    rc = nlvr1.main([str(src / "train"), "--eval", str(src / "hidden"), "--cache", str(cache), "--out", str(out),
                     "--methods", "classifier,lora", "--pretrain-epochs", "1", "--finetune-epochs", "1",
                     "--batch-size", "16", "--no-progress", "--world-scenes", "12", "--seeds", "2",
                     "--precision", "bf16", "--pretrain-precision", "32"])
    assert rc == 0
    printed = capsys.readouterr().out
    doc = json.load(open(out / "results.json"))
    # the precision options reach the stages: fp32 pre-training, bf16 fine-tuning (printed, recorded, trained so)
    assert "[nlvr1] path: precision bf16 (--precision)" in printed
    assert "[nlvr1 pre-training] path: precision 32 (--pretrain-precision)" in printed
    assert (doc["precision"], doc["pretrain_precision"]) == ("bf16", 32)
    lora_ckpt = json.load(open(out / "seed0" / "results.json"))["rows"]
    lora_ckpt = [r["checkpoint"] for r in lora_ckpt if r["method"] == "lora"][0]
    assert torch.load(lora_ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]["config"][
        "precision"] == "bf16"
    pre_ckpt = torch.load(doc["pretrain"]["checkpoint"], map_location="cpu", weights_only=False)
    assert pre_ckpt["hyper_parameters"]["config"]["precision"] == 32
    info = doc["task_info"]
    # arrows: all six permutations of every training statement; one row per evaluation statement; pre-training
    # on the generated world (its own cached folder)
    assert info["train_rows"] == 6 * len(train)
    assert info["eval_rows"] == len(ev)
    world = read_arrow_table(os.path.join(info["world_dir"], "nlvr_world_train.arrow"))
    assert info["caption_rows"] == len(world) > 0
    assert doc["metric"] == "accuracy" and doc["eval_tables"] == ["nlvr1_eval_hidden"]
    # majority baseline: the more frequent training label, scored on the evaluation labels
    train_true = sum(e["label"] == "true" for e in train) / len(train)
    majority = "true" if train_true > 0.5 else "false"
    assert doc["majority_baseline"]["answer_label"] == majority
    assert doc["majority_baseline"]["score"] == pytest.approx(
        sum(e["label"] == majority for e in ev) / len(ev))
    # the pre-trained ITM head scored as true/false on the evaluation statements: a multiple of 1/6
    assert doc["itm"]["nlvr_eval"] * len(ev) == pytest.approx(round(doc["itm"]["nlvr_eval"] * len(ev)))
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"classifier", "lora"} and doc["seeds"] == [0, 1]
    # ranked by mean accuracy over the seeds, each seed's score from its own results JSON
    assert [r["score"] for r in doc["rows"]] == sorted((r["score"] for r in doc["rows"]), reverse=True)
    for seed in (0, 1):
        per_seed = {r["method"]: r for r in json.load(open(out / f"seed{seed}" / "results.json"))["rows"]}
        for method, r in rows.items():
            assert r["scores"][seed] == per_seed[method]["score"]
            assert os.path.isfile(per_seed[method]["checkpoint"]) and r["checkpoints"][seed] == \
                per_seed[method]["checkpoint"]
            assert os.path.isdir(per_seed[method]["tuned_weights"])
    for r in rows.values():
        assert r["score"] == pytest.approx(sum(r["scores"]) / 2)
        assert r["score_std"] == pytest.approx(abs(r["scores"][0] - r["scores"][1]) / 2)
        # accuracy over 3 x 2 statements: a multiple of 1/6
        assert r["scores"][0] * len(ev) == pytest.approx(round(r["scores"][0] * len(ev)))
    assert rows["classifier"]["updated_params"] == 0 and rows["lora"]["updated_params"] > 0
    assert rows["lora"]["additional_macs"] == 0     # merged for inference
    # NLVR images (400x100) at image_size 160 -> 256x64 -> 16x4 patches: n = 40 text + 64 + image [CLS]
    assert doc["seq_len_detail"]["image_hw"] == [64, 256]
    assert doc["seq_len"] == 40 + 65
    assert "| classifier | 0 |" in printed and "| lora |" in printed and "accuracy (%) mean" in printed
    assert (out / "results.png").read_bytes()[:8] == PNG_MAGIC
    # arrows, world and tokenizer are cached: a second preparation writes nothing new
    marker = [p for p in cache.rglob(nlvr1.DONE)]
    assert len(marker) == 1
    mtime = marker[0].stat().st_mtime
    nlvr1.prepare([str(src / "train")], str(src / "hidden"), str(cache), show_progress=False,
                  world=dict(nlvr1.WORLD, train_scenes=12, val_scenes=10))
    assert marker[0].stat().st_mtime == mtime
