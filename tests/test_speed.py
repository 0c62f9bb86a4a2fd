"""Speed options (shared_apt.vl.speed) on tiny ViLT and METER models with every tuning method: the SDPA attention
equals upstream's explicit attention (outputs and gradients, padding masks, deep prompts' extra keys/values),
recomputation gives the same gradients, every method trains a step under bf16 autocast (the bf16 fast path: the
same numbers as upstream's math under autocast) and compiled."""
from __future__ import annotations

import contextlib

import pytest
import torch

import shared_apt
from shared_apt.peft.registry import general_method_names
from shared_apt.vl.speed import apply_speed_options, set_attention_impl
from tiny import meter_batch, meter_build, vilt_batch, vilt_config
from vilt.modules import ViLTransformerSS

METHODS = list(general_method_names())  # every method ViLT and METER can take (prompt-learning methods need CLIP)


def _randomise(model, seed=11):
    """Non-trivial method parameters (APT's W2, LoRA B, adapter up-projections are zero at initialisation)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in shared_apt.tuning_modules(model):
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _options(method):
    return {"num_prompts": 5} if method in ("apt", "deep_prompt", "shallow_prompt") else {}


def _build(backbone, method, **cfg):
    torch.manual_seed(0)
    if backbone == "vilt":
        model = ViLTransformerSS(vilt_config(peft=method, peft_options=_options(method), **cfg))
    else:
        model = meter_build(peft=method, peft_options=_options(method), **cfg)
    _randomise(model)
    return model


def _batch(backbone, model):
    return vilt_batch(model.hparams.config) if backbone == "vilt" else meter_batch()


def _step(model, batch, autocast=None):
    """Training-mode forward of the task head and backward; (output, {trainable name: grad})."""
    model.train()
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(1)  # ViLT draws its patch order; dropout (where on) draws its masks
    ctx = torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with ctx:
        out = model.vqa_classifier(model.infer(batch)["cls_feats"])
    out.float().square().mean().backward()
    return out.detach().float(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def _assert_grads_close(a, b, rtol, atol):
    assert a.keys() == b.keys() and any(g is not None for g in a.values())
    for n in a:
        assert (a[n] is None) == (b[n] is None), n  # (unused parameters, e.g. METER's CLIP text tower: None in both)
        if a[n] is None:
            continue
        torch.testing.assert_close(a[n], b[n], rtol=rtol, atol=atol, msg=lambda m: f"{n}: {m}")


def _count_sdpa(model, batch):
    """How many calls of F.scaled_dot_product_attention one forward makes."""
    calls = [0]
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        with torch.no_grad():
            torch.manual_seed(1)
            model.eval().infer(batch)
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    return calls[0]


@pytest.mark.parametrize("backbone", ["vilt", "meter"])
@pytest.mark.parametrize("method", METHODS)
def test_sdpa_equals_explicit_attention_outputs_and_gradients(backbone, method):
    model = _build(backbone, method)
    batch = _batch(backbone, model)
    assert (batch["text_masks"] == 0).any()  # padded text keys (ViLT: padded image patches too)
    set_attention_impl(model, "explicit")
    explicit_calls = _count_sdpa(model, batch)  # METER's CLIP and RoBERTa encoders call SDPA themselves
    out_e, grads_e = _step(model, batch)
    set_attention_impl(model, "sdpa")
    # tiny ViLT: 2 blocks; tiny METER: 2 fusion layers x 2 streams x (self + cross)
    assert _count_sdpa(model, batch) - explicit_calls == (2 if backbone == "vilt" else 8)
    out_s, grads_s = _step(model, batch)
    torch.testing.assert_close(out_s, out_e, rtol=0, atol=1e-5)
    _assert_grads_close(grads_s, grads_e, rtol=1e-4, atol=1e-5)


def test_sdpa_is_the_default_and_attention_impl_is_checked():
    model = ViLTransformerSS(vilt_config())
    assert all(b.attn.attention_impl == "sdpa" for b in model.transformer.blocks)
    model = ViLTransformerSS(vilt_config(attention_impl="explicit"))
    assert all(b.attn.attention_impl == "explicit" for b in model.transformer.blocks)
    with pytest.raises(ValueError, match="attention_impl='flash'.*sdpa"):
        ViLTransformerSS(vilt_config(attention_impl="flash"))
    with pytest.raises(ValueError, match="compile_layers='nope'"):
        ViLTransformerSS(vilt_config(compile_layers="nope"))


@pytest.mark.parametrize("backbone", ["vilt", "meter"])
@pytest.mark.parametrize("method", ["apt", "deep_prompt", "lora"])
def test_recomputation_gives_the_same_gradients_with_dropout(backbone, method):
    model = _build(backbone, method, drop_rate=0.1)
    batch = _batch(backbone, model)
    out_a, grads_a = _step(model, batch)
    apply_speed_options(model.speed_layers(), model, recompute_layers=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out_b, grads_b = _step(model, batch)
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)
    _assert_grads_close(grads_b, grads_a, rtol=1e-6, atol=1e-7)
    apply_speed_options(model.speed_layers(), model, recompute_layers=False)
    saved_plain = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved_plain.append(t.numel()) or t, lambda t: t):
        _step(model, batch)
    assert sum(saved) < sum(saved_plain)  # the layers' activations are not kept


@pytest.mark.parametrize("backbone", ["vilt", "meter"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_a_step_under_bf16_autocast(backbone, method):
    model = _build(backbone, method)
    batch = _batch(backbone, model)
    out32, grads32 = _step(model, batch)
    out16, grads16 = _step(model, batch, autocast=torch.bfloat16)
    assert torch.isfinite(out16).all()
    torch.testing.assert_close(out16, out32, rtol=0.05, atol=0.05)
    assert grads16.keys() == grads32.keys()
    names = [n for n, g in grads32.items() if g is not None]
    assert names and all(grads16[n] is not None for n in names)
    for n in names:
        assert grads16[n].dtype == torch.float32 and torch.isfinite(grads16[n]).all(), n
    g16 = torch.cat([grads16[n].flatten() for n in names])
    g32 = torch.cat([grads32[n].flatten() for n in names])
    assert (g16 - g32).norm() <= 0.05 * g32.norm()


def _compiled_step_matches_eager(method, backend, **cfg):
    """One training step with the layers compiled by ``backend`` equals the eager step; one graph, no graph break."""
    from torch._dynamo.utils import counters

    model = _build("vilt", method, **cfg)
    batch = _batch("vilt", model)
    out_e, grads_e = _step(model, batch)
    torch._dynamo.reset()
    counters.clear()
    model = _build("vilt", method, compile_layers=backend, **cfg)
    out_c, grads_c = _step(model, batch)
    # every block shares one graph (same code, guards on the block), the method's hooks inside it, no graph break
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"], dict(counters["graph_break"])
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    _assert_grads_close(grads_c, grads_e, rtol=1e-4, atol=1e-5)


# every method, compiled with the aot_eager backend (Dynamo graph capture and AOTAutograd as with inductor, without
# inductor's C++ code generation)
@pytest.mark.parametrize("method", METHODS)
def test_compiled_layers_train_a_step_with_every_method(method):
    _compiled_step_matches_eager(method, "aot_eager")


# inductor (torch.compile's default backend: generated C++ kernels, built with the machine's C++ compiler) for APT and
# LoRA only, on a one-layer tiny ViLT: one cold inductor compile of a tiny layer takes 30-50 s on a busy 2-core CPU
# (the other methods go through the same Dynamo / AOTAutograd capture in the aot_eager test above). fallback_random:
# inductor's own RNG would draw other dropout masks (LoRA's dropout 0.1) than eager; with it the draws are eager's.
@pytest.mark.parametrize("method", ["apt", "lora"])
def test_inductor_compiled_layer_trains_a_step(method):
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        _compiled_step_matches_eager(method, True, num_layers=1)


def test_precision_16_on_cpu_is_bf16_mixed_where_the_cpu_has_bf16(monkeypatch):
    from shared_apt.vl.training import run

    monkeypatch.setattr(run, "cpu_has_bf16", lambda: True)
    assert run.resolve_precision(16, "cpu") == "bf16-mixed"
    assert run.resolve_precision(16, "gpu") == "16-mixed"
    assert run.resolve_precision("bf16", "gpu") == "bf16-mixed"
    assert run.resolve_precision(32, "cpu") == "32-true"
    monkeypatch.setattr(run, "cpu_has_bf16", lambda: False)
    assert run.resolve_precision(16, "cpu") == "32-true"


class _OpLog(torch.utils._python_dispatch.TorchDispatchMode):
    """Names of the operators that run inside the block."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _linear_run(lin, x, autocast=None):
    x = x.clone().requires_grad_(True)
    log = _OpLog()
    ctx = torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with log, ctx:
        y = lin(x)
        y.float().square().sum().backward()
    return y.detach().float(), x.grad, log.ops


