"""The papers' tables and plots from CLIP run outputs, and UPT's variance analysis.

    python -m clip_apt.report RUN_DIR [RUN_DIR ...] [--out DIR] [--seeds 1,2,3]
    python -m clip_apt.report variance --clip-path ViT-B-16.pt --data DIR [DIR ...] [--out DIR] [--gains GAINS.json]

**Tables.** Every ``results.json`` below the RUN_DIRs (searched recursively) is one run: ``method`` (registry name),
``method_label`` (option variants; default ``method``), ``dataset`` (default ``folder``), ``protocol``
(``base2new`` | ``fewshot`` | ``all`` | ``xd`` | ``dg``), ``num_shots``, ``seed``, and accuracies in %: ``base_acc``,
``new_acc``, ``harmonic_mean`` (base2new; new / H may be null for class-specific CoOp), ``acc`` (fewshot / all),
``acc`` + ``target_accs`` {target: %} (xd / dg). Files without ``method`` and ``protocol`` (other JSON that happens
to have the name) are listed as skipped. The report prints and writes (``--out``, default the first RUN_DIR):

- base-to-new (CoCoOp Table 1 / APT Table 4): per dataset and for the average over datasets, per method, base and
  new as mean ± std over seeds and H. H of a dataset is the harmonic mean of the seed-averaged base and new; the
  average row averages base and new over datasets (per-dataset means) and takes H of those averages, as the
  CoCoOp and APT tables do (their average H is not the mean of the per-dataset H);
- few-shot (CoOp Fig. 3 / UPT Fig. 2): accuracy at each shot count per method per dataset and averaged over datasets,
  plus ``fewshot.png``: one subplot per dataset after the average, x = shots on a log2 axis, one line per method
  (``zeroshot`` as a dashed level);
- domain generalisation and cross-dataset (UPT Table 1, CoCoOp Table 2): per source dataset, the source accuracy,
  each target's, the average over source and targets (UPT's "Average") and over the targets (UPT's "OOD Average").

std is the population standard deviation over seeds (``np.std``, as CoOp's ``parse_test_res.py`` prints it). Seeds
expected in a cell are the union of the seeds found for that protocol (or ``--seeds``); a cell with fewer is averaged
over those it has, marked ``†`` and listed under "Missing"; missing (dataset, method[, shots]) cells are listed too;
two runs of the same cell and seed are listed as conflicts and the cell is left out (``dup``). The average row of a
method that lacks a dataset is marked ``†``. Files: ``report.md`` (what is printed), ``report.json``,
``fewshot.png``.

**Variance analysis** (UPT, Zang et al. 2022, Fig. 1 and Appendix A): with a frozen CLIP, per dataset

- intra-class visual variance Var_v = (1/k) sum_c (1/|X_c|) sum_{x in X_c} ||f(x) - mu_c||^2, f(x) the
  L2-normalised image feature, mu_c the mean of f over class c's images X_c;
- inter-class text variance Var_t = (1/k) sum_c ||w_c - w_bar||^2, w_c the L2-normalised text feature of
  ``--template`` (default "a photo of a {}.") with class c's name, w_bar their mean over the k classes.

The paper writes (f - mu)^2 without saying how the dimensions are combined or whether features are normalised; here
the squared Euclidean norm (sum over dimensions, the trace of the covariance) of normalised features (the paper
draws them on the unit sphere). Images are the ``--split`` split (default test) of each folder, read as the bench
reads folders (CoOp's ``split_zhou_*.json`` + image root, ``train/``+``test/`` folders, or class folders), at most
``--max-per-class`` per class, with CoOp's test transform at the model's input size. Writes ``variance.md``,
``variance.json`` and ``variance.png``: Var_v against Var_t per dataset and, with ``--gains`` (JSON
``{method: {dataset: accuracy gain over zero-shot CLIP}}``), the gain against each variance per method (UPT's
Fig. 1d plots CoOp's gain against Var_v, 1e VPT's against Var_t)."""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

