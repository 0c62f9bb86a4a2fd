"""The APT paper's figures (Wang et al., AAAI 2024, arXiv:2306.15706) drawn from this project's checkpoints and
result files.

    python -m shared_apt.harness.figures attention --ckpt CKPT --method apt [--backbone vilt] [--data ARROW_ROOT]
        [--split val] [--index 0] [--samples 1] [--text 15 --image 15 --prompts 30] [--norm row|none] [--out DIR]
    python -m shared_apt.harness.figures tradeoff RESULTS.json [RESULTS.json ...] [--out DIR]

``attention`` (the paper's Fig. 3): loads a fine-tuned checkpoint written by the training driver (Lightning
``.ckpt`` with the Sacred config in ``hyper_parameters.config``, e.g. the demo's or the NLVR v1 bench's
``finetune_<method>_*/version_0/checkpoints/last.ckpt``), runs ``--samples`` examples of the checkpoint's own data
(or ``--data``), records every layer's attention probabilities (``shared_apt.vl.speed.record_attention``) and draws,
per layer, the attention of the selected text and image tokens (rows) over the selected text, image and prompt tokens
(columns) in six parts: Text-Text, Text-Image, Text-Prompt, Image-Text, Image-Image, Image-Prompt.

* shallow / deep prompt: the prompts are ordinary keys of the softmax attention; the matrix is the attention
  probabilities averaged over heads (shallow prompts are also rows of the sequence: those rows are not drawn).
* APT, as the authors' drawing code combines them (DoubtedSteam/APT, ``vision_transformer_apt_draw.py``): the
  head-averaged softmax attention with each column j multiplied by the L2 norm of the attention's input token j
  (||LN1(h)_j||), next to APT's scores ReLU(X K^T) with each column j multiplied by ||P'_j||^2, concatenated to
  [N, N + p] and passed through a softmax over the last dimension (:func:`apt_attention_matrix`).
* With several samples the matrices are averaged position by position over the samples where both the query and the
  key are real tokens (padding excluded). ViLT orders the image patches at random (upstream's ``visual_embed``; the
  tool seeds torch with ``--seed`` first), so an image position is a patch only within one sample: one sample is
  drawn with each image token's patch "row,col" and each text token's string.
* "Most active" tokens (the authors' selection code is not released): per group (text, image, prompt), the
  ``--text`` / ``--image`` / ``--prompts`` real tokens whose columns receive the largest total attention from all real
  text and image query rows of that layer (ties: lower position first), drawn in sequence order; fewer when fewer
  exist. Rows use the same text and image tokens as the columns (:func:`select_tokens`).
* ``--norm row`` (default, as the authors' drawing): each row min-max normalised over all its real columns (text,
  image and every prompt) before the selection; ``--norm none``: the matrix values. The ``.npz`` holds both
  (``layer<i>_<part>`` and ``layer<i>_<part>_row``) and the selected positions (``layer<i>_{text,image,prompt}``).

Writes ``attention_<method>.png`` and ``attention_<method>.npz``. Single-stream backbones only (ViLT): the paper draws
the figure for ViLT.

``tradeoff`` (the paper's Fig. 4): accuracy against updated parameters (log scale; methods with 0 updated parameters
are drawn at 1 and labelled "(0)") and against additional GFLOPs, one labelled point per method, the mean over the
given files with the standard deviation (n - 1) as error bars when a method appears in several files (seeds). Reads
the JSON of ``shared_apt.harness.experiments.compare`` (the demo and the NLVR v1 bench: rows with ``method``,
``updated_params``, ``additional_gflops``, ``score`` in [0, 1]) and of the CLIP demo (``clip_apt.demo``: rows with
``label``, ``trainable_params``, ``gflops_per_image`` at ViT-B/16 shapes, ``harmonic_mean`` in %). Writes
``tradeoff.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

PARTS = ("Text-Text", "Text-Image", "Text-Prompt", "Image-Text", "Image-Image", "Image-Prompt")
PROMPT_METHODS = ("shallow_prompt", "deep_prompt", "apt")


class FigureError(ValueError):
    """A checkpoint, sample or result file the figures cannot be drawn from (the message names it)."""


# ---------------------------------------------------------------------------------------------------------------
# The matrices


def apt_attention_matrix(probs: torch.Tensor, x: torch.Tensor, scores: torch.Tensor,
                         prompts: torch.Tensor) -> torch.Tensor:
    """The authors' drawing matrix for APT: softmax over the last dimension of
    [mean_heads(probs) * ||x_j||  |  scores * ||P'_j||^2]  ->  [B, N, N + p].

    ``probs`` [B, heads, N, N] softmax attention, ``x`` [B, N, C] the attention's input (LN1(h)), ``scores``
    [B, N, p] APT's ReLU(X K^T), ``prompts`` [p, C] P'."""
    sa = probs.float().mean(dim=1) * x.float().norm(dim=-1)[:, None, :]
    apt = scores.float() * prompts.float().pow(2).sum(dim=-1)[None, None, :]
    return torch.cat([sa, apt], dim=-1).softmax(dim=-1)


@dataclass
class Layout:
    """Where the groups are in one layer's matrix [B, N, L]: query rows and key columns share the first N positions
    (the token sequence); prompt columns are ``prompt`` (positions of the key axis)."""

    text: torch.Tensor          # positions of the text tokens in the sequence
    image: torch.Tensor         # positions of the image tokens
    prompt: torch.Tensor        # key positions of the prompts
    valid: torch.Tensor         # [B, L] bool: key position j is a real token for sample b (prompts always)


def sequence_layout(text_masks: torch.Tensor, image_masks: torch.Tensor, n: int, keys: int, method: str,
                    placement: str = "append") -> Layout:
    """The layout of ViLT's joint sequence [text | image] of ``n`` positions (``n`` > text + image: shallow prompts,
    ``placement`` "append" or "prepend") with ``keys`` key positions (> n: deep prompts appended as extra keys; APT's
    matrix has n + p columns)."""
    t, i = text_masks.shape[1], image_masks.shape[1]
    extra_rows, extra_keys = n - (t + i), keys - n
    B = text_masks.shape[0]
    real = torch.cat([text_masks.bool(), image_masks.bool()], dim=1)
    if method == "shallow_prompt":
        if extra_rows <= 0 or extra_keys != 0:
            raise FigureError(f"shallow_prompt: expected prompt tokens in the sequence ({n} positions for {t} text + "
                              f"{i} image) and no extra keys ({keys} keys)")
        start = 0 if placement == "prepend" else t + i
        off = extra_rows if placement == "prepend" else 0
        prompt = torch.arange(start, start + extra_rows)
        ones = torch.ones(B, extra_rows, dtype=torch.bool)
        valid = torch.cat([ones, real], 1) if placement == "prepend" else torch.cat([real, ones], 1)
        return Layout(torch.arange(off, off + t), torch.arange(off + t, off + t + i), prompt, valid)
    if method in ("deep_prompt", "apt"):
        if extra_rows != 0 or extra_keys <= 0:
            raise FigureError(f"{method}: expected {t} text + {i} image positions ({n} found) and prompt columns "
                              f"after them ({keys} keys)")
        valid = torch.cat([real, torch.ones(B, extra_keys, dtype=torch.bool)], 1)
        return Layout(torch.arange(t), torch.arange(t, t + i), torch.arange(n, keys), valid)
    raise FigureError(f"method {method!r}: the attention figure draws prompt methods, one of {PROMPT_METHODS}")


def average_over_samples(matrix: torch.Tensor, layout: Layout):
    """(mean [N, L] over the samples where query row i and key j are both real tokens, real [L] = real in at least
    one sample). The query rows are the first N key positions."""
    n = matrix.shape[1]
    w = (layout.valid[:, :n, None] & layout.valid[:, None, :]).float()
    count = w.sum(0)
    mean = (matrix.float() * w).sum(0) / count.clamp(min=1)
    return mean, layout.valid.any(0)


def row_normalised(matrix: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Each row min-max normalised to [0, 1] over its real columns (the authors' drawing); padded columns 0."""
    lo = matrix.masked_fill(~real[None, :], float("inf")).amin(dim=1, keepdim=True)
    hi = matrix.masked_fill(~real[None, :], float("-inf")).amax(dim=1, keepdim=True)
    out = (matrix - lo) / (hi - lo).clamp(min=1e-12)
    return out.masked_fill(~real[None, :], 0.0)


