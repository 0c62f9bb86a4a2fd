"""ViLT built from config: upstream checkpoint layout, load_path semantics, parameter counts, visual embedding."""
import os

import pytest
import torch

import shared_apt
from shared_apt.vl.checkpoint import CheckpointError
from tiny import vilt_batch, vilt_config
from vilt.modules import ViLTransformerSS
from vilt.profiling import build

# keys and shapes of the official checkpoints' state_dict (dandelin/ViLT releases), one "key<TAB>shape" per line
UPSTREAM_KEYS = os.path.join(os.path.dirname(__file__), "upstream", "vilt_state_dict.tsv")


def _save_upstream(model, path, **extra):
    """The layout of an official Lightning 1.x checkpoint: top-level entries + state_dict without prefix."""
    torch.save({"epoch": 3, "global_step": 100, "pytorch-lightning_version": "1.1.4",
                "state_dict": model.state_dict(), "hyper_parameters": {"config": dict(model.hparams.config)},
                **extra}, path)


def test_full_size_parameter_counts_equal_upstream():
    model = build("full")  # meta device, VQA head
    counts = {
        "text_embeddings": 23_474_688, "transformer": 87_528_192, "pooler": 590_592,
        "vqa_classifier": 5_993_529, "token_type_embeddings": 1_536,
    }
    for name, want in counts.items():
        assert sum(p.numel() for p in getattr(model, name).parameters()) == want, name
    assert sum(p.numel() for p in model.parameters()) == 117_588_537