from shared_apt.peft.atomic import atomic_write, atomic_write_json

# CoOp's dataset keys in the papers' column order, then the domain-generalisation targets
DATASET_ORDER = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101", "imagenetv2", "imagenet_sketch", "imagenet_a",
                 "imagenet_r"]
METHOD_ORDER = ["zeroshot", "coop", "cocoop", "vpt_shallow", "vpt_deep", "joint", "upt", "upt_token_mixing",
                "upt_deep", "shared_prompt", "mlp_prompt", "apt", "lora", "adapter"]
PROTOCOLS = ("base2new", "fewshot", "all", "xd", "dg")
DAGGER = "†"


def _order(names, canonical):
    names = set(names)
    return [n for n in canonical if n in names] + sorted(names - set(canonical))


def mean_std(values: Sequence[float]):
    """(mean, population std) of the values (CoOp's ``parse_test_res.py``: ``np.mean``, ``np.std``)."""
    n = len(values)
    m = sum(values) / n
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / n)


def harmonic_mean(base: float, new: float) -> float:
    from .modules.clip_module import harmonic_mean as h

    return h(base, new)


# ---------------------------------------------------------------------------------------------------- collecting
def collect(run_dirs: Sequence[str]):
    """(runs, skipped): every results.json below the folders with its path; skipped = [(path, why)]."""
    runs, skipped = [], []
    for d in run_dirs:
        if not os.path.isdir(d):
            raise FileNotFoundError(f"run folder {d!r} does not exist")
        for path in sorted(glob.glob(os.path.join(d, "**", "results.json"), recursive=True)):
            try:
                with open(path) as f:
                    r = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                skipped.append((path, f"unreadable: {e}"))
                continue
            if not isinstance(r, dict) or "method" not in r or "protocol" not in r:
                skipped.append((path, "not a run result (no 'method' / 'protocol' key)"))
                continue
            if r["protocol"] not in PROTOCOLS:
                skipped.append((path, f"protocol {r['protocol']!r} is none of {PROTOCOLS}"))
                continue
            need = {"base2new": ("base_acc",), "fewshot": ("acc",), "all": ("acc",), "xd": ("acc", "target_accs"),
                    "dg": ("acc", "target_accs")}[r["protocol"]] + ("seed",)
            lacking = [k for k in need if r.get(k) is None]
            if lacking:
                skipped.append((path, f"protocol {r['protocol']} without {lacking}"))
                continue
            r = dict(r, _path=path, _label=r.get("method_label") or r["method"], _dataset=r.get("dataset") or "folder")
            runs.append(r)
    return runs, skipped


def _cells(runs, key):
    """{cell key: {seed: [runs]}}."""
    out: Dict[tuple, Dict[int, list]] = {}
    for r in runs:
        out.setdefault(key(r), {}).setdefault(r["seed"], []).append(r)
    return out


class _Notes:
    def __init__(self):
        self.missing: List[str] = []
        self.conflicts: List[str] = []

    def seeds_of(self, what: str, by_seed: Dict[int, list], expected: Sequence[int]):
        """The single run per seed, or None (conflict) ; notes missing seeds."""
        dup = {s: rs for s, rs in by_seed.items() if len(rs) > 1}
        if dup:
            for s, rs in sorted(dup.items()):
                self.conflicts.append(f"{what} seed {s}: {len(rs)} runs ({', '.join(r['_path'] for r in rs)})")
            return None, True
        lacking = sorted(set(expected) - set(by_seed))
        if lacking:
            self.missing.append(f"{what}: seeds {lacking} missing (have {sorted(by_seed)})")
        return {s: rs[0] for s, rs in by_seed.items()}, bool(lacking)


def _fmt(m, s=None, mark=False):
    if m is None:
        return "–"
    text = f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}"
    return text + (DAGGER if mark else "")


def _md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