def test_frozen_linear_runs_through_onednn_with_f_linear_values_and_input_gradients():
    from shared_apt.vl.speed import Linear, set_linear_impl

    torch.manual_seed(0)
    lin = Linear(32, 48).requires_grad_(False)
    x = torch.randn(3, 7, 32)
    y, gx, ops = _linear_run(lin, x)
    assert ops.count("mkldnn._linear_pointwise") == 2 and not {"aten.addmm", "aten.mm"} & set(ops)  # fwd + bwd
    x64, w64, b64 = x.double().requires_grad_(True), lin.weight.double(), lin.bias.double()
    ref = torch.nn.functional.linear(x64, w64, b64)
    ref.square().sum().backward()
    torch.testing.assert_close(y, ref.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, x64.grad.float(), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="no double backward"):
        xx = x.clone().requires_grad_(True)
        torch.autograd.grad(lin(xx).square().sum(), xx, create_graph=True)
    # ATen's F.linear: when asked, for a trainable weight, and under autocast
    assert set_linear_impl(torch.nn.Sequential(lin, torch.nn.Linear(2, 2)), "aten") == 1
    assert "mkldnn._linear_pointwise" not in _linear_run(lin, x)[2]
    lin.linear_impl = "onednn"
    lin.weight.requires_grad_(True)
    assert "mkldnn._linear_pointwise" not in _linear_run(lin, x)[2] and lin.weight.grad is not None
    lin.weight.requires_grad_(False)
    assert "mkldnn._linear_pointwise" not in _linear_run(lin, x, autocast=torch.float16)[2]  # only bf16 autocast
    with pytest.raises(ValueError, match="linear_impl='blas'"):
        set_linear_impl(lin, "blas")


