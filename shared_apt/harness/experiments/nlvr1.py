"""NLVR (v1.0) benchmark of every tuning method (``sh script/nlvr1_bench.sh TRAIN_SPLIT_DIR... --eval DIR``).

    python -m shared_apt.harness.experiments.nlvr1 ../shared/data/nlvr1/test --eval ../shared/data/nlvr1/hidden

1. Arrows (cached by a digest of the inputs and options) with the NLVR1 writer: every training split as VQA-schema
   rows (all six permutation images as rows by default, the six orders of the same three boxes, ``--image-index K``
   for one), and the evaluation split as VQA-schema rows (permutation 0: one row per statement, so the score is
   per-statement accuracy; ``--eval-all-images`` scores all six);
2. the generated NLVR-like world (:mod:`shared_apt.vl.data.nlvr_world`: three boxes, NLVR's shapes, colours, towers,
   balanced true/false statements in NLVR's vocabulary), written once per configuration;
3. a WordPiece tokenizer trained on the training statements and the world's;
4. a tiny ViLT (or METER) pre-trained with MLM+ITM on the world (ITM negatives: the same statement with a scene where
   it is false), cached by config digest; its ITM head is scored as a true/false classifier on the evaluation split
   (no NLVR training); then every method is fine-tuned from it on true/false answers ("false" = class 0, "true" =
   class 1) for each of ``--seeds`` seeds and scored on the evaluation split (VQA score with one answer of score
   1.0 = accuracy); the table ranks the methods by mean accuracy, with the spread over seeds.

``--show-input PNG`` draws what the model sees of an NLVR image at this geometry and exits. It is a benchmark, not a
test: the numbers depend on the schedule (``--finetune-epochs`` ...).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from typing import List, Optional, Sequence


from ...peft.atomic import atomic_write_json
from . import compare
from .demo import DEFAULT_CACHE

DEFAULTS = {
    "vilt": dict(visual_epochs=2, pretrain_epochs=2, pretrain_lr=1e-3, finetune_epochs=1, finetune_lr=5e-4,
                 batch_size=32),
    "meter": dict(visual_epochs=2, pretrain_epochs=2, pretrain_lr=1e-3, finetune_epochs=1, finetune_lr=5e-4,
                  batch_size=32),
}
DONE = "NLVR1_READY.json"
# 400x100 images: ViLT's MinMaxResize(S, 1.67 S) keeps the aspect ratio at S = 160: 256x64, 16 x 4 patches of 16; the
# boxes (x = 0, 150, 300, 100 wide) land on patch columns 0-3, 6-9 and 12-15, the grey gaps on 4-5 and 10-11. Every
# patch is kept (max_image_len = -1; the pre-training named config would cap at 200). Statements are longer than the
# demo's questions (40 text slots).
MODEL_OVERRIDES = {"image_size": 160, "max_text_len": 40, "max_image_len": -1}
#: the generated world the backbone is pre-trained on (shared_apt.vl.data.nlvr_world), cached by its digest
WORLD = {"train_scenes": 6000, "val_scenes": 300, "statements_per_scene": 4, "tower_fraction": 0.7, "seed": 0}
WORLD_DATASET = "shared_apt.vl.data.nlvr_world:WorldCaptionDataset"


def _split_of(path: str):
    path = os.path.abspath(os.path.expanduser(path)).rstrip(os.sep)
    root, split = os.path.dirname(path), os.path.basename(path)
    if not os.path.isfile(os.path.join(path, f"{split}.json")):
        raise SystemExit(f"{path}: not an NLVR split folder (expected {split}.json inside)")
    return root, split


def _sentences(root: str, split: str) -> List[str]:
    from shared_apt.vl.data.writers.nlvr1 import load_examples

    return [e["sentence"] for e in load_examples(root, split)]


def ensure_world(cache: str, world: Optional[dict] = None, show_progress: bool = True) -> str:
    """The generated pre-training world (``nlvr_world_{train,val}.arrow``), written once per configuration into
    ``<cache>/nlvr_world_<digest>``; returns that folder."""
    from shared_apt.vl.data.nlvr_world import WorldConfig, make_visual_world, make_world

    world = dict(world or WORLD)
    seed = int(world.pop("seed", 0))
    config = WorldConfig(**world)
    out = os.path.join(os.path.abspath(os.path.expanduser(cache)),
                       f"nlvr_world_{compare._digest({'seed': seed, **asdict(config)})}")
    marker = os.path.join(out, "NLVR_WORLD_READY.json")
    if not os.path.isfile(marker):
        counts = make_world(out, seed=seed, config=config, show_progress=show_progress)
        atomic_write_json(marker, {"rows": counts, "seed": seed, "config": asdict(config)}, indent=1)
    visual = os.path.join(out, "NLVR_WORLD_VISUAL_READY.json")
    if not os.path.isfile(visual):
        counts = make_visual_world(out, seed=seed, train_scenes=config.train_scenes, val_scenes=config.val_scenes,
                                   tower_fraction=config.tower_fraction)
        atomic_write_json(visual, {"rows": counts}, indent=1)
    return out


def prepare(train_dirs: Sequence[str], eval_dir: str, cache: str, *, all_images: bool = True, image_index: int = 0,
            eval_all_images: bool = False, limit: Optional[int] = None, vocab_size: int = 1000,
            world: Optional[dict] = None, show_progress: bool = True) -> compare.TaskData:
    """Write (once per distinct input) the NLVR arrows, the generated world and the tokenizer (trained on the
    training statements and the world's) into `cache`; return the comparison task."""
    from shared_apt.vl.data.nlvr_world import world_sentences
    from shared_apt.vl.data.text import get_tokenizer, train_wordpiece_tokenizer
    from shared_apt.vl.data.writers.nlvr1 import make_arrow

    world = dict(world or WORLD)
    trains = [_split_of(d) for d in train_dirs]
    eval_root, eval_split = _split_of(eval_dir)
    key = compare._digest({"train": trains, "eval": [eval_root, eval_split], "all_images": all_images,
                           "image_index": image_index, "eval_all_images": eval_all_images, "limit": limit,
                           "vocab_size": vocab_size, "world": world,
                           "mtimes": [os.path.getmtime(os.path.join(r, s, f"{s}.json")) for r, s in
                                      trains + [(eval_root, eval_split)]]})
    world_dir = ensure_world(cache, world, show_progress)
    base = os.path.join(os.path.abspath(os.path.expanduser(cache)), f"nlvr1_{key}")
    data_root, tok_dir = os.path.join(base, "data"), os.path.join(base, "tokenizer")
    marker = os.path.join(base, DONE)
    names = {"train": [f"nlvr1_train_{s}" for _, s in trains], "eval": [f"nlvr1_eval_{eval_split}"]}
    if not os.path.isfile(marker):
        os.makedirs(data_root, exist_ok=True)
        counts = {}
        for root, split in trains:
            counts.update(make_arrow(root, data_root, split=split, name=f"train_{split}", mode="vqa",
                                     image_index=image_index, all_images=all_images, limit=limit,
                                     show_progress=show_progress))
        counts.update(make_arrow(eval_root, data_root, split=eval_split, name=f"eval_{eval_split}", mode="vqa",
                                 image_index=image_index, all_images=eval_all_images, limit=limit,
                                 show_progress=show_progress))
        sentences = [s for root, split in trains for s in _sentences(root, split)[:limit]]
        sentences += world_sentences(2000, int(world.get("seed", 0)))
        train_wordpiece_tokenizer(sentences, tok_dir, vocab_size=vocab_size, min_frequency=1)
        atomic_write_json(marker, {"rows": counts, "train": trains, "eval": [eval_root, eval_split]}, indent=1)
    with open(marker) as f:
        written = json.load(f)
    with open(os.path.join(world_dir, "NLVR_WORLD_READY.json")) as f:
        world_rows = json.load(f)["rows"]
    tok = get_tokenizer(tok_dir)
    rows = written["rows"]
    task = compare.TaskData(
        name=f"NLVR v1, train {'+'.join(s for _, s in trains)} -> eval {eval_split}", data_root=data_root,
        tokenizer=tok_dir, vocab_size=len(tok), cls_token_id=int(tok.cls_token_id), num_labels=2,
        pretrain_datasets=["f30k"],
        pretrain_split_names={"f30k": {"train": ["nlvr_world_train"], "val": ["nlvr_world_val"],
                                       "test": ["nlvr_world_val"]}},
        finetune_datasets=["nlvr1"],
        finetune_split_names={"nlvr1": {"train": names["train"], "val": names["eval"], "test": names["eval"]}},
        eval_tables=names["eval"], metric_name="accuracy", model_overrides=dict(MODEL_OVERRIDES),
        info={"rows": rows, "eval_rows": rows[f"{names['eval'][0]}.arrow"],
              "train_rows": sum(rows[f"{n}.arrow"] for n in names["train"]),
              "world_dir": world_dir, "world": world, "caption_rows": world_rows["nlvr_world_train.arrow"],
              "train_splits": [os.path.join(r, s) for r, s in trains],
              "eval_split": os.path.join(eval_root, eval_split),
              "all_images": all_images, "eval_all_images": eval_all_images, "cache": base})
    task = compare.with_majority(task)
    task.majority_answer = {"0": "false", "1": "true"}.get(task.majority_answer, task.majority_answer)
    return task


def pretrain_overrides(task: compare.TaskData) -> dict:
    """Pre-training reads the generated world (its own folder) with the stored ITM negatives."""
    return {"data_root": task.info["world_dir"], "draw_false_image": 1,
            "dataset_class_overrides": {"f30k": WORLD_DATASET}}


def visual_config(bb: compare.Backbone, task: compare.TaskData, load_path: str, out: str, settings: dict,
                  progress_bar: bool) -> dict:
    """The image side's pre-training (the role of upstream ViLT's ImageNet ViT weights): full training on the
    world's ``nlvr_world_visual_*`` tables, one fixed question whose answers are the scene's attributes (multi-label
    BCE through the VQA head), so the image tokens learn colours, shapes, towers and walls without needing the text."""
    from shared_apt.vl.data.nlvr_world import ATTRIBUTES, VISUAL_TABLES

    vtask = compare.TaskData(
        name="generated world: what is in the boxes", data_root=task.info["world_dir"], tokenizer=task.tokenizer,
        vocab_size=task.vocab_size, cls_token_id=task.cls_token_id, num_labels=len(ATTRIBUTES),
        pretrain_datasets=[], pretrain_split_names={}, finetune_datasets=["nlvr1"],
        finetune_split_names={"nlvr1": {"train": [VISUAL_TABLES[0]], "val": [VISUAL_TABLES[1]],
                                        "test": [VISUAL_TABLES[1]]}},
        eval_tables=[VISUAL_TABLES[1]], model_overrides=dict(MODEL_OVERRIDES))
    cfg = compare.finetune_config(bb, vtask, "full", load_path, os.path.join(out, "visual"),
                                  epochs=settings["visual_epochs"], learning_rate=settings["pretrain_lr"],
                                  batch_size=settings["batch_size"], seed=0, progress_bar=progress_bar)
    cfg.update(exp_name="visual", strict_load=False)
    return cfg


def scaled_init(bb: compare.Backbone, config: dict, path: str, seed: int = 0) -> str:
    """Write (once) a starting checkpoint of the backbone built from `config` whose linear layers (heads excepted)
    are drawn from N(0, 1/hidden) (truncated at 2 std), biases 0, and return its path.

    BERT/ViT initialise every linear layer with std 0.02, a scale chosen for width 768 (0.02 ~ 0.55/sqrt(768)); at
    width 64 it makes each residual branch ~3.5x weaker relative to the LayerNorm'd embeddings, and cross-modal
    matching sits on a long plateau (see the README's NLVR v1 section). Upstream ViLT never meets this: its
    transformer starts from ImageNet ViT weights."""
    import torch

    if os.path.isfile(path):
        return path
    torch.manual_seed(seed)
    model = bb.model_cls()(dict(config, load_path=""))
    std = float(config["hidden_size"]) ** -0.5
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.startswith(("mlm_score", "itm_score", "mpp_score")):
            torch.nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            torch.nn.init.zeros_(module.bias)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"state_dict": model.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def itm_accuracy(bb: compare.Backbone, pretrain_cfg: dict, checkpoint: str, task: compare.TaskData,
                 tables: Sequence[str], batch_size: int = 64) -> float:
    """Accuracy of the pre-trained ITM head read as a true/false classifier on NLVR rows (`tables`, VQA schema):
    "true" when it scores (statement, image) as a match. No NLVR training is involved."""
    import torch

    from shared_apt.vl.data.datasets import NLVR1Dataset
    from shared_apt.vl.data.text import get_mlm_collator, get_tokenizer

    cfg = dict(pretrain_cfg, load_path=checkpoint, data_root=task.data_root)
    model = bb.model_cls()(cfg)
    model.eval()
    tok = get_tokenizer(task.tokenizer)
    ds = NLVR1Dataset(task.data_root, cfg["val_transform_keys"], cfg["image_size"], split="val", names=list(tables),
                      max_text_len=cfg["max_text_len"], tokenizer=tok)
    collator = get_mlm_collator(tok, bool(cfg["whole_word_masking"]), float(cfg["mlm_prob"]))
    right = total = 0
    with torch.no_grad():
        for start in range(0, len(ds), batch_size):
            batch = ds.collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))], collator)
            logits = model.itm_score(model.infer(batch)["cls_feats"])
            truth = torch.tensor([int(labels[0]) for labels in batch["vqa_labels"]])
            right += int((logits.argmax(-1) == truth).sum())
            total += len(truth)
    return right / total


