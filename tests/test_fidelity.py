"""Wiring of every method against our own transcriptions of the APT authors' modules (DoubtedSteam/APT, ViLT and
METER folders), at tiny size, with non-trivial method parameters; in eval and, where the order of dropout matters,
in training with fixed dropout masks. Also: initialisations, the official trainable sets as literal name lists,
APT under autocast, APT's K cache, and LoRA's merge state.

The transcriptions below are written from the method descriptions (formulas and placement), using only the
backbone's frozen weights; they never call the code under test for the method part."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shared_apt
from shared_apt.peft.methods.apt import APTModule, apt_delta, cached_keys
from shared_apt.peft.methods.adapter import Adapter, ScaledParallelAdapter
from shared_apt.peft.methods.lora import LoRAModule
from shared_apt.peft.methods.prompt import PromptTokens, vpt_uniform_bound
from tiny import meter_build, vilt_batch, vilt_config
from vilt.modules import ViLTransformerSS

PA_SCALE = 4.0  # the official scaled parallel adapter's fixed scale


# ----------------------------------------------------------------------------------------------------------------
# Fixed dropout masks: the k-th dropout call (with p > 0, in training) of a run draws mask number k, whatever module
# makes it. Two runs making the same calls in the same order see the same masks; a call moved or merged shifts them.


@contextlib.contextmanager
def fixed_dropout():
    original = F.dropout
    counter = [0]

    def dropout(input, p=0.5, training=True, inplace=False):
        if not training or p == 0.0:
            return input
        g = torch.Generator().manual_seed(1000 + counter[0])
        counter[0] += 1
        keep = (torch.rand(input.shape, generator=g) >= p).to(input.dtype)
        return input * keep / (1.0 - p)

    F.dropout = dropout
    try:
        yield counter
    finally:
        F.dropout = original


def _drop(x, p):
    return F.dropout(x, p, True)


def _randomise(model, std=0.3, seed=11):
    """Every method parameter to random non-trivial values (W2, LoRA B, adapter up-projections, s non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in shared_apt.tuning_modules(model):
            for name, p in m.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * std)
                if name == "prompts":
                    p.mul_(3.0)


def _set_dropout(module, p, only=None):
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = p if only is None or any(m is o for o in only) else 0.0


# ----------------------------------------------------------------------------------------------------------------
# ViLT: official block (timm pre-LN block, DoubtedSteam/APT ViLT/vilt/modules/vision_transformer_<method>.py)


def _vilt(method, **opts):
    torch.manual_seed(0)
    model = ViLTransformerSS(vilt_config(peft=method, peft_options=opts))
    if method != "full":
        _randomise(model)
    return model


