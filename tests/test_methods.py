"""Tuning methods against independent truth: hand-computed cases, identities at initialisation, equivalent paths."""
import math

import pytest
import torch

import shared_apt
from shared_apt.peft.methods.apt import APTModule, apt_delta, apt_delta_fused
from tiny import TinyBert, vilt_batch, vilt_config
from vilt.modules import ViLTransformerSS


def test_apt_hand_computed_p2_d4():
    """P' = e1, e2; W1 = e1 (rank 1), W2 = e3 -> K = [[1,0,1,0],[0,1,0,0]].
    Token 1: XK^T = [3, -1] -> A = [3, 0], alpha = 3, A P' = [3,0,0,0], dX = [9,0,0,0].
    Token 2: XK^T = [-1, -2] -> A = 0, dX = 0.  s = ln 2: out = 2 (O + dX)."""
    m = APTModule(dim=4, num_prompts=2, rank=1)
    with torch.no_grad():
        m.prompts.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        m.w1.copy_(torch.tensor([[1.0], [0], [0], [0]]))
        m.w2.copy_(torch.tensor([[0, 0, 1.0, 0]]))
        m.log_scale.fill_(math.log(2.0))
    x = torch.tensor([[[2.0, -1, 1, 0], [-1, -2, 0, 3]]])
    o = torch.tensor([[[1.0, 1, 1, 1], [0, 0, 0, 0]]])
    assert torch.equal(m.keys().detach(), torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]]))
    expected = torch.tensor([[[20.0, 2, 2, 2], [0, 0, 0, 0]]])
    for fast in (True, False):
        m.fast = fast
        assert torch.allclose(m(x, o), expected, atol=1e-6)


def test_apt_parameter_count_and_init():
    m = APTModule(768, 200, 4)
    assert sum(p.numel() for p in m.parameters()) == 159_745 == APTModule.num_parameters(768, 200, 4)
    assert torch.count_nonzero(m.w2) == 0 and m.log_scale.item() == 0.0
    assert abs(m.prompts.std().item() - 0.02) < 0.002 and abs(m.w1.std().item() - 1.0) < 0.05
    clip = sum(p.numel() for p in APTModule(512, 4, 2).parameters()) * 12
    assert clip == 49_164


def test_apt_alpha_is_detached_and_w1_has_no_gradient_at_init():
    torch.manual_seed(0)
    m = APTModule(8, 5, 2, fast=False)
    x = torch.randn(2, 3, 8, requires_grad=True)
    o = torch.randn(2, 3, 8)
    m(x, o).square().sum().backward()
    assert torch.count_nonzero(m.w1.grad) == 0  # W2 = 0 at init
    # alpha detached: gradient equals the one with alpha replaced by a constant
    keys = m.keys().detach().requires_grad_(False)
    x2 = x.detach().clone().requires_grad_(True)
    a = torch.relu(x2 @ keys.t())
    alpha = a.amax(-1, keepdim=True).detach().clone()
    (o + alpha * (torch.relu(x2 @ keys.t()) @ m.prompts.detach())).square().sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 7, 16, 5), (1, 1, 8, 3), (3, 11, 32, 40)])
def test_fused_apt_equals_reference_outputs_and_gradients(shape):
    B, n, d, p = shape
    torch.manual_seed(sum(shape))
    x = torch.randn(B, n, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(p, d, dtype=torch.float64, requires_grad=True)
    pr = torch.randn(p, d, dtype=torch.float64, requires_grad=True)
    g = torch.randn(B, n, d, dtype=torch.float64)
    ref = apt_delta(x, k, pr)
    grads_ref = torch.autograd.grad(ref, (x, k, pr), g)
    fast = apt_delta_fused(x, k, pr)
    grads_fast = torch.autograd.grad(fast, (x, k, pr), g)
    assert torch.allclose(ref, fast, atol=1e-10)
    for a, b in zip(grads_ref, grads_fast):
        assert torch.allclose(a, b, atol=1e-10)
    # float32 to 1e-6 relative, bfloat16 loosely
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 5e-2)):
        xs, ks, ps = (t.detach().to(dtype).requires_grad_(True) for t in (x, k, pr))
        out = apt_delta_fused(xs, ks, ps)
        assert out.dtype == dtype
        assert torch.allclose(out.double(), ref.detach(), rtol=tol, atol=tol * ref.abs().max().item())


def _copy_backbone(src, dst):
    dst.load_state_dict(src.state_dict(), strict=False)


def _vilt(method, seed=0, **opts):
    torch.manual_seed(seed)
    return ViLTransformerSS(vilt_config(peft=method, peft_options=opts)).eval()


