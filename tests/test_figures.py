"""The paper's figures (shared_apt.harness.figures): the attention recording hook, the token selection, the authors'
APT drawing matrix, the attention tool on tiny checkpoints of each prompt method, and the trade-off plot."""
import glob
import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from shared_apt.harness import figures
from shared_apt.vl.speed import record_attention, set_attention_impl

from tiny import vilt_batch, vilt_config

torch.set_num_threads(1)


def _logits(model, batch):
    torch.manual_seed(0)   # ViLT orders image patches at random
    with torch.no_grad():
        return model.vqa_classifier(model.infer(batch)["cls_feats"])


def _tiny(method, **options):
    from vilt.modules.vilt_module import ViLTransformerSS

    torch.manual_seed(0)
    cfg = vilt_config(peft=method, peft_options=options)
    return ViLTransformerSS(cfg).eval(), cfg


# ---------------------------------------------------------------------------------------------------------------
# The recording hook


def test_record_attention_leaves_outputs_unchanged_and_is_removed():
    model, cfg = _tiny("deep_prompt", num_prompts=5)
    batch = vilt_batch(cfg)
    attns = [m for m in model.modules() if hasattr(m, "attention_impl")]
    assert len(attns) == 2 and all(m.attention_impl == "sdpa" for m in attns)
    sdpa = _logits(model, batch)
    set_attention_impl(model, "explicit")
    explicit = _logits(model, batch)
    set_attention_impl(model, "sdpa")
    with record_attention(model) as records:
        recorded = _logits(model, batch)
        assert all(m.attention_impl == "explicit" for m in attns)
    assert torch.equal(recorded, explicit)
    assert torch.allclose(recorded, sdpa, atol=1e-5)
    # one record per layer: [B, heads, N, N + 5 deep prompts], rows are probability distributions
    assert [r.name for r in records] == ["transformer.blocks.0.attn", "transformer.blocks.1.attn"]
    n = records[0].inputs.shape[1]
    assert records[0].probs.shape == (3, cfg["num_heads"], n, n + 5)
    assert torch.allclose(records[0].probs.sum(-1), torch.ones(3, cfg["num_heads"], n), atol=1e-5)
    # removed afterwards: implementation restored, no hook left, nothing recorded any more
    assert all(m.attention_impl == "sdpa" and not m._forward_hooks for m in attns)
    _logits(model, batch)
    assert len(records) == 2