def ref_vilt_block(blk, h, mask, method=None, mod=None, ffn_mod=None, lora_p=0.0):
    """h -> block output as the authors' ViLT code computes it (dropout through F.dropout, in call order)."""
    a = blk.attn
    B, N, C = h.shape
    H = a.num_heads
    x = F.layer_norm(h, (C,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    tokens = x
    kv_mask = mask.bool()
    if method == "deep_prompt":  # prompts appended to the block input, through LN1 and qkv, queries dropped
        full = torch.cat([h, mod.prompts.unsqueeze(0).expand(B, -1, -1)], 1)
        tokens = F.layer_norm(full, (C,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        kv_mask = torch.cat([kv_mask, torch.ones(B, mod.prompts.shape[0], dtype=torch.bool)], 1)
    qkv = tokens @ a.qkv.weight.t() + a.qkv.bias
    q, k, v = qkv[:, :N, :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    if method == "lora":  # q_lora then v_lora, each with its own dropout on x; no scaling
        q = q + (_drop(x, lora_p) @ mod.lora_A["q"]) @ mod.lora_B["q"]
        v = v + (_drop(x, lora_p) @ mod.lora_A["v"]) @ mod.lora_B["v"]
    heads = lambda t: t.reshape(B, t.shape[1], H, C // H).transpose(1, 2)  # noqa: E731
    att = heads(q) @ heads(k).transpose(-1, -2) * (C // H) ** -0.5
    att = att.masked_fill(~kv_mask[:, None, None, :], float("-inf")).softmax(-1)
    ctx = (att @ heads(v)).transpose(1, 2).reshape(B, N, C)
    o = ctx @ a.proj.weight.t() + a.proj.bias
    if method == "apt":  # X = LN1(h); O after proj, before proj_drop; out = e^s (O + alpha * A P')
        keys = mod.prompts + (mod.prompts @ mod.w1) @ mod.w2
        A = torch.relu(x @ keys.t())
        o = torch.exp(mod.log_scale) * (o + A.amax(-1, keepdim=True).detach() * (A @ mod.prompts))
    o = _drop(o, a.proj_drop.p)
    if method == "adapter":  # after the projection dropout
        o = o + mod.body.up(torch.relu(mod.body.down(o)))
    if method == "scaled_pa":  # after the projection dropout, from X = LN1(h), own LN (eps 1e-5), scale 4
        z = F.layer_norm(x, (C,), mod.norm.weight, mod.norm.bias, 1e-5)
        o = o + PA_SCALE * mod.body.up(torch.relu(mod.body.down(z)))
    h = h + o
    y = F.layer_norm(h, (C,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    p = blk.mlp.drop.p
    m = _drop(F.linear(_drop(F.gelu(F.linear(y, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), p),
                       blk.mlp.fc2.weight, blk.mlp.fc2.bias), p)
    if method == "adapter":  # after the MLP's final dropout
        m = m + ffn_mod.body.up(torch.relu(ffn_mod.body.down(m)))
    return h + m


VILT_METHODS = ["apt", "lora", "adapter", "scaled_pa", "deep_prompt"]


def _prompts(method, p):
    """num_prompts for the methods that have it (an option of another method is an error)."""
    return {"num_prompts": p} if method in ("apt", "deep_prompt", "shallow_prompt") else {}


def _vilt_block_case(method, **opts):
    model = _vilt(method, **_prompts(method, 5), **opts)
    blk = model.transformer.blocks[0]
    a = blk.attn
    mod = getattr(a, f"peft_{method}")
    ffn_mod = getattr(a, "peft_adapter_ffn", None)
    g = torch.Generator().manual_seed(5)
    h = torch.randn(2, 7, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    return model, blk, mod, ffn_mod, h, mask


@pytest.mark.parametrize("method", VILT_METHODS)
def test_vilt_block_equals_official_transcription_in_eval(method):
    model, blk, mod, ffn_mod, h, mask = _vilt_block_case(method)
    model.eval()
    with torch.no_grad():
        got, _ = blk(h, mask)
        want = ref_vilt_block(blk, h, mask, method, mod, ffn_mod)
        frozen = ref_vilt_block(blk, h, mask)
    assert (want - frozen).abs().max() > 1e-2  # the method really changes the block
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("method,drops", [
    ("apt", "proj"), ("adapter", "proj"), ("adapter", "mlp"), ("scaled_pa", "proj"), ("lora", "lora"),
])
def test_vilt_block_equals_official_transcription_in_training_with_fixed_masks(method, drops):
    """Where dropout sits matters only in training: APT before proj_drop, adapters after proj_drop and after the
    MLP's final dropout, PA after proj_drop, one LoRA dropout mask per projection (q, v)."""
    model, blk, mod, ffn_mod, h, mask = _vilt_block_case(method, **({"lora_dropout": 0.5} if method == "lora" else {}))
    model.train()
    only = {"proj": [blk.attn.proj_drop], "mlp": [blk.mlp.drop], "lora": list(mod.modules())}[drops]
    _set_dropout(model, 0.5, only)
    with torch.no_grad():
        with fixed_dropout() as calls:
            got, _ = blk(h, mask)
        with fixed_dropout() as ref_calls:
            want = ref_vilt_block(blk, h, mask, method, mod, ffn_mod, lora_p=0.5 if method == "lora" else 0.0)
    assert calls[0] == ref_calls[0] > 0
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("placement", ["default", "append"])
def test_vilt_shallow_prompts_appended_after_text_and_image_tokens(placement):
    """Official shallow prompt (ViLT): the prompts join once, after all tokens, with mask 1, through every block."""
    opts = {} if placement == "default" else {"prompt_placement": placement}
    model = _vilt("shallow_prompt", num_prompts=4, **opts).eval()
    t = model.transformer
    prompts = shared_apt.tuning_modules(model)[0].prompts
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1]])
    seen = []
    hook = t.blocks[0].register_forward_pre_hook(lambda m, args, kwargs: seen.append((args, kwargs)),
                                                 with_kwargs=True)
    with torch.no_grad():
        got = t.forward_tokens(x, mask)
        hook.remove()
        # the blocks see the prompts AFTER the tokens (ViLT blocks are permutation-equivariant, so only the
        # sequence they are given shows the placement)
        (seq, *rest), kwargs = seen[0]
        seq_mask = kwargs.get("mask", rest[0] if rest else None)
        assert torch.equal(seq[:, :6], x) and torch.equal(seq[:, 6:], prompts.unsqueeze(0).expand(2, -1, -1))
        assert seq_mask.tolist() == [row + [1] * 4 for row in mask.tolist()]
        z = torch.cat([x, prompts.unsqueeze(0).expand(2, -1, -1)], 1)
        zm = torch.cat([mask, torch.ones(2, 4, dtype=torch.long)], 1)
        for blk in t.blocks:
            z = ref_vilt_block(blk, z, zm)
        want = F.layer_norm(z, (32,), t.norm.weight, t.norm.bias, t.norm.eps)[:, :6]
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# METER: official fusion layer (DoubtedSteam/APT METER/meter/modules/bert_model_<method>.py), post-LN


def _meter(method, **opts):
    model = meter_build(peft=method, peft_options=opts)
    if method != "full":
        _randomise(model, seed=13)
    return model


def ref_meter_attention(att, x, kv, method=None, mod=None, lora_p=0.0, kv_mask=None):
    s, out = att.self, att.output
    B, n, C = x.shape
    H = s.num_heads
    q = F.linear(x, s.query.weight, s.query.bias)
    k = F.linear(kv, s.key.weight, s.key.bias)
    v = F.linear(kv, s.value.weight, s.value.bias)
    if method == "lora":  # q from the query stream, v from the key/value input; own dropout each; no scaling
        q = q + (_drop(x, lora_p) @ mod.lora_A["q"]) @ mod.lora_B["q"]
        v = v + (_drop(kv, lora_p) @ mod.lora_A["v"]) @ mod.lora_B["v"]
    if method == "deep_prompt":  # prompts as extra keys/values (raw, no LN)
        k = torch.cat([k, F.linear(mod.prompts, s.key.weight, s.key.bias).expand(B, -1, -1)], 1)
        v = torch.cat([v, F.linear(mod.prompts, s.value.weight, s.value.bias).expand(B, -1, -1)], 1)
    heads = lambda t: t.reshape(B, t.shape[1], H, C // H).transpose(1, 2)  # noqa: E731
    scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(C // H)
    if kv_mask is not None:  # padded keys never attended
        scores = scores.masked_fill(~kv_mask.bool()[:, None, None, :], float("-inf"))
    probs = scores.softmax(-1)
    ctx = (probs @ heads(v)).transpose(1, 2).reshape(B, n, C)
    o = F.linear(ctx, out.dense.weight, out.dense.bias)
    if method == "apt":  # X = the query stream's attention input; before dropout and LN
        keys = mod.prompts + (mod.prompts @ mod.w1) @ mod.w2
        A = torch.relu(x @ keys.t())
        o = torch.exp(mod.log_scale) * (o + A.amax(-1, keepdim=True) * (A @ mod.prompts))
    if method == "adapter":  # after dense, before dropout and LN
        o = o + mod.body.up(torch.relu(mod.body.down(o)))
    h = F.layer_norm(_drop(o, out.dropout.p) + x, (C,), out.LayerNorm.weight, out.LayerNorm.bias, out.LayerNorm.eps)
    if method == "scaled_pa":  # bert_model_PA.py: added AFTER the post-attention LayerNorm
        z = F.layer_norm(x, (C,), mod.norm.weight, mod.norm.bias, 1e-5)
        h = h + PA_SCALE * mod.body.up(torch.relu(mod.body.down(z)))
    return h


def ref_meter_layer(layer, x, y, method=None, lora_p=0.0, x_mask=None, y_mask=None):
    mod = lambda att: getattr(att, f"peft_{method}", None)  # noqa: E731
    a = ref_meter_attention(layer.attention, x, x, method, mod(layer.attention), lora_p, x_mask)
    b = ref_meter_attention(layer.crossattention, a, y, method, mod(layer.crossattention), lora_p, y_mask)
    f = F.gelu(F.linear(b, layer.intermediate.dense.weight, layer.intermediate.dense.bias))
    o = F.linear(f, layer.output.dense.weight, layer.output.dense.bias)
    if method == "adapter":
        ffn = layer.crossattention.peft_adapter_ffn
        o = o + ffn.body.up(torch.relu(ffn.body.down(o)))
    ln = layer.output.LayerNorm
    return F.layer_norm(_drop(o, layer.output.dropout.p) + b, (o.shape[-1],), ln.weight, ln.bias, ln.eps)


@pytest.mark.parametrize("method", VILT_METHODS)
def test_meter_fusion_layer_equals_official_transcription_in_eval(method):
    model = _meter(method, **_prompts(method, 5)).eval()
    layer = model.cross_modal_text_layers[0]
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 6, 64, generator=g), torch.randn(2, 4, 64, generator=g)
    with torch.no_grad():
        got = layer(x, y)
        want = ref_meter_layer(layer, x, y, method)
        frozen = ref_meter_layer(layer, x, y)
    assert (want - frozen).abs().max() > 1e-2
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_meter_shallow_prompts_prepended_to_both_streams():
    """Official shallow prompt (METER): text prompts before the text stream, image prompts before the image stream,
    at the fusion input, mask 1, through every fusion layer (self- and cross-attention)."""
    model = _meter("shallow_prompt", num_prompts=3).eval()
    pt = model.cross_modal_text_input.peft_shallow_prompt.prompts
    pi = model.cross_modal_image_input.peft_shallow_prompt.prompts
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(2, 6, 64, generator=g), torch.randn(2, 4, 64, generator=g)
    xm = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    ym = torch.ones(2, 4, dtype=torch.long)
    with torch.no_grad():
        gx, gy, tsl, isl = model.fusion_layers(x, y, xm, ym)
        rx, ry = torch.cat([pt.expand(2, -1, -1), x], 1), torch.cat([pi.expand(2, -1, -1), y], 1)
        ones = torch.ones(2, 3, dtype=torch.long)
        rxm, rym = torch.cat([ones, xm], 1), torch.cat([ones, ym], 1)
        for tl, il in zip(model.cross_modal_text_layers, model.cross_modal_image_layers):
            rx, ry = (ref_meter_layer(tl, rx, ry, x_mask=rxm, y_mask=rym),
                      ref_meter_layer(il, ry, rx, x_mask=rym, y_mask=rxm))
    assert (tsl, isl) == (slice(3, 9), slice(3, 7))
    torch.testing.assert_close(gx, rx, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(gy, ry, atol=2e-5, rtol=1e-5)


def test_meter_lora_one_dropout_mask_per_projection_in_training():
    model = _meter("lora", lora_dropout=0.5).train()
    layer = model.cross_modal_image_layers[1]
    _set_dropout(model, 0.5, [m for m in model.modules() if isinstance(m, LoRAModule)
                              for m in m.modules()])
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(2, 5, 64, generator=g), torch.randn(2, 7, 64, generator=g)
    with torch.no_grad():
        with fixed_dropout():
            got = layer(x, y)
        with fixed_dropout():
            want = ref_meter_layer(layer, x, y, "lora", lora_p=0.5)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Initialisations (official values; large sizes so that the sample statistics are tight)


def test_official_initialisations():
    torch.manual_seed(0)
    apt = APTModule(512, 200, 8)
    assert abs(apt.prompts.std().item() - 0.02) < 0.001 and abs(apt.prompts.mean().item()) < 0.001
    assert abs(apt.w1.std().item() - 1.0) < 0.05 and not apt.w2.any() and apt.log_scale.item() == 0.0
    ad = Adapter(512, 128)
    for lin in (ad.body.down, ad.body.up):
        assert abs(lin.weight.std().item() - 0.01) < 0.0005 and not lin.bias.any()
    pa = ScaledParallelAdapter(512, 128)
    for lin in (pa.body.down, pa.body.up):
        assert abs(lin.weight.std().item() - 0.02) < 0.001 and not lin.bias.any()
    assert pa.scale == PA_SCALE
    lora = LoRAModule({"q": _slot(512, 512), "v": _slot(512, 512)}, rank=64)
    for name in ("q", "v"):
        assert abs(lora.lora_A[name].std().item() - 1.0) < 0.03 and not lora.lora_B[name].any()
    prompts = PromptTokens(768, 200).prompts
    bound = math.sqrt(6.0 / (3 * 16 * 16 + 768))  # VPT's Xavier-uniform bound with patch 16
    assert vpt_uniform_bound(768) == pytest.approx(bound)
    assert prompts.abs().max().item() <= bound and prompts.abs().max().item() > 0.99 * bound
    assert abs(prompts.std().item() - bound / math.sqrt(3)) < 0.01 * bound


def _slot(i, o):
    from shared_apt.peft.sites import LinearSlot

    return LinearSlot(nn.Linear(i, o))


# ----------------------------------------------------------------------------------------------------------------
# Trainable sets: the authors' substring filter, written out as literal names


VILT_COMMON = {
    "token_type_embeddings.weight", "text_embeddings.token_type_embeddings.weight", "class_token",
    "pooler.dense.weight", "pooler.dense.bias",
    "vqa_classifier.0.weight", "vqa_classifier.0.bias", "vqa_classifier.1.weight", "vqa_classifier.1.bias",
    "vqa_classifier.3.weight", "vqa_classifier.3.bias",
}
VILT_APT = {f"transformer.blocks.{i}.attn.peft_apt.{n}" for i in (0, 1) for n in ("prompts", "w1", "w2", "log_scale")}
METER_COMMON = {
    "token_type_embeddings.weight", "class_token",
    "cross_modal_text_pooler.dense.weight", "cross_modal_text_pooler.dense.bias",
    "cross_modal_image_pooler.dense.weight", "cross_modal_image_pooler.dense.bias",
    "vqa_classifier.0.weight", "vqa_classifier.0.bias", "vqa_classifier.1.weight", "vqa_classifier.1.bias",
    "vqa_classifier.3.weight", "vqa_classifier.3.bias",
}
METER_APT = {f"cross_modal_{s}_layers.{i}.{a}.peft_apt.{n}" for s in ("text", "image") for i in (0, 1)
             for a in ("attention", "crossattention") for n in ("prompts", "w1", "w2")}


def test_vilt_trainable_set_is_the_official_filter():
    assert set(shared_apt.trainable_parameters(_vilt("classifier"))) == VILT_COMMON
    assert set(shared_apt.trainable_parameters(_vilt("apt", num_prompts=3))) == VILT_COMMON | VILT_APT


def test_meter_trainable_set_is_the_official_filter_and_scale_frozen_by_default():
    assert set(shared_apt.trainable_parameters(_meter("classifier"))) == METER_COMMON
    m = _meter("apt", num_prompts=3)
    assert set(shared_apt.trainable_parameters(m)) == METER_COMMON | METER_APT  # the tag "mm" misses APT.scale
    paper = _meter("apt", num_prompts=3, apt_train_scale=True)
    scales = {n.replace("w1", "log_scale") for n in METER_APT if n.endswith("w1")}
    assert set(shared_apt.trainable_parameters(paper)) == METER_COMMON | METER_APT | scales


def test_vilt_segment_embedding_row0_trains():
    model = _vilt("classifier").train()
    out = model.infer(vilt_batch(model.hparams.config))
    model.vqa_classifier(out["cls_feats"]).square().mean().backward()
    g = model.text_embeddings.token_type_embeddings.weight.grad
    assert g is not None and g[0].abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------
# APT under mixed precision, double backward, K cache


def _apt_step(dtype, fast):
    model = _vilt("apt", num_prompts=4, apt_fast=fast)
    model.train()
    b = vilt_batch(model.hparams.config)
    ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with ctx:
        out = model.infer(b)
        loss = model.vqa_classifier(out["cls_feats"]).float().square().mean()
    (loss * 4096.0).backward()  # static loss scale, as a GradScaler would apply under fp16
    return loss.detach(), {n: p.grad / 4096.0 for n, p in shared_apt.trainable_parameters(model).items()
                           if "peft_apt" in n}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fast", [True, False])
def test_apt_training_step_under_cpu_autocast(dtype, fast):
    loss32, grads32 = _apt_step(None, fast)
    loss, grads = _apt_step(dtype, fast)
    assert torch.isfinite(loss) and abs(loss - loss32) <= 0.05 * abs(loss32) + 1e-3
    for n, g in grads.items():
        assert g is not None and g.dtype == torch.float32 and torch.isfinite(g).all(), n
        ref = grads32[n]
        assert (g - ref).norm() <= 0.1 * ref.norm() + 1e-6, n


def test_fused_apt_refuses_double_backward_and_reference_supports_it():
    torch.manual_seed(0)
    m = APTModule(8, 5, 2)
    with torch.no_grad():
        m.w2.normal_()
    x = torch.randn(2, 3, 8, requires_grad=True)
    o = torch.zeros(2, 3, 8)
    (gx,) = torch.autograd.grad(m(x, o).square().sum(), x)  # first order: fine
    with pytest.raises(RuntimeError, match="no double backward.*apt_fast=False"):
        torch.autograd.grad(m(x, o).square().sum(), x, create_graph=True)
    m.fast = False
    (gx2,) = torch.autograd.grad(m(x, o).square().sum(), x, create_graph=True)
    torch.testing.assert_close(gx, gx2.detach(), atol=1e-5, rtol=1e-5)
    gx2.sum().backward()  # second order through the reference path
    assert m.w2.grad is not None


def _k(m):
    return m.prompts + (m.prompts @ m.w1) @ m.w2


def test_apt_keys_follow_ema_data_edits_and_autocast():
    torch.manual_seed(0)
    m = APTModule(16, 6, 2)
    with torch.no_grad():
        m.w2.normal_()
        k1 = m.keys()
        for p in m.parameters():  # the usual EMA idiom: edits through .data (no version bump)
            p.data.mul_(0.9).add_(torch.randn_like(p), alpha=0.1)
        assert torch.equal(m.keys(), _k(m)) and not torch.allclose(m.keys(), k1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kb = m.keys()
        assert not torch.equal(kb, _k(m))  # computed at bf16 precision ...
        assert torch.equal(m.keys(), _k(m))  # ... and never served again in fp32


def test_explicit_key_cache_for_inference():
    model = _vilt("apt", num_prompts=3).eval()
    mods = shared_apt.tuning_modules(model)
    with torch.no_grad(), cached_keys(model):
        k = mods[0].keys()
        assert mods[0].keys() is k
        with torch.autocast("cpu", dtype=torch.bfloat16):  # another autocast state: another K
            assert mods[0].keys() is not k
        mods[0].w2.add_(1.0)  # a versioned in-place change is seen even inside the block
        torch.testing.assert_close(mods[0].keys(), _k(mods[0]))
    assert mods[0]._key_cache is None and mods[0].keys() is not mods[0].keys()


def test_apt_delta_dropout_acts_before_the_row_max():
    """apt_delta with attention dropout on A (training): alpha is the row max of the dropped A."""
    torch.manual_seed(1)
    x, keys, prompts = torch.randn(2, 4, 8), torch.randn(5, 8), torch.randn(5, 8)
    with fixed_dropout():
        got = apt_delta(x, keys, prompts, dropout_p=0.5, training=True)
    with fixed_dropout():
        A = _drop(torch.relu(x @ keys.t()), 0.5)
        want = A.amax(-1, keepdim=True) * (A @ prompts)
    torch.testing.assert_close(got, want)


# ----------------------------------------------------------------------------------------------------------------
# LoRA merge state


def _lora_vilt():
    model = _vilt("lora").eval()
    return model, vilt_batch(model.hparams.config), model.transformer.blocks[0].attn.qkv


def test_lora_merge_unmerge_is_bit_exact_and_merged_equals_unmerged():
    model, b, qkv = _lora_vilt()
    w = qkv.weight.detach().clone()
    with torch.no_grad():
        ref = model.infer(b)["cls_feats"]
        for _ in range(3):
            shared_apt.merge(model)
            assert not torch.equal(qkv.weight, w)
            torch.testing.assert_close(model.infer(b)["cls_feats"], ref, atol=1e-5, rtol=1e-5)
            shared_apt.unmerge(model)
    assert torch.equal(qkv.weight, w)


def test_lora_training_while_merged_is_handled():
    model, b, qkv = _lora_vilt()
    w = qkv.weight.detach().clone()
    model.train()
    with pytest.raises(RuntimeError, match="model.eval"):
        shared_apt.merge(model)
    model.eval()
    shared_apt.merge(model)
    model.train()  # unmerges: LoRA parameters get gradients again
    assert torch.equal(qkv.weight, w)
    out = model.infer(b)
    model.vqa_classifier(out["cls_feats"]).square().mean().backward()
    mod = model.transformer.blocks[0].attn.peft_lora
    assert mod.lora_B["q"].grad.abs().sum() > 0


def test_lora_parameters_changed_while_merged_are_folded_in_and_unmerge_restores():
    model, b, qkv = _lora_vilt()
    w = qkv.weight.detach().clone()
    shared_apt.merge(model)
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if "lora" in n], lr=0.1)
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    opt.step()  # a step while merged
    with torch.no_grad():
        merged = model.infer(b)["cls_feats"]
        shared_apt.unmerge(model)
        assert torch.equal(qkv.weight, w)  # frozen weights intact
        unmerged = model.infer(b)["cls_feats"]
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)


def test_lora_state_dict_saved_while_merged_reloads_once_and_load_tuned_into_merged(tmp_path):
    model, b, qkv = _lora_vilt()
    w = qkv.weight.detach().clone()
    with torch.no_grad():
        ref = model.infer(b)["cls_feats"]
    shared_apt.merge(model)
    sd = model.state_dict()
    assert torch.equal(sd["transformer.blocks.0.attn.qkv.weight"], w)  # the unmerged frozen weight
    other, _, _ = _lora_vilt()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    shared_apt.merge(other.eval())
    other.load_state_dict(sd)  # loading into a merged model: unmerged first, the update applied once
    with torch.no_grad():
        torch.testing.assert_close(other.infer(b)["cls_feats"], ref, atol=1e-5, rtol=1e-5)
    shared_apt.save_tuned(model, str(tmp_path / "t"))
    third, _, _ = _lora_vilt()
    with torch.no_grad():
        for n, p in third.named_parameters():
            if "lora" in n:
                p.zero_()
    shared_apt.merge(third)
    shared_apt.load_tuned(third, str(tmp_path / "t"))  # into a merged model
    with torch.no_grad():
        torch.testing.assert_close(third.infer(b)["cls_feats"], ref, atol=1e-5, rtol=1e-5)