# ------------------------------------------------------------------------------------------------ base-to-new
def base2new_tables(runs, expected_seeds, notes: _Notes):
    runs = [r for r in runs if r["protocol"] == "base2new"]
    if not runs:
        return [], {}
    seeds = expected_seeds or sorted({r["seed"] for r in runs})
    datasets = _order({r["_dataset"] for r in runs}, DATASET_ORDER)
    methods = _order({r["_label"] for r in runs}, METHOD_ORDER)
    shots = sorted({r.get("num_shots") for r in runs}, key=str)
    cells = _cells(runs, lambda r: (r["_dataset"], r["_label"]))
    data: Dict[str, Dict[str, dict]] = {}
    for d in datasets:
        for m in methods:
            if (d, m) not in cells:
                notes.missing.append(f"base2new {d} / {m}: no run")
                continue
            per_seed, partial = notes.seeds_of(f"base2new {d} / {m}", cells[(d, m)], seeds)
            if per_seed is None:
                data.setdefault(d, {})[m] = {"conflict": True}
                continue
            base = {s: r["base_acc"] for s, r in per_seed.items()}
            new = {s: r["new_acc"] for s, r in per_seed.items() if r.get("new_acc") is not None}
            b = mean_std(list(base.values()))
            n = mean_std(list(new.values())) if len(new) == len(base) else None
            data.setdefault(d, {})[m] = {
                "base": b[0], "base_std": b[1], "new": n and n[0], "new_std": n and n[1],
                "h": harmonic_mean(b[0], n[0]) if n else None, "seeds": sorted(per_seed), "partial": partial,
                "base_per_seed": base, "new_per_seed": new if n else None}
    # average over datasets (per method): means of per-dataset means, H of those; std over seeds of the per-seed
    # dataset averages when every dataset has the same seeds
    avg = {}
    for m in methods:
        have = [d for d in datasets if m in data.get(d, {}) and not data[d][m].get("conflict")]
        if not have:
            continue
        rows = [data[d][m] for d in have]
        b = sum(r["base"] for r in rows) / len(rows)
        n = sum(r["new"] for r in rows) / len(rows) if all(r["new"] is not None for r in rows) else None
        common = set.intersection(*(set(r["seeds"]) for r in rows))
        b_std = n_std = None
        if all(set(r["seeds"]) == common for r in rows):
            b_std = mean_std([sum(r["base_per_seed"][s] for r in rows) / len(rows) for s in sorted(common)])[1]
            if n is not None:
                n_std = mean_std([sum(r["new_per_seed"][s] for r in rows) / len(rows) for s in sorted(common)])[1]
        incomplete = len(have) < len(datasets)
        if incomplete:
            notes.missing.append(f"base2new average of {m}: {len(have)} of {len(datasets)} datasets "
                                 f"(lacks {[d for d in datasets if d not in have]})")
        avg[m] = {"base": b, "base_std": b_std, "new": n, "new_std": n_std,
                  "h": harmonic_mean(b, n) if n is not None else None, "datasets": have,
                  "partial": incomplete or any(r["partial"] for r in rows)}
    lines = [f"## Base-to-new generalisation (shots {', '.join(map(str, shots))}; seeds {seeds}; mean ± std over "
             f"seeds; H of the mean base and new)", ""]
    blocks = [(f"Average over {len(datasets)} datasets (H of the averaged base and new)", avg)] + \
        [(d, data.get(d, {})) for d in datasets]
    for title, table in blocks:
        rows = []
        for m in methods:
            if m not in table:
                continue
            c = table[m]
            if c.get("conflict"):
                rows.append([m, "dup", "dup", "dup"])
                continue
            rows.append([m, _fmt(c["base"], c["base_std"], c["partial"]), _fmt(c["new"], c["new_std"], c["partial"]),
                         _fmt(c["h"], None, c["partial"])])
        lines += [f"### {title}", ""] + _md(["method", "base", "new", "H"], rows) + [""]
    # compact overview: datasets x methods, H
    rows = [[d] + [_fmt(data.get(d, {}).get(m, {}).get("h")) if not data.get(d, {}).get(m, {}).get("conflict")
                   else "dup" for m in methods] for d in datasets]
    rows.append(["Average"] + [_fmt(avg[m]["h"]) if m in avg else "–" for m in methods])
    lines += ["### H per dataset", ""] + _md(["dataset"] + methods, rows) + [""]
    return lines, {"seeds": seeds, "datasets": data, "average": avg}