def test_frozen_linear_under_bf16_autocast_runs_through_onednn_as_autocast_f_linear():
    """Under CPU bf16 autocast the frozen linear is autocast's F.linear (bf16 input, weight and bias, fp32
    accumulation, bf16 output, bf16 input gradient) through oneDNN: against an fp64 product of the bf16-rounded
    operands it is off by the output's one bf16 rounding, and it equals ATen's autocast path within two."""
    from shared_apt.vl.speed import Linear

    torch.manual_seed(0)
    lin = Linear(32, 48).requires_grad_(False)
    x = torch.randn(3, 7, 32)
    y, gx, ops = _linear_run(lin, x, autocast=torch.bfloat16)
    assert ops.count("mkldnn._linear_pointwise") == 2 and not {"aten.addmm", "aten.mm", "aten.linear"} & set(ops)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert lin(x).dtype == torch.bfloat16
    assert gx.dtype == torch.float32
    r = lambda t: t.bfloat16().double()  # noqa: E731
    ref = torch.nn.functional.linear(r(x), r(lin.weight), r(lin.bias))
    ulp = 2.0 ** -8  # bf16: 8 significant bits
    torch.testing.assert_close(y, ref.float(), rtol=ulp, atol=1e-6)
    g = r(2 * y)  # d(sum y^2)/dy, in y's dtype (bf16)
    torch.testing.assert_close(gx, (g @ r(lin.weight)).float(), rtol=ulp, atol=1e-6)
    lin.linear_impl = "aten"
    y_aten, gx_aten, ops_aten = _linear_run(lin, x, autocast=torch.bfloat16)
    assert "mkldnn._linear_pointwise" not in ops_aten
    torch.testing.assert_close(y, y_aten, rtol=2 * ulp, atol=1e-6)
    torch.testing.assert_close(gx, gx_aten, rtol=2 * ulp, atol=1e-6)