def most_active(received: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """The (at most) ``k`` positions of ``candidates`` with the largest ``received`` value (ties: lower position
    first), in increasing position order."""
    candidates = candidates.long()
    if candidates.numel() == 0 or k <= 0:
        return candidates[:0]
    order = sorted(candidates.tolist(), key=lambda j: (-float(received[j]), j))
    return torch.tensor(sorted(order[:k]), dtype=torch.long)


def select_tokens(matrix: torch.Tensor, real: torch.Tensor, layout: Layout, k_text: int = 15, k_image: int = 15,
                  k_prompt: int = 30) -> Dict[str, torch.Tensor]:
    """The most active tokens of one layer's matrix [N, L] (``real`` [L]): per group the real tokens whose columns
    receive the largest total attention from all real text and image query rows."""
    rows = torch.cat([layout.text, layout.image])
    rows = rows[real[rows]]
    received = matrix[rows].sum(0)
    return {"text": most_active(received, layout.text[real[layout.text]], k_text),
            "image": most_active(received, layout.image[real[layout.image]], k_image),
            "prompt": most_active(received, layout.prompt, k_prompt)}


def six_parts(matrix: torch.Tensor, chosen: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """The six blocks of ``matrix`` [N, L] for the chosen text / image rows and text / image / prompt columns."""
    out = {}
    for rname, r in (("Text", chosen["text"]), ("Image", chosen["image"])):
        for cname, c in (("Text", chosen["text"]), ("Image", chosen["image"]), ("Prompt", chosen["prompt"])):
            out[f"{rname}-{cname}"] = matrix[r][:, c].numpy()
    return out


@dataclass
class LayerMap:
    name: str
    chosen: Dict[str, torch.Tensor]
    parts: Dict[str, np.ndarray]        # matrix values
    parts_row: Dict[str, np.ndarray]    # row min-max normalised (the authors' drawing)
    image_start: int                    # sequence position of the image [CLS] token
    text_tokens: List[str] = field(default_factory=list)    # single sample: the selected text tokens' strings
    image_tokens: List[str] = field(default_factory=list)   # single sample: "cls" or the patch's "row,col"


def layer_maps(records, text_masks, image_masks, method: str, placement: str = "append", apt_modules=None,
               k_text: int = 15, k_image: int = 15, k_prompt: int = 30) -> List[LayerMap]:
    """Per recorded attention call (``shared_apt.vl.speed.AttentionRecord``) the six parts of its drawing matrix.
    ``apt_modules``: for APT, the APT module of each record (its ``scores`` and ``prompts``)."""
    maps = []
    for li, rec in enumerate(records):
        if method == "apt":
            mod = apt_modules[li]
            with torch.no_grad():
                scores = mod.scores(rec.inputs)
            matrix = apt_attention_matrix(rec.probs, rec.inputs, scores, mod.prompts.detach())
        else:
            matrix = rec.probs.float().mean(dim=1)
        layout = sequence_layout(text_masks, image_masks, rec.probs.shape[2], matrix.shape[2], method, placement)
        mean, real = average_over_samples(matrix, layout)
        chosen = select_tokens(mean, real, layout, k_text, k_image, k_prompt)
        maps.append(LayerMap(rec.name, chosen, six_parts(mean, chosen), six_parts(row_normalised(mean, real), chosen),
                             int(layout.image[0]) if len(layout.image) else 0))
    return maps


# ---------------------------------------------------------------------------------------------------------------
# Model, sample, recording


def load_finetuned_checkpoint(path: str, backbone: str = "vilt", method: Optional[str] = None,
                          data_root: Optional[str] = None):
    """(model in eval mode, its config, the Backbone) from a checkpoint written by the training driver: the Sacred
    config stored in ``hyper_parameters.config``, loaded with ``load_path=path, test_only=True`` (the project's
    evaluation build: every tensor must be in the file)."""
    from shared_apt.vl.checkpoint import load_checkpoint
    from shared_apt.vl.training.run import plain

    from .experiments import compare

    bb = compare.get_backbone(backbone)
    if bb.two_stream:
        raise FigureError(f"--backbone {backbone}: the attention figure draws single-stream backbones (vilt); "
                          f"{backbone} has separate text and image streams")
    ckpt = load_checkpoint(path)
    config = ckpt.get("hyper_parameters", {}).get("config") if isinstance(ckpt, dict) else None
    if not isinstance(config, dict):
        raise FigureError(f"{path}: no hyper_parameters.config (expected a checkpoint written by this project's "
                          f"training driver, e.g. <log_dir>/<run>/version_0/checkpoints/last.ckpt)")
    if method is not None and config.get("peft") != method:
        raise FigureError(f"{path}: the checkpoint was tuned with peft={config.get('peft')!r}, not --method {method}")
    config = plain(dict(config))
    config.update(load_path=path, test_only=True, tuned_path="", compile_layers=False, recompute_layers=False)
    if data_root:
        config["data_root"] = data_root
    del ckpt
    model = bb.model_cls()(config).eval()
    return model, config, bb


def sample_batch(config: dict, bb, split: str = "val", index: int = 0, samples: int = 1):
    """Samples ``index`` .. ``index + samples - 1`` of the config's datasets (``split``), collated as in training."""
    if split not in ("train", "val", "test"):
        raise FigureError(f"--split {split!r}: expected train, val or test")
    dm = bb.datamodule_factory()(config)
    dm.setup("test")
    dataset = getattr(dm, f"{split}_dataset")
    if samples < 1 or index < 0 or index + samples > len(dataset):
        raise FigureError(f"samples {index}..{index + samples - 1} requested; the {split} split of "
                          f"{config['data_root']} has {len(dataset)}")
    return dm.collate([dataset[i] for i in range(index, index + samples)]), dm


def attention_figure_data(model, batch, method: str, k_text: int = 15, k_image: int = 15, k_prompt: int = 30,
                          tokenizer=None, seed: int = 0) -> List[LayerMap]:
    """Run ``batch`` through ``model`` (ViLT) with the attention recorded (torch seeded with ``seed`` first: ViLT
    orders the image patches at random); the per-layer maps (with one sample: labels of the selected text tokens,
    through ``tokenizer``, and image patches)."""
    import shared_apt
    from shared_apt.peft.methods.apt import APTModule
    from shared_apt.peft.sites import backbone_spec
    from shared_apt.vl.speed import record_attention

    if model.training:
        raise FigureError("the attention figure is drawn in eval mode (no dropout): call model.eval() first")
    cfg = shared_apt.peft_config(model)
    if cfg is None or cfg.method != method:
        raise FigureError(f"the model is tuned with {None if cfg is None else cfg.method!r}, not {method!r}")
    spec = backbone_spec(model)
    placement = "append"
    if method == "shallow_prompt":
        placement = spec.shallow_sites()[0].default_placement if cfg.placement == "default" else cfg.placement
    torch.manual_seed(seed)   # ViLT orders the image patches at random (upstream's visual_embed)
    with torch.no_grad(), record_attention(model) as records:
        out = model.infer(batch)
    by_name = {r.name: r for r in records}
    sites = [s for s in spec.attention_sites if s.name in by_name]
    if len(records) != len(sites) or not sites:
        raise FigureError(f"recorded {len(records)} attention calls for {len(spec.attention_sites)} declared sites "
                          f"({[r.name for r in records][:4]} ...): expected one call per site")
    records = [by_name[s.name] for s in sites]
    apt_modules = None
    if method == "apt":
        apt_modules = []
        for s in sites:
            mods = [m for m in s.host.children() if isinstance(m, APTModule)]
            if len(mods) != 1 or s.query_input is not s.host:
                raise FigureError(f"{s.name}: expected one APT module whose query input is the attention's input")
            apt_modules.append(mods[0])
    maps = layer_maps(records, out["text_masks"], out["image_masks"], method, placement, apt_modules,
                      k_text, k_image, k_prompt)
    if out["text_ids"].shape[0] == 1:
        ids = out["text_ids"][0]
        patches = out["patch_index"][0][0] if out.get("patch_index") is not None else None
        for m in maps:
            if tokenizer is not None:
                m.text_tokens = tokenizer.convert_ids_to_tokens([int(ids[j]) for j in m.chosen["text"]])
            if patches is not None:
                m.image_tokens = ["cls" if o < 0 else f"{int(patches[o][0])},{int(patches[o][1])}"
                                  for o in (m.chosen["image"] - m.image_start - 1).tolist()]
    return maps


# ---------------------------------------------------------------------------------------------------------------
# Drawing and saving


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_npz(path: str, maps: List[LayerMap]) -> None:
    arrays = {}
    for i, m in enumerate(maps):
        for part in PARTS:
            arrays[f"layer{i}_{part}"] = m.parts[part]
            arrays[f"layer{i}_{part}_row"] = m.parts_row[part]
        for g in ("text", "image", "prompt"):
            arrays[f"layer{i}_{g}"] = m.chosen[g].numpy()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)


def draw_attention(path: str, maps: List[LayerMap], title: str, norm: str = "row"):
    """One row per layer: the six parts side by side (widths by their column counts), one colour bar per layer.
    Returns the figure's axes [layers][6] (closed after saving)."""
    if norm not in ("row", "none"):
        raise FigureError(f"--norm {norm!r}: expected row or none")
    plt = _plt()
    counts = [len(maps[0].chosen[g]) for g in ("text", "image", "prompt")]
    widths = [max(1, c) for c in counts] * 2 + [max(1, sum(counts)) / 25]
    fig, axes = plt.subplots(len(maps), 7, figsize=(2.0 + 0.16 * 2 * sum(counts), 2.4 * len(maps) + 0.6),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    for li, m in enumerate(maps):
        parts = m.parts_row if norm == "row" else m.parts
        vmax = max(float(p.max()) for p in parts.values() if p.size) if any(p.size for p in parts.values()) else 1.0
        image = None
        for pi, part in enumerate(PARTS):
            ax = axes[li][pi]
            data = parts[part]
            image = ax.imshow(data if data.size else np.zeros((1, 1)), aspect="auto", cmap="viridis", vmin=0.0,
                              vmax=vmax, interpolation="nearest")
            ax.set_title(f"{part} {data.shape[0]}x{data.shape[1]}", fontsize=7)
            ax.set_xticks([])
            rows = m.chosen[part.split("-")[0].lower()]
            if pi in (0, 3):
                names = m.text_tokens if part.startswith("Text") else m.image_tokens
                labels = names if names else [str(int(j)) for j in rows]
                ax.set_yticks(range(len(rows)), labels, fontsize=4)
                ax.set_ylabel(f"layer {li}", fontsize=8)
            else:
                ax.set_yticks([])
        fig.colorbar(image, cax=axes[li][6])
        axes[li][6].tick_params(labelsize=6)
        axes[li][6].set_ylabel("row min-max" if norm == "row" else "attention", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return axes


# ---------------------------------------------------------------------------------------------------------------
# Fig. 4: accuracy against parameters and FLOPs


@dataclass
class Point:
    label: str
    params: List[float] = field(default_factory=list)
    gflops: List[float] = field(default_factory=list)
    accuracy: List[float] = field(default_factory=list)   # %


COMPARE_KEYS = ("method", "updated_params", "additional_gflops", "score")
CLIP_KEYS = ("label", "trainable_params", "gflops_per_image", "harmonic_mean")


def read_results(paths: Sequence[str]):
    """(points by label in first-seen order, y-axis name, FLOPs-axis note, majority scores in %) from result files of
    one kind (compare.py or the CLIP demo)."""
    points: Dict[str, Point] = {}
    kinds, metrics, majority = set(), set(), []
    for path in paths:
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise FigureError(f"{path}: cannot read a results JSON ({e})") from e
        rows = doc.get("rows") if isinstance(doc, dict) else None
        if not isinstance(rows, list) or not rows:
            raise FigureError(f"{path}: expected an object with a non-empty 'rows' list")
        for i, row in enumerate(rows):
            if all(k in row for k in COMPARE_KEYS):
                kinds.add("compare")
                metrics.add(str(doc.get("metric", "score")))
                if row["score"] is None:
                    print(f"[figures] {path}: row {i} ({row['method']}) has no score; not drawn", file=sys.stderr)
                    continue
                label, p, g, acc = row["method"], row["updated_params"], row["additional_gflops"], 100 * row["score"]
            elif all(k in row for k in CLIP_KEYS):
                kinds.add("clip")
                metrics.add("harmonic mean of base and new accuracy")
                label, p, g, acc = row["label"], row["trainable_params"], row["gflops_per_image"], row["harmonic_mean"]
            else:
                raise FigureError(f"{path}: row {i} has keys {sorted(row)}; expected {list(COMPARE_KEYS)} "
                                  f"(shared_apt.harness.experiments.compare) or {list(CLIP_KEYS)} (clip_apt.demo)")
            pt = points.setdefault(str(label), Point(str(label)))
            pt.params.append(float(p))
            pt.gflops.append(float(g))
            pt.accuracy.append(float(acc))
        base = doc.get("majority_baseline") if isinstance(doc, dict) else None
        if isinstance(base, dict) and base.get("score") is not None:
            majority.append(100 * float(base["score"]))
    if len(kinds) > 1 or len(metrics) > 1:
        raise FigureError(f"{list(paths)}: the files report different things ({sorted(kinds)}, metrics "
                          f"{sorted(metrics)}); draw them separately")
    flops_note = " per image (ViT-B/16 shapes)" if kinds == {"clip"} else ""
    return points, metrics.pop(), flops_note, majority


def _mean_std(values: List[float]):
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def draw_tradeoff(path: str, points: Dict[str, Point], metric: str, flops_note: str = "",
                  majority: Sequence[float] = (), title: str = ""):
    """Two panels: accuracy vs updated parameters (log x; 0 drawn at 1) and vs additional GFLOPs. Each method is one
    ``errorbar`` container labelled with its name (x, y = means; error bars = standard deviations). Returns the two
    axes (the figure is closed after saving)."""
    plt = _plt()
    fig, (ax_p, ax_f) = plt.subplots(1, 2, figsize=(11, 4.5))
    for pt in points.values():
        (px, sx), (fx, sf), (y, sy) = _mean_std(pt.params), _mean_std(pt.gflops), _mean_std(pt.accuracy)
        zero = px == 0
        for ax, x, xerr in ((ax_p, max(1.0, px), sx), (ax_f, fx, sf)):
            ax.errorbar([x], [y], yerr=[sy] if sy else None, xerr=[xerr] if xerr else None, fmt="o", capsize=3,
                        label=pt.label)
            ax.annotate(pt.label + (" (0)" if zero and ax is ax_p else ""), (x, y), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
    for ax in (ax_p, ax_f):
        if majority:
            ax.axhline(sum(majority) / len(majority), ls="--", lw=1, color="gray", label="_majority answer")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(True, which="both", alpha=0.3)
    ax_p.set_xscale("log")
    ax_p.set_xlabel("updated parameters (log scale)")
    ax_f.set_xlabel(f"additional GFLOPs{flops_note}")
    n = max(len(p.accuracy) for p in points.values())
    fig.suptitle((title + ": " if title else "") + f"accuracy against cost ({n} file(s); mean, error bars = std)"
                 + ("; dashed: majority answer" if majority else ""), fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ax_p, ax_f


# ---------------------------------------------------------------------------------------------------------------
# Command line


def _attention(args) -> int:
    from shared_apt.vl.data.text import get_tokenizer

    model, config, bb = load_finetuned_checkpoint(args.ckpt, args.backbone, args.method, args.data)
    batch, _ = sample_batch(config, bb, args.split, args.index, args.samples)
    maps = attention_figure_data(model, batch, args.method, args.text, args.image, args.prompts,
                                 get_tokenizer(config["tokenizer"]), args.seed)
    png = os.path.join(args.out, f"attention_{args.method}.png")
    npz = os.path.join(args.out, f"attention_{args.method}.npz")
    what = f"sample {args.index}" if args.samples == 1 else f"samples {args.index}-{args.index + args.samples - 1}"
    draw_attention(png, maps, f"{args.method}: {'+'.join(config['datasets'])} {args.split} {what}; most active "
                              f"{args.text} text, {args.image} image, {args.prompts} prompt tokens", args.norm)
    save_npz(npz, maps)
    print(f"[figures] {len(maps)} layers: {png}, {npz}")
    return 0


def _tradeoff(args) -> int:
    points, metric, note, majority = read_results(args.results)
    png = os.path.join(args.out, "tradeoff.png")
    draw_tradeoff(png, points, metric, note, majority, args.title)
    print(f"[figures] {len(points)} methods: {png}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_apt.harness.figures", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attention", help="per-layer attention over text, image and prompt tokens (Fig. 3)")
    a.add_argument("--ckpt", required=True, help="fine-tuned checkpoint written by the training driver (.ckpt)")
    a.add_argument("--method", required=True, choices=PROMPT_METHODS)
    a.add_argument("--backbone", default="vilt", help="comparison backbone name (default %(default)s)")
    a.add_argument("--data", default=None, help="arrow root to take the samples from (default: the checkpoint's)")
    a.add_argument("--split", default="val", help="train, val or test split of the config's datasets")
    a.add_argument("--index", type=int, default=0, help="first sample")
    a.add_argument("--samples", type=int, default=1, help="samples averaged (default 1)")
    a.add_argument("--text", type=int, default=15, help="most active text tokens drawn")
    a.add_argument("--image", type=int, default=15, help="most active image tokens drawn")
    a.add_argument("--prompts", type=int, default=30, help="most active prompt tokens drawn")
    a.add_argument("--seed", type=int, default=0, help="torch seed (ViLT's random patch order)")
    a.add_argument("--norm", default="row", choices=("row", "none"), help="row min-max (authors) or raw values")
    a.add_argument("--out", default="figures", help="output folder (default %(default)s)")
    t = sub.add_parser("tradeoff", help="accuracy against updated parameters and additional FLOPs (Fig. 4)")
    t.add_argument("results", nargs="+", help="results JSON files (one per seed / run)")
    t.add_argument("--title", default="", help="figure title prefix")
    t.add_argument("--out", default="figures", help="output folder (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        return _attention(args) if args.command == "attention" else _tradeoff(args)
    except FigureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