def test_record_attention_refuses_a_module_without_probabilities():
    class NoProbs(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_impl = "sdpa"

        def forward(self, x):
            return x

    model = nn.Sequential(NoProbs())
    with pytest.raises(RuntimeError, match=r"0 \(NoProbs\) did not return \(output, attention probabilities\)"):
        with record_attention(model):
            model(torch.zeros(1, 2, 3))
    assert model[0].attention_impl == "sdpa" and not model[0]._forward_hooks


# ---------------------------------------------------------------------------------------------------------------
# Token selection and the APT matrix


def test_select_tokens_picks_the_most_attended_real_tokens():
    # 6 text positions (the last one padding), 5 image positions (the last two padding), 4 prompt columns
    text_masks = torch.tensor([[1, 1, 1, 1, 1, 0]])
    image_masks = torch.tensor([[1, 1, 1, 0, 0]])
    layout = figures.sequence_layout(text_masks, image_masks, 11, 15, "deep_prompt")
    m = torch.full((11, 15), 0.01)
    m[:, 2] += 0.5          # text 2 most attended
    m[:5, 4] += 0.3         # text 4 next (from the text rows only)
    m[:, 5] += 5.0          # padded text column: never chosen
    m[:, 7] += 0.2          # image 7 (position 1 of the image)
    m[:, 8] += 0.05         # image 8 (position 2) next
    m[9:, 6] += 9.0         # image 6 attended only by padded image rows (9, 10): does not count
    m[:, 12] += 0.4         # prompt 1
    m[:, 14] += 0.1         # prompt 3
    m[:, 11] += 0.1         # prompt 0, tie with prompt 3
    mean, real = figures.average_over_samples(m[None], layout)
    chosen = figures.select_tokens(mean, real, layout, k_text=2, k_image=2, k_prompt=2)
    assert chosen["text"].tolist() == [2, 4]
    assert chosen["image"].tolist() == [7, 8]
    assert chosen["prompt"].tolist() == [11, 12]  # 12, then the tie 11 / 14: lower first
    # clipped to the real tokens when fewer exist
    many = figures.select_tokens(mean, real, layout, k_text=15, k_image=15, k_prompt=30)
    assert [len(many[g]) for g in ("text", "image", "prompt")] == [5, 3, 4]
    parts = figures.six_parts(mean, many)
    assert {k: v.shape for k, v in parts.items()} == {
        "Text-Text": (5, 5), "Text-Image": (5, 3), "Text-Prompt": (5, 4),
        "Image-Text": (3, 5), "Image-Image": (3, 3), "Image-Prompt": (3, 4)}
    assert parts["Text-Prompt"][0, 1] == pytest.approx(0.41)


def test_layouts_of_the_three_prompt_methods():
    text_masks, image_masks = torch.tensor([[1, 1, 0]]), torch.tensor([[1, 1]])
    pre = figures.sequence_layout(text_masks, image_masks, 7, 7, "shallow_prompt", "prepend")
    app = figures.sequence_layout(text_masks, image_masks, 7, 7, "shallow_prompt", "append")
    deep = figures.sequence_layout(text_masks, image_masks, 5, 7, "deep_prompt")
    assert (pre.text.tolist(), pre.image.tolist(), pre.prompt.tolist()) == ([2, 3, 4], [5, 6], [0, 1])
    assert pre.valid.tolist() == [[True, True, True, True, False, True, True]]
    assert (app.text.tolist(), app.image.tolist(), app.prompt.tolist()) == ([0, 1, 2], [3, 4], [5, 6])
    assert app.valid.tolist() == [[True, True, False, True, True, True, True]]
    assert (deep.text.tolist(), deep.image.tolist(), deep.prompt.tolist()) == ([0, 1, 2], [3, 4], [5, 6])
    with pytest.raises(figures.FigureError, match="deep_prompt: expected 3 text \\+ 2 image positions"):
        figures.sequence_layout(text_masks, image_masks, 7, 7, "deep_prompt")


def test_apt_matrix_equals_the_authors_combination_by_hand():
    # 2 heads, 2 tokens, 2 prompts
    probs = torch.tensor([[[[0.5, 0.5], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]]])
    x = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])          # ||x_j|| = 5, 1
    scores = torch.tensor([[[0.5, 0.0], [1.0, 0.25]]])
    prompts = torch.tensor([[1.0, 0.0], [1.0, 1.0]])        # ||P'_j||^2 = 1, 2
    # head mean [[0.6, 0.4], [0.3, 0.7]]; columns x [5, 1]; prompt columns x [1, 2]
    rows = [[3.0, 0.4, 0.5, 0.0], [1.5, 0.7, 1.0, 0.5]]
    expected = [[math.exp(v) / sum(math.exp(u) for u in r) for v in r] for r in rows]
    got = figures.apt_attention_matrix(probs, x, scores, prompts)
    assert got.shape == (1, 2, 4)
    assert torch.allclose(got[0], torch.tensor(expected), atol=1e-6)