def _upstream_attention(q, k, v, mask, scale):
    """ViLT's explicit attention (upstream's matmul, scale, -inf masking of padded keys, softmax, matmul)."""
    attn = (q @ k.transpose(-2, -1)) * scale
    return attn.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(dim=-1) @ v


@pytest.mark.parametrize("additive", [False, True])
def test_bf16_cpu_attention_is_upstreams_explicit_math_under_autocast(additive):
    """speed.scaled_dot_product_attention on the CPU under bf16 autocast: the values and gradients of upstream's
    explicit attention under the same autocast (bool or additive padding masks); F.scaled_dot_product_attention
    in fp32 and outside the CPU's bf16."""
    from shared_apt.vl import speed

    torch.manual_seed(0)
    B, H, N, D = 2, 3, 9, 8
    q0, k0, v0 = (torch.randn(B, H, N, D) for _ in range(3))
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, 6:] = False
    attn_mask = mask[:, None, None, :]
    if additive:
        attn_mask = torch.zeros(B, 1, 1, N).masked_fill(~attn_mask, float("-inf"))

    def run(f):
        q, k, v = (t.clone().requires_grad_(True) for t in (q0, k0, v0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = f(q, k, v)
        out.float().square().sum().backward()
        return out, q.grad, k.grad, v.grad

    log = _OpLog()
    with log:
        ours = run(lambda q, k, v: speed.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=0.3))
    assert "aten._scaled_dot_product_flash_attention_for_cpu" not in log.ops and ours[0].dtype == torch.bfloat16
    ref = run(lambda q, k, v: _upstream_attention(q, k, v, mask, 0.3))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with log:  # fp32: torch's function (the fused kernel)
        log.ops.clear()
        out32 = speed.scaled_dot_product_attention(q0, k0, v0, attn_mask=attn_mask, scale=0.3)
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in log.ops
    torch.testing.assert_close(out32, _upstream_attention(q0, k0, v0, mask, 0.3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backbone", ["vilt", "meter"])
@pytest.mark.parametrize("method", METHODS)
def test_bf16_fast_path_equals_upstream_math_under_autocast(backbone, method):
    """A training step under bf16 autocast with the defaults (oneDNN bf16 linear layers, the CPU bf16 attention)
    against the same model on ATen's F.linear and upstream's explicit attention under the same autocast: the same
    bf16 numbers up to the products' summation order (outputs and gradients of every method)."""
    from shared_apt.vl.speed import set_linear_impl

    model = _build(backbone, method)
    batch = _batch(backbone, model)
    out_f, grads_f = _step(model, batch, autocast=torch.bfloat16)
    set_attention_impl(model, "explicit")
    set_linear_impl(model, "aten")
    out_r, grads_r = _step(model, batch, autocast=torch.bfloat16)
    # (here equal to the bit; the bounds allow two bf16 roundings of the output and a tenth of the gap between bf16
    # and fp32 gradients, 0.6-1.5 % on these models, for other summation orders of other CPUs' kernels)
    torch.testing.assert_close(out_f, out_r, rtol=2.0 ** -7, atol=1e-5)
    names = [n for n, g in grads_r.items() if g is not None]
    assert names and all(grads_f[n] is not None for n in names)
    g_f = torch.cat([grads_f[n].flatten() for n in names])
    g_r = torch.cat([grads_r[n].flatten() for n in names])
    assert (g_f - g_r).norm() <= 1e-3 * g_r.norm()


@pytest.mark.parametrize("backbone", ["vilt", "meter"])
def test_the_layers_of_a_tuned_model_use_the_onednn_linear_by_default(backbone):
    model = _build(backbone, "apt")
    batch = _batch(backbone, model)
    log = _OpLog()
    with log, torch.no_grad():
        torch.manual_seed(1)
        model.eval().infer(batch)
    # tiny ViLT: 2 blocks x (qkv, proj, fc1, fc2); tiny METER: 2 layers x 2 streams x (2 x (q, k, v, dense) + 2)
    assert log.ops.count("mkldnn._linear_pointwise") == (8 if backbone == "vilt" else 40)


def test_fastest_precision_is_bf16_only_with_native_bf16_and_a_wide_model(monkeypatch):
    from shared_apt.vl import speed
    from shared_apt.vl.training import run

    monkeypatch.setattr(speed, "cpu_bf16_instructions", lambda: ("avx512_bf16",))
    precision, why = speed.fastest_precision("cpu", 768)
    assert precision == "bf16" and "avx512_bf16" in why and "SDPA" in why
    assert run.resolve_precision(precision, "cpu") == "bf16-mixed"
    assert speed.fastest_precision("cpu", speed.BF16_MIN_HIDDEN - 1)[0] == 32  # the demo's width: fp32 is faster
    monkeypatch.setattr(speed, "cpu_bf16_instructions", lambda: ())
    assert speed.fastest_precision("cpu", 768)[0] == 32  # emulated bf16
    assert run.resolve_precision(speed.fastest_precision("cuda", 768)[0], "gpu") == "16-mixed"
    assert speed.fastest_precision("cuda", 64)[0] == 32
    with pytest.raises(ValueError, match="device_type='tpu'"):
        speed.fastest_precision("tpu", 768)


def test_demo_and_nlvr_bench_print_their_path_fp32_sdpa_at_the_tiny_width(capsys):
    from shared_apt.harness.experiments import compare

    bb = compare.get_backbone("vilt")
    assert compare.build_config(bb, [bb.tiny], {})["hidden_size"] == 64
    assert compare.fastest_path("demo", bb) == 32
    assert capsys.readouterr().out.startswith("[demo] path: fp32 + SDPA attention (")
    assert compare.fastest_path("demo", bb, "bf16") == "bf16" and compare.fastest_path("demo", bb, "32") == 32
    assert "precision bf16 (--precision)" in capsys.readouterr().out
    # --pretrain-precision: the pre-training's own path (bf16 fine-tuning from the fp32 pre-trained backbone)
    import argparse

    ap = argparse.ArgumentParser()
    compare.add_run_arguments(ap)
    pre, fine = compare.run_precisions("demo", bb, ap.parse_args(["--precision", "bf16", "--pretrain-precision", "32"]))
    assert (pre, fine) == ({"precision": 32}, {"precision": "bf16"})
    assert "[demo pre-training] path: precision 32 (--pretrain-precision)" in capsys.readouterr().out
    pre, fine = compare.run_precisions("demo", bb, ap.parse_args(["--precision", "bf16"]))
    assert pre == fine == {"precision": "bf16"}


@pytest.mark.parametrize("backbone,precision", [("vilt-b32", "32"), ("meter-b", "bf16")])
def test_bench_against_official_json_has_every_field(tmp_path, backbone, precision):
    import json

    from shared_apt.bench import main

    out = tmp_path / "res.json"
    assert main(["--backbone", backbone, "--methods", "apt", "--against", "official", "--size", "tiny",
                 "--rounds", "1", "--infer-reps", "1", "--batch", "2", "--seq-len", "48", "--precision", precision,
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())["against_official"]
    for key in ("train_step_ratio", "infer_ratio", "peak_mem_ratio", "max_abs_diff"):
        assert isinstance(res[key], float) and res[key] >= 0, key
    assert res["precision"] == precision and res["device"] == "cpu"
    assert res["max_abs_diff"] <= (1e-5 if precision == "32" else 0.1)
    assert res["project"]["peak_mem_mb"] > 0 and res["official"]["peak_mem_mb"] > 0


def test_authors_model_equals_the_project_model_and_sees_the_apt_parameters():
    """The authors' layers filled through the official converter give the project's outputs (padding in the
    batch), and a change of one APT tensor in the project model alone makes them differ."""
    from shared_apt.harness import authors
    from shared_apt.harness.backbones import get_backbone

    bb = get_backbone("vilt-b32")
    torch.manual_seed(0)
    model = bb.build("apt", device="cpu", size="tiny")
    _randomise(model)
    theirs = authors.build_like(model)
    authors.load_from_project(theirs, model)
    x, mask = bb.tokens(model, 20, 2, device="cpu")
    mask[0, 12:] = 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb.run_tokens(model, x, mask), theirs.run_tokens(x, mask), rtol=0, atol=1e-5)
        model.transformer.blocks[1].attn.peft_apt.w2.mul_(2.0)
        assert (bb.run_tokens(model, x, mask) - theirs.run_tokens(x, mask)).abs().max() > 1e-3