@pytest.mark.parametrize("method,zero", [
    ("lora", None),  # B = 0 at init
    ("adapter", "body.up"),
    ("scaled_pa", "body.up"),
])
def test_identity_at_initialisation(method, zero):
    base = _vilt("classifier")
    model = _vilt(method, seed=1)
    _copy_backbone(base, model)
    with torch.no_grad():
        for m in shared_apt.tuning_modules(model):
            for name, p in m.named_parameters():
                if zero and (name == zero or name.startswith(zero + ".")):
                    p.zero_()
    b = vilt_batch(base.hparams.config)
    torch.manual_seed(3)
    ref = base.infer(b)
    torch.manual_seed(3)
    out = model.infer(b)
    for key in ("cls_feats", "text_feats", "image_feats"):
        assert torch.equal(ref[key], out[key]), key


def test_lora_merged_equals_unmerged():
    model = _vilt("lora")
    with torch.no_grad():
        for m in shared_apt.tuning_modules(model):
            for p in m.lora_B.values():
                p.normal_(std=0.1)
    b = vilt_batch(model.hparams.config)
    torch.manual_seed(0)
    unmerged = model.infer(b)["cls_feats"]
    w = model.transformer.blocks[0].attn.qkv.weight.clone()
    shared_apt.merge(model)
    assert not torch.equal(w, model.transformer.blocks[0].attn.qkv.weight)
    torch.manual_seed(0)
    merged = model.infer(b)["cls_feats"]
    assert torch.allclose(unmerged, merged, atol=1e-5)
    shared_apt.unmerge(model)
    assert torch.allclose(w, model.transformer.blocks[0].attn.qkv.weight, atol=1e-6)


def test_deep_prompt_equals_prompts_concatenated_as_tokens_with_queries_dropped():
    """Official deep prompt (ViLT): prompts go through LN1 and the frozen QKV with the tokens; only real queries."""
    model = _vilt("deep_prompt")
    blk = model.transformer.blocks[0]
    prompts = shared_apt.tuning_modules(model)[0].prompts
    x = torch.randn(2, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        got, _ = blk.attn(blk.norm1(x), mask)
        provider = blk.attn.peft_extra_kv
        blk.attn.peft_extra_kv = None
        full = torch.cat([x, prompts.unsqueeze(0).expand(2, -1, -1)], 1)
        full_mask = torch.cat([mask, torch.ones(2, prompts.shape[0], dtype=torch.long)], 1)
        want, _ = blk.attn(blk.norm1(full), full_mask)
        blk.attn.peft_extra_kv = provider
    assert torch.allclose(got, want[:, :6], atol=1e-6)


def test_deep_prompt_in_hf_cross_attention_equals_concatenated_context():
    torch.manual_seed(0)
    model = TinyBert()
    shared_apt.apply(model, "deep_prompt", num_prompts=3)
    cross = model.layer[0].crossattention
    prompts = cross.peft_deep_prompt.prompts
    h, c = torch.randn(2, 4, 32), torch.randn(2, 5, 32)
    with torch.no_grad():
        got = cross(h, None, c)[0]
        provider = cross.self.peft_extra_kv
        cross.self.peft_extra_kv = None
        want = cross(h, None, torch.cat([c, prompts.unsqueeze(0).expand(2, -1, -1)], 1))[0]
        cross.self.peft_extra_kv = provider
    assert torch.allclose(got, want, atol=1e-6)


def test_apt_in_cross_attention_reads_only_the_query_stream():
    torch.manual_seed(0)
    model = TinyBert()
    shared_apt.apply(model, "apt", num_prompts=3)
    cross = model.layer[0].crossattention
    apt = cross.peft_apt
    seen = []
    handle = apt.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    h = torch.randn(2, 4, 32)
    with torch.no_grad():
        cross(h, None, torch.randn(2, 5, 32))
        cross(h, None, torch.randn(2, 9, 32))
    handle.remove()
    assert len(seen) == 2 and torch.equal(seen[0], h) and torch.equal(seen[1], h)


def test_shallow_prompt_tokens_leave_output_shapes_unchanged_and_change_values():
    base = _vilt("classifier")
    model = _vilt("shallow_prompt", num_prompts=5)
    _copy_backbone(base, model)
    b = vilt_batch(base.hparams.config)
    torch.manual_seed(0)
    r = base.infer(b)
    torch.manual_seed(0)
    o = model.infer(b)
    assert r["image_feats"].shape == o["image_feats"].shape and r["text_feats"].shape == o["text_feats"].shape
    assert not torch.allclose(r["cls_feats"], o["cls_feats"])