# ------------------------------------------------------------------------------------------------ few-shot
def _shot_name(k):
    return "all" if k is None or k < 1 else str(k)


def fewshot_tables(runs, expected_seeds, notes: _Notes):
    runs = [r for r in runs if r["protocol"] in ("fewshot", "all")]
    if not runs:
        return [], {}
    seeds = expected_seeds or sorted({r["seed"] for r in runs})
    datasets = _order({r["_dataset"] for r in runs}, DATASET_ORDER)
    methods = _order({r["_label"] for r in runs}, METHOD_ORDER)
    shots = sorted({r.get("num_shots") if (r.get("num_shots") or 0) >= 1 else 0 for r in runs})
    shots = [k for k in shots if k >= 1] + [k for k in shots if k < 1]
    cells = _cells(runs, lambda r: (r["_dataset"], r["_label"], r.get("num_shots") if (r.get("num_shots") or 0) >= 1
                                    else 0))
    data: Dict[str, Dict[str, Dict[int, dict]]] = {}
    zeroshot = {m for m in methods if m == "zeroshot"}
    for d in datasets:
        for m in methods:
            ks = [k for k in shots if (d, m, k) in cells] if m in zeroshot else shots
            for k in ks:
                what = f"fewshot {d} / {m} / {_shot_name(k)} shots"
                if (d, m, k) not in cells:
                    notes.missing.append(f"{what}: no run")
                    continue
                per_seed, partial = notes.seeds_of(what, cells[(d, m, k)], seeds)
                if per_seed is None:
                    data.setdefault(d, {}).setdefault(m, {})[k] = {"conflict": True}
                    continue
                a = mean_std([r["acc"] for r in per_seed.values()])
                data.setdefault(d, {}).setdefault(m, {})[k] = {"acc": a[0], "std": a[1], "seeds": sorted(per_seed),
                                                               "partial": partial}
    avg: Dict[str, Dict[int, dict]] = {}
    for m in methods:
        for k in shots:
            have = [d for d in datasets if k in data.get(d, {}).get(m, {}) and not data[d][m][k].get("conflict")]
            if not have:
                continue
            incomplete = len(have) < len(datasets)
            if incomplete and m not in zeroshot:
                notes.missing.append(f"fewshot average of {m} at {_shot_name(k)} shots: {len(have)} of "
                                     f"{len(datasets)} datasets")
            avg.setdefault(m, {})[k] = {"acc": sum(data[d][m][k]["acc"] for d in have) / len(have), "std": None,
                                        "datasets": have, "partial": incomplete or any(data[d][m][k]["partial"]
                                                                                        for d in have)}
    lines = [f"## Few-shot accuracy (seeds {seeds}; mean ± std over seeds)", ""]
    for title, table in [(f"Average over {len(datasets)} datasets", avg)] + [(d, data.get(d, {})) for d in datasets]:
        rows = []
        for m in methods:
            if m not in table:
                continue
            rows.append([m] + ["dup" if table[m].get(k, {}).get("conflict") else
                               _fmt(table[m][k]["acc"], table[m][k]["std"], table[m][k]["partial"]) if k in table[m]
                               else "–" for k in shots])
        header = ["method"] + [f"{_shot_name(k)} shot{'' if k == 1 else 's'}" for k in shots]
        lines += [f"### {title}", ""] + _md(header, rows) + [""]
    return lines, {"seeds": seeds, "shots": shots, "datasets": data, "average": avg}