def test_apt_prompt_columns_follow_the_model_by_hand():
    """The tool's APT matrix on a tiny ViLT equals our own transcription: LN1 output captured, ViLT's head-averaged
    softmax attention and APT's ReLU(X (P' + P'W1W2)^T) computed here, combined as the authors' drawing code."""
    model, cfg = _tiny("apt", num_prompts=6, apt_rank=2)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "w2") and hasattr(m, "prompts"):
                m.prompts.normal_(std=0.2)
                m.w2.normal_(std=0.1)
    batch = vilt_batch(cfg, batch=1)
    maps = figures.attention_figure_data(model, batch, "apt", k_text=3, k_image=4, k_prompt=6)
    ln1 = []
    hooks = [b.norm1.register_forward_hook(lambda mod, a, o: ln1.append(o.detach())) for b in model.transformer.blocks]
    torch.manual_seed(0)   # the tool's default seed: the same random patch order
    with torch.no_grad():
        out = model.infer(batch)
    for h in hooks:
        h.remove()
    mask = torch.cat([out["text_masks"], out["image_masks"]], 1).bool()[0]
    for i, blk in enumerate(model.transformer.blocks):
        x = ln1[i][0]                                                  # [N, C]
        N, C = x.shape
        H = blk.attn.num_heads
        q, k, _ = (x @ blk.attn.qkv.weight.T + blk.attn.qkv.bias).split(C, dim=-1)
        q, k = q.view(N, H, C // H).transpose(0, 1), k.view(N, H, C // H).transpose(0, 1)
        s = (q @ k.transpose(-1, -2)) * (C // H) ** -0.5
        probs = s.masked_fill(~mask[None, None, :], float("-inf")).softmax(-1)       # [H, N, N]
        apt = blk.attn.peft_apt
        keys = apt.prompts + apt.prompts @ apt.w1 @ apt.w2
        a = torch.relu(x @ keys.T)
        row = torch.cat([probs.mean(0) * x.norm(dim=-1)[None, :], a * (apt.prompts ** 2).sum(-1)[None, :]], -1)
        full = row.softmax(-1).detach()
        chosen = maps[i].chosen
        assert len(chosen["prompt"]) == 6 and chosen["prompt"].min() == N
        for rname in ("text", "image"):
            for cname in ("text", "image", "prompt"):
                part = f"{rname.capitalize()}-{cname.capitalize()}"
                want = full[chosen[rname]][:, chosen[cname]].numpy()
                assert np.allclose(maps[i].parts[part], want, atol=1e-5), (i, part)


# ---------------------------------------------------------------------------------------------------------------
# The attention tool on checkpoints written by the training driver


@pytest.fixture(scope="module")
def checkpoints(demo, tmp_path_factory):
    """One tiny checkpoint per prompt method, written by the training driver (one optimiser step on the demo VQA)."""
    from shared_apt.vl.training.run import resolve_config, run
    from vilt.config import ex
    from vilt.modules.vilt_module import ViLTransformerSS
    from shared_apt.vl.data.datamodules import MTDataModule

    out = {}
    for method in figures.PROMPT_METHODS:
        cfg = resolve_config(ex, ["task_finetune_vqa", "tiny_vilt", f"peft_{method}"])
        log_dir = tmp_path_factory.mktemp(method)
        cfg.update({
            "data_root": demo["data_root"], "tokenizer": demo["tokenizer"], "vocab_size": demo["vocab_size"],
            "vqav2_label_size": demo["vqa_labels"], "cls_token_id": demo["cls_token_id"], "log_dir": str(log_dir),
            "accelerator": "cpu", "num_workers": 0, "drop_rate": 0.0, "hidden_size": 32, "num_layers": 2,
            "num_heads": 2, "per_gpu_batchsize": 4, "batch_size": 4, "num_gpus": 1, "max_steps": 1,
            "precision": 32, "progress_bar": False, "save_tuned_weights": False,
            "peft_options": {"num_prompts": 40, **({"apt_rank": 2} if method == "apt" else {})}})
        result = run(cfg, ViLTransformerSS, lambda c: MTDataModule(c, dist=True))
        out[method] = result["last_model_path"]
    return out


@pytest.mark.parametrize("method", figures.PROMPT_METHODS)
def test_attention_tool_writes_png_and_six_parts(checkpoints, tmp_path, method):
    samples = 2 if method == "deep_prompt" else 1
    code = figures.main(["attention", "--ckpt", checkpoints[method], "--method", method, "--out", str(tmp_path),
                         "--samples", str(samples)])
    assert code == 0
    assert os.path.getsize(tmp_path / f"attention_{method}.png") > 1000
    data = np.load(tmp_path / f"attention_{method}.npz")
    # the real tokens of the drawn samples (any sample, when averaged): the counts the selection is clipped to
    model, config, bb = figures.load_finetuned_checkpoint(checkpoints[method], method=method)
    batch, _ = figures.sample_batch(config, bb, "val", 0, samples)
    with torch.no_grad():
        out = model.infer(batch)
    n_text = int(out["text_masks"].bool().any(0).sum())
    n_image = int(out["image_masks"].bool().any(0).sum())
    t, i, p = min(15, n_text), min(15, n_image), 30
    assert n_image > 15 and p < 40
    want = {"Text-Text": (t, t), "Text-Image": (t, i), "Text-Prompt": (t, p),
            "Image-Text": (i, t), "Image-Image": (i, i), "Image-Prompt": (i, p)}
    for layer in (0, 1):
        for part, shape in want.items():
            assert data[f"layer{layer}_{part}"].shape == shape, (layer, part)
            assert data[f"layer{layer}_{part}_row"].shape == shape
            assert 0.0 <= data[f"layer{layer}_{part}_row"].min() and data[f"layer{layer}_{part}_row"].max() <= 1.0
        assert len(data[f"layer{layer}_prompt"]) == p
    assert "layer2_Text-Text" not in data


def test_attention_tool_refuses_another_method(checkpoints, tmp_path, capsys):
    code = figures.main(["attention", "--ckpt", checkpoints["apt"], "--method", "deep_prompt", "--out", str(tmp_path)])
    assert code == 2
    assert "tuned with peft='apt', not --method deep_prompt" in capsys.readouterr().err
    assert not glob.glob(str(tmp_path / "*"))


# ---------------------------------------------------------------------------------------------------------------
# Fig. 4


def _result(path, rows, majority=0.5):
    with open(path, "w") as f:
        json.dump({"backbone": "vilt", "metric": "accuracy", "majority_baseline": {"score": majority},
                   "rows": [{"method": m, "updated_params": p, "additional_gflops": g, "score": s,
                             "train_time_s": 1.0} for m, p, g, s in rows]}, f)
    return str(path)


def _drawn(ax):
    """label -> (x, y, yerr half-length or None) of the errorbar containers of an axis."""
    out = {}
    for c in ax.containers:
        (x, y), = c.lines[0].get_xydata()
        bars = c.lines[2]
        half = None
        if bars:
            (_, y0), (_, y1) = bars[-1].get_segments()[0]
            half = (y1 - y0) / 2
        out[c.get_label()] = (float(x), float(y), half)
    return out


def test_tradeoff_points_at_the_given_coordinates(tmp_path):
    a = _result(tmp_path / "seed0.json", [("full", 1000, 0.0, 0.80), ("apt", 120, 0.5, 0.60),
                                          ("classifier", 0, 0.0, 0.40)], majority=0.5)
    b = _result(tmp_path / "seed1.json", [("full", 1000, 0.0, 0.80), ("apt", 120, 0.5, 0.70),
                                          ("classifier", 0, 0.0, 0.40)], majority=0.5)
    assert figures.main(["tradeoff", a, b, "--out", str(tmp_path / "out")]) == 0
    assert os.path.getsize(tmp_path / "out" / "tradeoff.png") > 1000
    ax_p, ax_f = figures.draw_tradeoff(str(tmp_path / "t.png"), *figures.read_results([a, b]))
    params, flops = _drawn(ax_p), _drawn(ax_f)
    assert set(params) == {"full", "apt", "classifier"}
    assert params["full"] == pytest.approx((1000, 80, None))
    assert params["classifier"] == pytest.approx((1, 40, None))       # 0 parameters drawn at 1 on the log axis
    x, y, half = params["apt"]
    assert (x, y) == pytest.approx((120, 65)) and half == pytest.approx(math.sqrt(50))  # std of 60, 70 (n - 1)
    assert flops["apt"][:2] == pytest.approx((0.5, 65)) and flops["full"][:2] == pytest.approx((0.0, 80))
    assert ax_p.get_xscale() == "log"
    assert [ln.get_ydata()[0] for ln in ax_p.lines if ln.get_linestyle() == "--"] == [50]


def test_tradeoff_reads_the_clip_demo_and_refuses_mixed_files(tmp_path):
    clip = tmp_path / "clip.json"
    clip.write_text(json.dumps({"rows": [{"label": "APT (r=2)", "method": "apt", "trainable_params": 900,
                                          "gflops_per_image": 0.01, "harmonic_mean": 71.5, "base_acc": 80.0,
                                          "new_acc": 64.0}]}))
    points, metric, note, majority = figures.read_results([str(clip)])
    ax_p, ax_f = figures.draw_tradeoff(str(tmp_path / "c.png"), points, metric, note, majority)
    assert _drawn(ax_p) == {"APT (r=2)": pytest.approx((900, 71.5, None))}
    assert _drawn(ax_f) == {"APT (r=2)": pytest.approx((0.01, 71.5, None))}
    other = _result(tmp_path / "vilt.json", [("apt", 10, 0.1, 0.5)])
    with pytest.raises(figures.FigureError, match="report different things"):
        figures.read_results([str(clip), other])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [{"method": "apt", "score": 0.5}]}))
    with pytest.raises(figures.FigureError, match=r"bad.json: row 0 has keys \['method', 'score'\]"):
        figures.read_results([str(bad)])