def test_state_dict_keys_and_shapes_equal_upstream_tsv():
    rows = [l.rstrip("\n").split("\t") for l in open(UPSTREAM_KEYS) if not l.startswith("#")][1:]
    upstream = {k: tuple(int(x) for x in s.strip("[]").split(", ")) for k, s, *_ in rows}
    cfg = dict(build("full").hparams.config)
    cfg["loss_names"] = {"itm": 1, "mlm": 1, "mpp": 0.5, "vqa": 1, "nlvr2": 0, "irtr": 1}
    with torch.device("meta"):
        model = ViLTransformerSS(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    nlvr2_only = {k for k in upstream if k.startswith("nlvr2_classifier")}
    assert set(ours) == set(upstream) - nlvr2_only
    for k, shape in ours.items():
        assert upstream[k] == shape, k


def test_upstream_checkpoint_reloads_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    src = ViLTransformerSS(vilt_config()).eval()
    _save_upstream(src, tmp_path / "vqa.ckpt")
    torch.manual_seed(1)
    dst = ViLTransformerSS(vilt_config(load_path=str(tmp_path / "vqa.ckpt"), test_only=True)).eval()
    b = vilt_batch(src.hparams.config)
    torch.manual_seed(0)
    a = src.infer(b)
    torch.manual_seed(0)
    c = dst.infer(b)
    for k in ("text_feats", "image_feats", "cls_feats", "raw_cls_feats"):
        assert torch.equal(a[k], c[k]), k


def test_pretrained_checkpoint_into_nlvr2_expands_modality_rows_and_irtr_ties_rank_output(tmp_path):
    torch.manual_seed(0)
    pre = ViLTransformerSS(vilt_config(loss_names={"itm": 1, "mlm": 1}))
    _save_upstream(pre, tmp_path / "pre.ckpt")
    nl = ViLTransformerSS(vilt_config(loss_names={"nlvr2": 1}, load_path=str(tmp_path / "pre.ckpt")))
    w = nl.token_type_embeddings.weight
    assert w.shape[0] == 3
    assert torch.equal(w[0], pre.token_type_embeddings.weight[0])
    assert torch.equal(w[1], pre.token_type_embeddings.weight[1]) and torch.equal(w[2], w[1])
    ir = ViLTransformerSS(vilt_config(loss_names={"itm": 0.5, "irtr": 1}, load_path=str(tmp_path / "pre.ckpt"),
                                      peft="apt", peft_options={"num_prompts": 3}))
    assert torch.equal(ir.rank_output.weight, pre.itm_score.fc.weight[1:])
    assert ir.rank_output.weight.data_ptr() == ir.itm_score.fc.weight[1:].data_ptr()  # shared storage
    assert not any(n.startswith("itm_score") for n in shared_apt.trainable_parameters(ir))
    # zero-shot: test_only with the pre-trained checkpoint sets rank_output from the loaded ITM row
    zs = ViLTransformerSS(vilt_config(loss_names={"itm": 0.5, "irtr": 1}, load_path=str(tmp_path / "pre.ckpt"),
                                      test_only=True))
    assert torch.equal(zs.rank_output.weight, pre.itm_score.fc.weight[1:])


def test_checkpoint_with_wrong_shapes_is_refused_with_every_key_named(tmp_path):
    torch.manual_seed(0)
    other = ViLTransformerSS(vilt_config(max_text_len=20))
    _save_upstream(other, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError) as e:
        ViLTransformerSS(vilt_config(load_path=str(tmp_path / "bad.ckpt")))
    msg = str(e.value)
    assert "text_embeddings.position_embeddings.weight: checkpoint (20, 32) vs model (12, 32)" in msg
    assert "bad.ckpt" in msg
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ViLTransformerSS(vilt_config(load_path=str(tmp_path / "missing.ckpt")))
    (tmp_path / "junk.ckpt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        ViLTransformerSS(vilt_config(load_path=str(tmp_path / "junk.ckpt")))


class OddCallbackState:
    """An arbitrary class pickled into a checkpoint: outside the allowlist."""


def test_checkpoint_with_unknown_pickled_objects_needs_trust(tmp_path):
    torch.manual_seed(0)
    m = ViLTransformerSS(vilt_config())
    _save_upstream(m, tmp_path / "odd.ckpt", callbacks={"x": OddCallbackState()})
    with pytest.raises(CheckpointError, match="trust_checkpoint=True"):
        ViLTransformerSS(vilt_config(load_path=str(tmp_path / "odd.ckpt")))
    ViLTransformerSS(vilt_config(load_path=str(tmp_path / "odd.ckpt"), trust_checkpoint=True))


def test_visual_embed_positions_and_padding_follow_upstream():
    torch.manual_seed(0)
    model = ViLTransformerSS(vilt_config(drop_rate=0.0)).eval()
    vt = model.transformer
    img = torch.zeros(2, 3, 64, 64)
    img[0] = torch.rand(3, 64, 64) + 0.1  # full 4x4 patch grid (= the position grid): identity resize
    img[1, :, :32, :48] = torch.rand(3, 32, 48) + 0.1  # 2 x 3 valid patches, 10 padding patches
    with torch.no_grad():
        x, mask, (patch_index, (Hp, Wp)), _ = vt.visual_embed(img, max_image_len=-1)
        patches = vt.patch_embed(img).flatten(2).transpose(1, 2)
    assert (Hp, Wp) == (4, 4) and x.shape == (2, 17, 32)
    assert mask[0].sum() == 17 and mask[1].sum() == 7
    assert torch.equal(mask[1, 1:7], torch.ones(6, dtype=mask.dtype))  # valid first, then padding
    for i in range(16):  # image 0: each token = its patch + its own grid position (order is random)
        r, c = patch_index[0, i].tolist()
        want = patches[0, r * 4 + c] + vt.pos_embed[0, 1 + r * 4 + c]
        assert torch.allclose(x[0, 1 + i], want, atol=1e-6)
    # image 1: corner positions of the 2x3 resized grid come from the corners of the 4x4 grid (align_corners)
    grid = vt.pos_embed[0, 1:].reshape(4, 4, -1)
    for i in range(6):
        r, c = patch_index[1, i].tolist()
        if (r, c) in ((0, 0), (0, 2), (1, 0), (1, 2)):
            src = grid[0 if r == 0 else 3, 0 if c == 0 else 3]
            assert torch.allclose(x[1, 1 + i], patches[1, r * 4 + c] + src, atol=1e-5)
    pad = x[1, 7:]
    assert torch.allclose(pad, pad[:1].expand_as(pad))  # every padding token identical (bias, zero position)
    assert torch.allclose(x[:, 0], (vt.cls_token + vt.pos_embed[:, :1])[0].expand(2, -1))


def test_pooled_output_reads_the_text_cls_and_text_padding_is_masked():
    torch.manual_seed(0)
    model = ViLTransformerSS(vilt_config()).eval()
    b = vilt_batch(model.hparams.config)
    torch.manual_seed(0)
    out = model.infer(b)
    assert torch.allclose(out["cls_feats"], torch.tanh(model.pooler.dense(out["raw_cls_feats"])))
    b2 = dict(b)
    ids = b["text_ids"].clone()
    ids[b["text_masks"] == 0] = 7  # change only padded text positions
    b2["text_ids"] = ids
    torch.manual_seed(0)
    out2 = model.infer(b2)
    assert torch.allclose(out["cls_feats"], out2["cls_feats"], atol=1e-6)


def test_tuned_path_is_loaded_after_the_method_in_the_one_build_path(tmp_path):
    torch.manual_seed(0)
    src = ViLTransformerSS(vilt_config(peft="apt", peft_options={"num_prompts": 3})).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in shared_apt.trainable_parameters(src).values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    shared_apt.save_tuned(src, str(tmp_path / "tuned"))
    torch.manual_seed(0)  # same frozen backbone, other tuned values until tuned_path loads
    dst = ViLTransformerSS(vilt_config(peft="apt", peft_options={"num_prompts": 3},
                                       tuned_path=str(tmp_path / "tuned"))).eval()
    b = vilt_batch(src.hparams.config)
    torch.manual_seed(0)
    a = src.infer(b)["cls_feats"]
    torch.manual_seed(0)
    assert torch.equal(a, dst.infer(b)["cls_feats"])
    with pytest.raises(shared_apt.TunedWeightsError, match="num_prompts: file has 3, model has 4"):
        ViLTransformerSS(vilt_config(peft="apt", peft_options={"num_prompts": 4}, tuned_path=str(tmp_path / "tuned")))