def plot_fewshot(fs: dict, path: str) -> str:
    """UPT Fig. 2 / CoOp Fig. 3 layout: the average first, then one subplot per dataset; x = shots (log2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("Average", fs["average"])] + list(fs["datasets"].items())
    shots = [k for k in fs["shots"] if k >= 1]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    methods = _order({m for _, t in panels for m in t}, METHOD_ORDER)
    colors = {m: plt.cm.tab20(i % 20) for i, m in enumerate(methods)}
    for ax, (title, table) in zip(axes.flat, panels):
        for m in methods:
            pts = [(k, table[m][k]["acc"]) for k in shots if k in table.get(m, {}) and "acc" in table[m][k]]
            if not pts:
                continue
            if m == "zeroshot":
                ax.axhline(sum(a for _, a in pts) / len(pts), color=colors[m], ls="--", lw=1, label=m)
            else:
                ax.plot([k for k, _ in pts], [a for _, a in pts], marker="o", ms=3, color=colors[m], label=m)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots)
        ax.set_xticklabels([str(k) for k in shots])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("shots per class", fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * math.ceil(len(labels) / 6), 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------- domain generalisation / xd
def transfer_tables(runs, expected_seeds, notes: _Notes):
    lines, out = [], {}
    for protocol, title in (("dg", "Domain generalisation"), ("xd", "Cross-dataset transfer")):
        pruns = [r for r in runs if r["protocol"] == protocol]
        if not pruns:
            continue
        seeds = expected_seeds or sorted({r["seed"] for r in pruns})
        for source in _order({r["_dataset"] for r in pruns}, DATASET_ORDER):
            sruns = [r for r in pruns if r["_dataset"] == source]
            methods = _order({r["_label"] for r in sruns}, METHOD_ORDER)
            targets = _order({t for r in sruns for t in r["target_accs"]}, DATASET_ORDER)
            cells = _cells(sruns, lambda r: r["_label"])
            table = {}
            rows = []
            for m in methods:
                per_seed, partial = notes.seeds_of(f"{protocol} {source} / {m}", cells[m], seeds)
                if per_seed is None:
                    rows.append([m] + ["dup"] * (len(targets) + 3))
                    continue
                cols = {source: [r["acc"] for r in per_seed.values()]}
                for t in targets:
                    vals = [r["target_accs"][t] for r in per_seed.values() if r["target_accs"].get(t) is not None]
                    if len(vals) < len(per_seed):
                        notes.missing.append(f"{protocol} {source} / {m}: target {t} missing in "
                                             f"{len(per_seed) - len(vals)} of {len(per_seed)} runs")
                    cols[t] = vals
                stats = {k: mean_std(v) if v else None for k, v in cols.items()}
                full = all(stats[t] is not None for t in targets)
                entry = {k: (None if v is None else {"mean": v[0], "std": v[1]}) for k, v in stats.items()}
                if full and targets:
                    entry["average"] = (stats[source][0] + sum(stats[t][0] for t in targets)) / (1 + len(targets))
                    entry["target_average"] = sum(stats[t][0] for t in targets) / len(targets)
                entry.update(seeds=sorted(per_seed), partial=partial)
                table[m] = entry
                rows.append([m] + [_fmt(*stats[k], partial) if stats[k] else "–" for k in [source] + targets] +
                            [_fmt(entry.get("average")), _fmt(entry.get("target_average"))])
            avg_name = "OOD average" if protocol == "dg" else "target average"
            lines += [f"## {title}: source {source} (seeds {seeds}; mean ± std over seeds)", ""]
            lines += _md(["method", f"{source} (source)"] + targets + ["average", avg_name], rows) + [""]
            out.setdefault(protocol, {})[source] = {"seeds": seeds, "targets": targets, "methods": table}
    return lines, out


def report(run_dirs: Sequence[str], out: Optional[str] = None, seeds: Optional[Sequence[int]] = None) -> dict:
    """Build, print-ready, and write the report; returns {"text": markdown, "json": ..., "files": [...]}."""
    runs, skipped = collect(run_dirs)
    notes = _Notes()
    b_lines, b = base2new_tables(runs, seeds, notes)
    f_lines, fs = fewshot_tables(runs, seeds, notes)
    t_lines, t = transfer_tables(runs, seeds, notes)
    lines = [f"# CLIP report: {len(runs)} runs from {', '.join(run_dirs)}", ""] + b_lines + f_lines + t_lines
    if not runs:
        lines += ["No run results found.", ""]
    for title, items in (("Missing", notes.missing), ("Conflicts (left out)", notes.conflicts),
                         ("Skipped files", [f"{p}: {why}" for p, why in skipped])):
        if items:
            lines += [f"## {title}", ""] + [f"- {x}" for x in items] + [""]
    text = "\n".join(lines)
    out = out or run_dirs[0]
    os.makedirs(out, exist_ok=True)
    files = [os.path.join(out, "report.md"), os.path.join(out, "report.json")]

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text + "\n")

    atomic_write(files[0], write)
    result = {"base2new": b, "fewshot": fs, **t, "missing": notes.missing, "conflicts": notes.conflicts,
              "skipped": [{"path": p, "why": w} for p, w in skipped], "runs": len(runs)}
    atomic_write_json(files[1], result, indent=2, default=str)
    if fs and any(k >= 1 for k in fs["shots"]):
        files.append(plot_fewshot(fs, os.path.join(out, "fewshot.png")))
    return {"text": text, "json": result, "files": files}


# ------------------------------------------------------------------------------------------ variance analysis
def intra_class_variance(features, labels) -> float:
    """Var_v: mean over classes of the mean squared Euclidean distance of the L2-normalised features to their class
    mean (the module docstring)."""
    import torch

    f = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float64), dim=-1)
    labels = torch.as_tensor(labels)
    per_class = []
    for c in torch.unique(labels):
        x = f[labels == c]
        per_class.append(((x - x.mean(0)) ** 2).sum(-1).mean())
    return float(torch.stack(per_class).mean())


def inter_class_variance(text_features) -> float:
    """Var_t: mean squared Euclidean distance of the L2-normalised class text features to their mean."""
    import torch

    w = torch.nn.functional.normalize(torch.as_tensor(text_features, dtype=torch.float64), dim=-1)
    return float(((w - w.mean(0)) ** 2).sum(-1).mean())


def dataset_variances(model, folder: str, split: str = "test", template: str = "a photo of a {}.",
                      max_per_class: Optional[int] = None, batch_size: int = 100, image_dir: Optional[str] = None):
    """(Var_v, Var_t, info) of one dataset folder with a frozen CLIP ``model``."""
    import torch
    from torch.utils.data import DataLoader

    from .bench import load_rgb, read_folder
    from .datasets import test_transform
    from .modules.tokenizer import tokenize

    splits, layout, _ = read_folder(folder, image_dir)
    items = splits[split]
    if not items:
        raise ValueError(f"{folder!r}: the {split} split is empty")
    names = {}
    for _, y, c in splits["train"] + splits[split]:
        names[y] = c
    if max_per_class:
        count: Dict[int, int] = {}
        kept = []
        for it in items:
            if count.get(it[1], 0) < max_per_class:
                count[it[1]] = count.get(it[1], 0) + 1
                kept.append(it)
        items = kept
    tf = test_transform(model.visual.image_size if isinstance(model.visual.image_size, int)
                        else model.visual.image_size[0])

    class _Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return tf(load_rgb(items[i][0])), items[i][1]

    model.eval()
    feats, labels = [], []
    with torch.no_grad():
        for x, y in DataLoader(_Images(), batch_size=batch_size):
            feats.append(model.encode_image(x, normalize=True))
            labels.append(y)
        classes = sorted(names)
        ids = tokenize([template.format(names[c].replace("_", " ")) for c in classes], model.context_length,
                       truncate=True)
        text = model.encode_text(ids, normalize=True)
    var_v = intra_class_variance(torch.cat(feats), torch.cat(labels))
    var_t = inter_class_variance(text)
    return var_v, var_t, {"layout": layout, "classes": len(classes), "images": len(items), "split": split}


def variance_main(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m clip_apt.report variance",
                                 description="UPT's Fig. 1 variance analysis (see the module docstring)")
    ap.add_argument("--clip-path", required=True, help="OpenAI-format CLIP file")
    ap.add_argument("--data", nargs="+", required=True, help="dataset folders")
    ap.add_argument("--names", nargs="*", help="dataset names (default: folder basenames)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--template", default="a photo of a {}.")
    ap.add_argument("--max-per-class", type=int, default=None)
    ap.add_argument("--text-heads", type=int, default=None)
    ap.add_argument("--vision-heads", type=int, default=None)
    ap.add_argument("--gains", default=None, help="JSON {method: {dataset: accuracy gain over zero-shot}}")
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)
    from .modules.clip_model import load_clip

    names = args.names or [os.path.basename(os.path.normpath(d)) for d in args.data]
    if len(names) != len(args.data):
        ap.error(f"--names gives {len(names)} names for {len(args.data)} --data folders")
    gains = None
    if args.gains:
        with open(args.gains) as f:
            gains = json.load(f)
    model = load_clip(args.clip_path, args.text_heads, args.vision_heads)
    rows = {}
    for name, folder in zip(names, args.data):
        v, t, info = dataset_variances(model, folder, args.split, args.template, args.max_per_class)
        rows[name] = dict(info, var_v=v, var_t=t)
        print(f"[variance] {name}: Var_v {v:.4f}  Var_t {t:.4f}  ({info['classes']} classes, {info['images']} "
              f"{args.split} images)", flush=True)
    table = "\n".join(_md(["dataset", "classes", f"{args.split} images", "Var_v (intra-class visual)",
                           "Var_t (inter-class text)"],
                          [[n, str(r["classes"]), str(r["images"]), f"{r['var_v']:.4f}", f"{r['var_t']:.4f}"]
                           for n, r in rows.items()]))
    os.makedirs(args.out, exist_ok=True)

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(table + "\n")

    atomic_write(os.path.join(args.out, "variance.md"), write)
    atomic_write_json(os.path.join(args.out, "variance.json"),
                      {"datasets": rows, "template": args.template, "split": args.split, "gains": gains}, indent=2)
    plot_variance(rows, os.path.join(args.out, "variance.png"), gains)
    print(table)
    print(f"[variance] {os.path.join(args.out, 'variance.md')}, variance.json, variance.png")
    return 0


def plot_variance(rows: Dict[str, dict], path: str, gains: Optional[dict] = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("var_v", "var_t", None)]
    for m in gains or {}:
        panels += [("var_v", m, m), ("var_t", m, m)]
    label = {"var_v": "intra-class visual variance", "var_t": "inter-class text variance"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (xk, yk, method) in zip(axes.flat, panels):
        pts = [(n, r[xk], r[yk] if method is None else gains[method].get(n)) for n, r in rows.items()]
        pts = [p for p in pts if p[2] is not None]
        ax.scatter([p[1] for p in pts], [p[2] for p in pts])
        for n, x, y in pts:
            ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label[xk])
        ax.set_ylabel(label[yk] if method is None else f"{method} gain over zero-shot (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "variance":
        return variance_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m clip_apt.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--out", default=None, help="output folder (default: the first RUN_DIR)")
    ap.add_argument("--seeds", default=None, help="expected seeds, e.g. 1,2,3 (default: every seed found)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    r = report(args.run_dirs, args.out, seeds)
    print(r["text"])
    print(f"[report] {', '.join(r['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