def _aggregate(per_seed: Sequence[Sequence[compare.Row]]) -> List[dict]:
    """One dict per method over seeds: the first seed's row fields, score = mean, score_std (population over
    seeds), scores, checkpoints; sorted by mean score, best first."""
    import statistics

    out = []
    for method in [r.method for r in per_seed[0]]:
        rows = [r for seed_rows in per_seed for r in seed_rows if r.method == method]
        scores = [r.score for r in rows]
        first = asdict(rows[0])
        first.update(score=statistics.fmean(scores), score_std=statistics.pstdev(scores), scores=scores,
                     score_min=min(scores), score_max=max(scores),
                     train_time_s=statistics.fmean(r.train_time_s for r in rows),
                     checkpoints=[r.checkpoint for r in rows], tuned_weights=[r.tuned_weights for r in rows],
                     additional_gflops=rows[0].additional_gflops)
        out.append(first)
    return sorted(out, key=lambda r: -r["score"])


def render_table(agg: Sequence[dict], meta: dict, task: compare.TaskData, backbone: str, seeds: Sequence[int],
                 pre: dict, itm: dict) -> str:
    n = meta.get("seq_len")
    out = [f"### {backbone}: {task.name}, every method from one checkpoint pre-trained (MLM+ITM) on the generated "
           f"world, {len(seeds)} fine-tuning seed(s) {list(seeds)}", "",
           f"| rank | method | updated params | additional GFLOPs (n={n}) | accuracy (%) mean ± std | min-max | "
           f"training time (s) |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(agg, 1):
        out.append(f"| {i} | {r['method']} | {r['updated_params']:,} | {r['additional_gflops']:.6f} | "
                   f"{100 * r['score']:.1f} ± {100 * r['score_std']:.1f} | {100 * r['score_min']:.1f}-"
                   f"{100 * r['score_max']:.1f} | {r['train_time_s']:.1f} |")
    if task.majority is not None:
        out.append(f"| - | majority answer ({task.majority_answer}) | 0 | 0 | {100 * task.majority:.1f} | | 0 |")
    out.append("")
    out.append(f"accuracy: {', '.join(task.eval_tables)} ({task.info.get('eval_rows', '?')} statements, image 0 of "
               f"each), weights after the last epoch. Updated params: the method's own parameters (full: every "
               f"parameter; heads not counted). Additional GFLOPs: fvcore MACs at batch 1, n = {n} tokens "
               f"({meta.get('text_len')} text + {meta.get('image_len')} image, images {meta.get('image_hw')}).")
    out.append(f"Pre-training: MLM+ITM on {task.info['caption_rows']} generated (scene, statement) pairs, "
               f"{pre.get('steps')} steps, {pre.get('time_s', 0):.0f}s{' (reused)' if pre.get('reused') else ''}; "
               f"ITM accuracy on the world's validation pairs {_pct(itm.get('world_val'))}, ITM head read as "
               f"true/false on the held-out NLVR statements {_pct(itm.get('nlvr_eval'))} (no NLVR training).")
    return "\n".join(out)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def run_bench(bb: compare.Backbone, task: compare.TaskData, out: str, settings: dict, methods: Sequence[str],
              seeds: Sequence[int], *, fresh: bool = False, progress_bar: bool = True,
              pretrain_keys: Optional[dict] = None, finetune_keys: Optional[dict] = None) -> dict:
    """Pre-train on the world (cached by config digest), score the ITM head on the held-out NLVR split,
    fine-tune every method for every seed; write ``seed<k>/results.json`` (compare.write_json's format) per seed and
    ``results.json`` (same format, rows = the methods ranked by mean accuracy, with score_std, scores, checkpoints
    and tuned_weights), ``table.md`` and ``results.png`` into `out`. `pretrain_keys` (the visual and MLM+ITM
    stages) and `finetune_keys` are config keys such as ``{"precision": "bf16"}`` (compare.run_precisions)."""
    pre_over, fine_over = dict(pretrain_keys or {}), dict(finetune_keys or {})
    compare.quiet_lightning()
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    pcfg = compare.pretrain_config(bb, task, out, epochs=settings["pretrain_epochs"],
                                   learning_rate=settings["pretrain_lr"], batch_size=settings["batch_size"], seed=0,
                                   progress_bar=progress_bar, **pretrain_overrides(task), **pre_over)
    init = scaled_init(bb, pcfg, os.path.join(out, "pretrain", f"init_{bb.name}_h{pcfg['hidden_size']}_"
                                                            f"{compare._digest(pcfg)}.ckpt"))
    vcfg = {**visual_config(bb, task, init, out, settings, progress_bar), **pre_over}
    print(f"[nlvr1] visual pre-training (what is in the boxes: {vcfg['vqav2_label_size']} scene attributes, fixed "
          f"question) for {vcfg['max_epoch']} epochs ...", flush=True)
    visual = compare.pretrain(vcfg, bb, reuse=not fresh)
    print(f"[nlvr1] visual pre-training: {visual['steps']} steps, {visual['time_s']:.0f}s", flush=True)
    pcfg.update(load_path=visual["checkpoint"], strict_load=False)
    print(f"[nlvr1] pre-training tiny {bb.name} (MLM+ITM) on the generated world {task.info['world_dir']} "
          f"({task.info['caption_rows']} pairs, {settings['pretrain_epochs']} epochs) ...", flush=True)
    pre = compare.pretrain(pcfg, bb, reuse=not fresh)
    itm = {"world_val": pre["metrics"].get("itm/val/accuracy_epoch")}
    itm["nlvr_eval"] = itm_accuracy(bb, pcfg, pre["checkpoint"], task, task.eval_tables)
    print(f"[nlvr1] pre-trained: {pre['steps']} steps, {pre['time_s']:.0f}s; ITM world val {_pct(itm['world_val'])}, "
          f"ITM as true/false on {task.eval_tables[0]} {_pct(itm['nlvr_eval'])}", flush=True)
    per_seed, meta = [], {}
    for seed in seeds:
        seed_dir = os.path.join(out, f"seed{seed}")
        rows, meta = compare.finetune_all(bb, task, methods, pre["checkpoint"], seed_dir,
                                          epochs=settings["finetune_epochs"], learning_rate=settings["finetune_lr"],
                                          batch_size=settings["batch_size"], seed=seed, progress_bar=progress_bar,
                                          save_tuned_weights=True, **fine_over)
        compare.write_json(os.path.join(seed_dir, "results.json"), rows, meta, task, bb.name, pre,
                           {"seed": seed, "itm": itm, **settings, **fine_over,
                            "pretrain_precision": pcfg.get("precision")})
        per_seed.append(rows)
    agg = _aggregate(per_seed)
    table = render_table(agg, meta, task, bb.name, seeds, pre, itm)
    total = time.perf_counter() - t0
    doc_path = os.path.join(out, "results.json")
    atomic_write_json(doc_path, {
        "backbone": bb.name, "task": task.name, "metric": task.metric_name, "eval_tables": task.eval_tables,
        "seq_len": meta.get("seq_len"), "seq_len_detail": dict(meta),
        "majority_baseline": {"score": task.majority, "answer_label": task.majority_answer},
        "pretrain": dict(pre), "pretrain_config_world": task.info["world"], "itm": itm, "task_info": task.info,
        "rows": agg, "seeds": list(seeds), "total_time_s": total, **settings, **fine_over,
        "pretrain_precision": pcfg.get("precision"),
        "device": "cuda" if _cuda() else "cpu"}, indent=2, default=str)
    compare.plot(os.path.join(out, "results.png"),
                 [compare.Row(**{k: r[k] for k in compare.Row.__dataclass_fields__}) for r in agg], task, bb.name)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n")
    return {"table": table, "json": doc_path, "rows": agg, "itm": itm, "total_time_s": total, "pretrain": pre}


def model_view(image, image_size: int, patch_size: int, max_image_len: int = -1, scale: int = 2):
    """What the model sees of an NLVR image (PIL): the ``pixelbert`` transform at `image_size` (ViLT's
    MinMaxResize, ToTensor, Normalize(0.5, 0.5)), de-normalised back to pixels, magnified `scale` times, with the
    patch grid drawn and the patches that ``max_image_len`` would drop (a random draw, as ViLT's visual_embed) greyed
    out. Returns (PIL image, {"hw": [h, w], "patches": n, "kept": k})."""
    import torch
    from PIL import Image, ImageDraw

    from shared_apt.vl.data.transforms import keys_to_transforms

    x = keys_to_transforms(["pixelbert"], size=image_size)[0](image.convert("RGB"))
    h, w = int(x.shape[1]), int(x.shape[2])
    pixels = ((x * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    view = Image.fromarray(pixels).resize((w * scale, h * scale), Image.NEAREST)
    gh, gw = h // patch_size, w // patch_size
    n = gh * gw
    kept = n if max_image_len is None or max_image_len < 0 else min(n, max_image_len)
    keep = set(torch.multinomial(torch.ones(n), kept).tolist()) if kept < n else set(range(n))
    draw = ImageDraw.Draw(view)
    for i in range(n):
        r, c = divmod(i, gw)
        box = [c * patch_size * scale, r * patch_size * scale, (c + 1) * patch_size * scale - 1,
               (r + 1) * patch_size * scale - 1]
        if i not in keep:
            draw.rectangle(box, fill=(60, 60, 60))
        draw.rectangle(box, outline=(255, 0, 0))
    return view, {"hw": [h, w], "patches": n, "kept": kept}


def input_figure(split_dir: str, path: str, identifier: Optional[str] = None) -> dict:
    """A PNG of what the model sees (:func:`model_view` at this benchmark's geometry) for the first example of an
    NLVR split (or `identifier`), a scattered and a tower scene of the generated world, each above its raw image."""
    import io
    import random

    from PIL import Image, ImageDraw

    from shared_apt.vl.data import nlvr_world
    from shared_apt.vl.data.writers.nlvr1 import image_path, load_examples, rgb_png_bytes

    root, split = _split_of(split_dir)
    examples = load_examples(root, split)
    example = next((e for e in examples if identifier in (None, e["identifier"])), None)
    if example is None:
        raise SystemExit(f"{split_dir}: no example with identifier {identifier!r}")
    image = Image.open(io.BytesIO(rgb_png_bytes(image_path(root, split, example, 0))))
    shown = [(f"NLVR {split}-{example['identifier']}-0.png (400x100)", image),
             ("generated world, scattered", nlvr_world.render(nlvr_world.random_scene(random.Random(3), 0.0))),
             ("generated world, towers", nlvr_world.render(nlvr_world.random_scene(random.Random(5), 1.0)))]
    size, patch = MODEL_OVERRIDES["image_size"], 16
    panels, info = [], {}
    for label, im in shown:
        view, info = model_view(im, size, patch, MODEL_OVERRIDES["max_image_len"], scale=2)
        panels.append((label, im.resize(view.size, Image.NEAREST)))
        panels.append((f"model input: {info['hw'][1]}x{info['hw'][0]}, {info['kept']}/{info['patches']} patches "
                       f"of {patch} (x2)", view))
    width = max(p.size[0] for _, p in panels) + 8
    canvas = Image.new("RGB", (width, sum(p.size[1] + 16 for _, p in panels) + 4), (255, 255, 255))
    draw, y = ImageDraw.Draw(canvas), 2
    for label, panel in panels:
        draw.text((4, y), label, fill=(0, 0, 0))
        canvas.paste(panel, (4, y + 14))
        y += panel.size[1] + 16
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path, optimize=True)
    return info


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_apt.harness.experiments.nlvr1", description=__doc__.split("\n\n")[0])
    ap.add_argument("train", nargs="+", help="NLVR split folder(s) to train on (<root>/<split> with <split>.json)")
    ap.add_argument("--eval", required=True, help="NLVR split folder to score on")
    ap.add_argument("--cache", default=os.environ.get("NLVR1_CACHE") or DEFAULT_CACHE)
    ap.add_argument("--out", default=None, help="results folder (default <cache>/nlvr1_bench_<model>_<train>_<eval>)")
    ap.add_argument("--image-index", type=int, default=None,
                    help="train on this permutation image only (default: all six as rows)")
    ap.add_argument("--eval-all-images", action="store_true", help="score all six permutations of every statement")
    ap.add_argument("--limit", type=int, default=None, help="use only the first LIMIT statements of every split")
    ap.add_argument("--seeds", type=int, default=3, help="fine-tune every method with seeds 0..N-1 (default 3)")
    ap.add_argument("--world-scenes", type=int, default=None,
                    help=f"scenes of the generated pre-training world (default {WORLD['train_scenes']}; "
                         f"validation: 1/20 of it, at least 10)")
    ap.add_argument("--visual-epochs", type=int, default=None,
                    help="epochs of the image side's pre-training on the world's scene attributes (default 2)")
    ap.add_argument("--show-input", metavar="PNG", default=None,
                    help="only draw what the model sees of the first training image (and of the generated world)")
    compare.add_run_arguments(ap)
    args = ap.parse_args(argv)
    if args.show_input:
        info = input_figure(args.train[0], args.show_input)
        print(f"[nlvr1] {args.show_input}: model input {info['hw'][1]}x{info['hw'][0]}, {info['kept']} of "
              f"{info['patches']} patches")
        return 0
    t0 = time.perf_counter()
    try:
        bb, d, methods = compare.resolve_run(args, DEFAULTS)
    except compare.BackboneUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        raise SystemExit(f"--seeds {args.seeds}: expected at least 1")
    world = dict(WORLD)
    if args.world_scenes is not None:
        world["train_scenes"], world["val_scenes"] = args.world_scenes, max(10, args.world_scenes // 20)
    print(f"[nlvr1] writing arrows, the generated world and the tokenizer into {args.cache} (once per input) ...",
          flush=True)
    task = prepare(args.train, args.eval, args.cache, all_images=args.image_index is None,
                   image_index=args.image_index or 0, eval_all_images=args.eval_all_images, limit=args.limit,
                   world=world, show_progress=not args.no_progress)
    print(f"[nlvr1] {task.info['train_rows']} training rows, {task.info['caption_rows']} pre-training pairs, "
          f"{task.info['eval_rows']} scored rows; majority answer ({task.majority_answer}) scores "
          f"{100 * task.majority:.1f}", flush=True)
    splits = "_".join(os.path.basename(p) for p in task.info["train_splits"]) + "_" + \
        os.path.basename(task.info["eval_split"])
    out = args.out or os.path.join(args.cache, f"nlvr1_bench_{args.model}_{splits}")
    seeds = [args.seed + k for k in range(args.seeds)]
    pre_over, fine_over = compare.run_precisions("nlvr1", bb, args)
    res = run_bench(bb, task, out, d, methods, seeds, fresh=args.fresh, progress_bar=not args.no_progress,
                    pretrain_keys=pre_over, finetune_keys=fine_over)
    print()
    print(res["table"])
    print()
    print(f"[nlvr1] {time.perf_counter() - t0:.0f}s in all; table {os.path.join(out, 'table.md')}, "
          f"JSON {res['json']} (per seed: {os.path.join(out, 'seed<k>', 'results.json')}), checkpoints and tuned "
          f"weights under {os.path.join(out, 'seed<k>', 'finetune')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
