"""Checkpoints saved by the APT authors' code (DoubtedSteam/APT) load through ``load_path`` + ``test_only`` and through
``shared_apt.load_official``, and give the authors' model's outputs.

Truth here is an independent transcription of the authors' forward passes at tiny size, written from their method
placement (not from this project's method code): it reads every tuned tensor straight from the official state dict
(official key names, nn.Linear [out, in] orientation, their snapshot-style sizes, which differ from this project's
defaults) and runs the blocks functionally. The backbone pieces no method touches (ViLT's patch embedding, METER's
text/image encoders) are taken from the loaded model."""
from __future__ import annotations

import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import shared_apt
from shared_apt.vl.official import OfficialCheckpointError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "meter"))
from tiny import vilt_batch, vilt_config  # noqa: E402
from test_meter import tiny_batch as meter_batch, tiny_config as meter_config  # noqa: E402

from vilt.modules.vilt_module import ViLTransformerSS  # noqa: E402
from meter.modules.meter_module import METERTransformerSS  # noqa: E402

METHODS = ["classifier", "apt", "lora", "adapter", "scaled_pa", "deep_prompt", "shallow_prompt"]
# Sizes unlike the project defaults (as the authors' snapshot: ViLT APT p=50, LoRA r=204 / 27, PA b=204).
SIZES = {"apt_p": 5, "apt_r": 3, "lora_r": 7, "adapter_b": 6, "pa_b": 9, "deep_p": 4, "shallow_p": 3}


def lin(x, sd, key):
    return F.linear(x, sd[f"{key}.weight"], sd.get(f"{key}.bias"))


def ln(x, sd, key, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{key}.weight"], sd[f"{key}.bias"], eps)


def official_adapter(z, sd, key):
    """adapter(z) = z + up(ReLU(down(z))) (their prompt.py Adapter)."""
    return z + lin(torch.relu(lin(z, sd, f"{key}.down_sampler")), sd, f"{key}.up_sampler")


def official_pa(x, sd, key):
    """4.0 * up(ReLU(down(LN_a(x)))), LN_a eps 1e-5."""
    h = ln(x, sd, f"{key}.adapter_layer_norm_before", 1e-5)
    return 4.0 * lin(torch.relu(lin(h, sd, f"{key}.down_proj")), sd, f"{key}.up_proj")


def official_apt(out, x, sd, key):
    """(O + (A P') * detach(max_j A)) * e^s with A = ReLU(X (P' + mm(P'))^T), mm = Linear(d->r) then Linear(r->d)."""
    p = sd[f"{key}.mm_tokens"]
    keys = p + F.linear(F.linear(p, sd[f"{key}.mm.0.weight"]), sd[f"{key}.mm.1.weight"])
    a = torch.relu(x @ keys.t())
    return (out + (a @ p) * a.amax(-1, keepdim=True)) * torch.exp(sd[f"{key}.scale"])


def random_method_tensors(backbone: str, method: str, H: int, layers: int, g: torch.Generator) -> dict:
    """Official key names and shapes (Linear weights [out, in]); every tensor non-trivial."""
    r = lambda *s, std=0.3: torch.randn(*s, generator=g) * std  # noqa: E731
    sd = {"token4classifier": r(1, 1, H, std=1.0)}
    if backbone == "vilt":
        sites = [(f"transformer.blocks.{i}.attn", f"transformer.blocks.{i}.adapter0", f"transformer.blocks.{i}.adapter1")
                 for i in range(layers)]
        apt_lora = [(s, s) for s, _, _ in sites]
        adapters = [a for _, a0, a1 in sites for a in (a0, a1)]
    else:
        names = [f"cross_modal_{s}_layers.{i}.{a}" for s in ("text", "image") for i in range(layers)
                 for a in ("attention", "crossattention")]
        apt_lora = [(f"{n}.output", f"{n}.self") for n in names]
        adapters = [f"{n}.output.adapter" for n in names] + [f"cross_modal_{s}_layers.{i}.output.adapter"
                                                             for s in ("text", "image") for i in range(layers)]
    if method == "apt":
        p, rk = SIZES["apt_p"], SIZES["apt_r"]
        for out, _ in apt_lora:
            k = f"{out}.APT"
            sd.update({f"{k}.mm_tokens": r(p, H, std=0.5), f"{k}.mm.0.weight": r(rk, H),
                       f"{k}.mm.1.weight": r(H, rk), f"{k}.scale": r(1, std=0.2)})
    elif method == "lora":
        for _, s in apt_lora:
            for t in ("q", "v"):
                sd[f"{s}.{t}_lora.lora_A"] = r(H, SIZES["lora_r"])
                sd[f"{s}.{t}_lora.lora_B"] = r(SIZES["lora_r"], H)
    elif method == "adapter":
        b = SIZES["adapter_b"]
        for a in adapters:
            sd.update({f"{a}.down_sampler.weight": r(b, H), f"{a}.down_sampler.bias": r(b),
                       f"{a}.up_sampler.weight": r(H, b), f"{a}.up_sampler.bias": r(H)})
    elif method == "scaled_pa":
        b = SIZES["pa_b"]
        for out, _ in apt_lora:
            k = f"{out}.PA"
            sd.update({f"{k}.adapter_layer_norm_before.weight": 1 + r(H), f"{k}.adapter_layer_norm_before.bias": r(H),
                       f"{k}.down_proj.weight": r(b, H), f"{k}.down_proj.bias": r(b),
                       f"{k}.up_proj.weight": r(H, b), f"{k}.up_proj.bias": r(H)})
    elif method in ("deep_prompt", "shallow_prompt"):
        n, p = (layers, SIZES["deep_p"]) if method == "deep_prompt" else (1, SIZES["shallow_p"])
        keys = ["prompt"] if backbone == "vilt" else ["prompts.0", "prompts.1"]
        sd.update({k: r(n, 1, p, H, std=1.0) for k in keys})
    return sd


# ----------------------------------------------------------------------------------------------------------------
# ViLT: their vision_transformer_<m>.py blocks


def vilt_reference(model, sd, batch, method):
    cfg = model.hparams.config
    H, heads, layers = cfg["hidden_size"], cfg["num_heads"], cfg["num_layers"]
    dh = H // heads
    text_ids, text_masks = batch["text_ids"], batch["text_masks"]
    text = model.text_embeddings(text_ids)
    text = torch.cat([sd["token4classifier"].expand(text.shape[0], -1, -1), text[:, 1:]], 1)
    img, img_masks, _, _ = model.transformer.visual_embed(batch["image"][0], max_image_len=cfg["max_image_len"],
                                                          mask_it=False)
    tt = sd["token_type_embeddings.weight"]
    x = torch.cat([text + tt[0], img + tt[1]], 1)
    mask = torch.cat([text_masks, img_masks], 1).bool()
    B, n = x.shape[:2]
    if method == "shallow_prompt":  # appended once, mask 1
        x = torch.cat([x, sd["prompt"][0, 0].expand(B, -1, -1)], 1)
        mask = torch.cat([mask, mask.new_ones(B, sd["prompt"].shape[2])], 1)
    for i in range(layers):
        b = f"transformer.blocks.{i}"
        h = x
        m = mask
        p = 0
        if method == "deep_prompt":  # appended before the block, through LN1 and qkv, query rows dropped
            prm = sd["prompt"][i, 0].expand(B, -1, -1)
            p = prm.shape[1]
            h = torch.cat([x, prm], 1)
            m = torch.cat([mask, mask.new_ones(B, p)], 1)
        res = ln(h, sd, f"{b}.norm1", 1e-6)
        L = res.shape[1]
        qkv = lin(res, sd, f"{b}.attn.qkv").reshape(B, L, 3, heads, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if method == "lora":  # per head after the split, from the Attention input, no scaling
            a = f"{b}.attn"
            q = q + (res @ sd[f"{a}.q_lora.lora_A"] @ sd[f"{a}.q_lora.lora_B"]).reshape(B, L, heads, dh).transpose(1, 2)
            v = v + (res @ sd[f"{a}.v_lora.lora_A"] @ sd[f"{a}.v_lora.lora_B"]).reshape(B, L, heads, dh).transpose(1, 2)
        if p:
            q = q[:, :, :-p]
        att = (q @ k.transpose(-2, -1)) * dh ** -0.5
        att = att.masked_fill(~m[:, None, None, :], float("-inf")).softmax(-1)
        o = lin((att @ v).transpose(1, 2).reshape(B, q.shape[2], H), sd, f"{b}.attn.proj")
        xr = res[:, :o.shape[1]]
        if method == "apt":
            o = official_apt(o, xr, sd, f"{b}.attn.APT")
        if method == "scaled_pa":
            o = o + official_pa(xr, sd, f"{b}.attn.PA")
        if method == "adapter":
            o = official_adapter(o, sd, f"{b}.adapter0")
        x = x + o
        f = lin(F.gelu(lin(ln(x, sd, f"{b}.norm2", 1e-6), sd, f"{b}.mlp.fc1")), sd, f"{b}.mlp.fc2")
        if method == "adapter":
            f = official_adapter(f, sd, f"{b}.adapter1")
        x = x + f
    x = ln(x, sd, "transformer.norm", 1e-6)
    cls = torch.tanh(lin(x[:, 0], sd, "pooler.dense"))
    return {"cls_feats": cls, "text_feats": x[:, :text_ids.shape[1]]}


# ----------------------------------------------------------------------------------------------------------------
# METER: their bert_model_<m>.py co-attention layers and meter_module_prompt*.py


def meter_attention(sd, key, x, kv, kv_mask, method, heads, eps, prompts=None):
    B, n, H = x.shape
    dh = H // heads
    s = f"{key}.self"
    kv_in, mask = kv, kv_mask
    if prompts is not None:  # prepended raw to the other stream's keys/values, mask 1
        kv_in = torch.cat([prompts.expand(B, -1, -1), kv], 1)
        mask = torch.cat([mask.new_ones(B, prompts.shape[0]), kv_mask], 1)
    q, k, v = lin(x, sd, f"{s}.query"), lin(kv_in, sd, f"{s}.key"), lin(kv_in, sd, f"{s}.value")
    if method == "lora":  # q from the query stream, v from the value input, before the head split
        q = q + x @ sd[f"{s}.q_lora.lora_A"] @ sd[f"{s}.q_lora.lora_B"]
        v = v + kv_in @ sd[f"{s}.v_lora.lora_A"] @ sd[f"{s}.v_lora.lora_B"]
    heads_of = lambda t: t.view(B, t.shape[1], heads, dh).transpose(1, 2)  # noqa: E731
    scores = heads_of(q) @ heads_of(k).transpose(-1, -2) / math.sqrt(dh)
    scores = scores + (1.0 - mask[:, None, None, :].float()) * -10000.0
    ctx = (scores.softmax(-1) @ heads_of(v)).transpose(1, 2).reshape(B, n, H)
    o = lin(ctx, sd, f"{key}.output.dense")
    if method == "apt":
        o = official_apt(o, x, sd, f"{key}.output.APT")
    if method == "adapter":
        o = official_adapter(o, sd, f"{key}.output.adapter")
    out = ln(o + x, sd, f"{key}.output.LayerNorm", eps)
    if method == "scaled_pa":  # after the post-attention LayerNorm
        out = out + official_pa(x, sd, f"{key}.output.PA")
    return out


def meter_reference(model, sd, batch, method):
    cfg = model.hparams.config
    heads, layers, eps = cfg["num_heads"], cfg["num_top_layer"], 1e-12
    text_ids, text_masks = batch["text_ids"], batch["text_masks"]
    text = model.cross_modal_text_transform(model.encode_text(text_ids, text_masks))
    text = torch.cat([sd["token4classifier"].expand(text.shape[0], -1, -1), text[:, 1:]], 1)
    image = model.cross_modal_image_transform(model.vit_model(batch["image"][0]))
    tt = sd["token_type_embeddings.weight"]
    x, y = text + tt[0], image + tt[1]
    xm, ym = text_masks, torch.ones(image.shape[:2], dtype=torch.long)
    B = x.shape[0]
    if method == "shallow_prompt":  # prompts.0 before the text stream, prompts.1 before the image stream
        pt, pi = sd["prompts.0"][0, 0], sd["prompts.1"][0, 0]
        x, xm = torch.cat([pt.expand(B, -1, -1), x], 1), torch.cat([xm.new_ones(B, pt.shape[0]), xm], 1)
        y, ym = torch.cat([pi.expand(B, -1, -1), y], 1), torch.cat([ym.new_ones(B, pi.shape[0]), ym], 1)

    def layer(key, h, other, hm, om, prompts):
        a = meter_attention(sd, f"{key}.attention", h, h, hm, method, heads, eps)
        c = meter_attention(sd, f"{key}.crossattention", a, other, om, method, heads, eps, prompts)
        f = lin(F.gelu(lin(c, sd, f"{key}.intermediate.dense")), sd, f"{key}.output.dense")
        if method == "adapter":
            f = official_adapter(f, sd, f"{key}.output.adapter")
        return ln(f + c, sd, f"{key}.output.LayerNorm", eps)

    for i in range(layers):
        deep = method == "deep_prompt"
        x1 = layer(f"cross_modal_text_layers.{i}", x, y, xm, ym, sd["prompts.1"][i, 0] if deep else None)
        y1 = layer(f"cross_modal_image_layers.{i}", y, x, ym, xm, sd["prompts.0"][i, 0] if deep else None)
        x, y = x1, y1
    cls = torch.cat([torch.tanh(lin(x[:, 0], sd, "cross_modal_text_pooler.dense")),
                     torch.tanh(lin(y[:, 0], sd, "cross_modal_image_pooler.dense"))], -1)
    p = sd["prompts.0"].shape[2] if method == "shallow_prompt" else 0
    return {"cls_feats": cls, "text_feats": x[:, p:]}


# ----------------------------------------------------------------------------------------------------------------

BACKBONES = {
    "vilt": dict(cls=ViLTransformerSS, config=vilt_config, batch=lambda cfg: vilt_batch(cfg),
                 reference=vilt_reference, layers=lambda c: c["num_layers"]),
    "meter": dict(cls=METERTransformerSS, config=meter_config, batch=lambda cfg: meter_batch(),
                  reference=meter_reference, layers=lambda c: c["num_top_layer"]),
}


def official_checkpoint(backbone, method, path, seed=0):
    """A full official state dict: the backbone (randomly initialised, upstream names) + method tensors."""
    b = BACKBONES[backbone]
    cfg = b["config"]()
    torch.manual_seed(seed)
    base = b["cls"](cfg)
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 1)
    sd.update(random_method_tensors(backbone, method, cfg["hidden_size"], b["layers"](cfg), g))
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 10}, path)
    return sd


def outputs(model, batch):
    model.eval()
    with torch.no_grad():
        out = model.infer(batch)
    return {"cls_feats": out["cls_feats"], "text_feats": out["text_feats"]}


def check_close(got, want):
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=2e-5, rtol=0, msg=lambda m: f"{k}: {m}")


CASES = [pytest.param(bk, m, id=f"{bk}-{m}") for bk in BACKBONES for m in METHODS]


@pytest.mark.parametrize("backbone,method", CASES)
def test_official_checkpoint_gives_official_outputs(backbone, method, tmp_path):
    """``peft=<method> load_path=<file> test_only=True`` is all the config says; sizes and variant come from the
    file. The same file through shared_apt.load_official into a plain model gives the same outputs; exporting
    gives back the official tensors."""
    b = BACKBONES[backbone]
    path = str(tmp_path / "official.ckpt")
    sd = official_checkpoint(backbone, method, path)
    model = b["cls"](b["config"](peft=method, load_path=path, test_only=True))
    batch = b["batch"](model.hparams.config)
    got = outputs(model, batch)
    with torch.no_grad():
        want = b["reference"](model, sd, batch, method)
    check_close(got, want)

    torch.manual_seed(5)
    plain = b["cls"](b["config"]())
    shared_apt.load_official(plain, path)
    assert shared_apt.peft_config(plain).method == method
    check_close(outputs(plain, batch), want)

    back = str(tmp_path / "exported.ckpt")
    shared_apt.export_official(model, back)
    exported = torch.load(back, weights_only=True)["state_dict"]
    method_keys = set(random_method_tensors(backbone, method, 8, b["layers"](model.hparams.config),
                                            torch.Generator().manual_seed(0)))
    assert method_keys <= set(exported)
    for k in method_keys:
        assert torch.equal(exported[k], sd[k]), k
    assert not any(k.startswith("class_token") or ".peft_" in k for k in exported)


def test_sizes_and_official_variant_read_from_the_file(tmp_path):
    """METER's official deep prompts: cross-attention only, sizes from the shapes; APT scale frozen."""
    path = str(tmp_path / "deep.ckpt")
    official_checkpoint("meter", "deep_prompt", path)
    model = METERTransformerSS(meter_config(peft="deep_prompt", load_path=path, test_only=True))
    cfg = shared_apt.peft_config(model)
    assert (cfg.num_prompts, cfg.deep_prompt_sites) == (SIZES["deep_p"], "cross")
    assert shared_apt.updated_parameter_count(model) == 2 * 2 * SIZES["deep_p"] * 64
    path = str(tmp_path / "apt.ckpt")
    official_checkpoint("meter", "apt", path)
    model = METERTransformerSS(meter_config(peft="apt", load_path=path, test_only=True))
    cfg = shared_apt.peft_config(model)
    assert (cfg.num_prompts, cfg.apt_rank, cfg.apt_train_scale) == (SIZES["apt_p"], SIZES["apt_r"], False)
    assert not any(n.endswith("log_scale") for n in shared_apt.trainable_parameters(model))


def test_mismatches_name_keys_and_shapes(tmp_path):
    path = str(tmp_path / "apt.ckpt")
    sd = official_checkpoint("vilt", "apt", path)
    # another method configured than the file holds
    with pytest.raises(OfficialCheckpointError, match=r"'apt'.*peft='lora'"):
        ViLTransformerSS(vilt_config(peft="lora", load_path=path, test_only=True))
    # an explicit option contradicting the file names both values
    with pytest.raises(OfficialCheckpointError, match=r"num_prompts: configured 200, checkpoint 5"):
        ViLTransformerSS(vilt_config(peft="apt", num_prompts=200, load_path=path, test_only=True))
    # a tensor of another shape in one layer
    bad = dict(sd)
    bad["transformer.blocks.1.attn.APT.mm.1.weight"] = torch.zeros(32, 2)
    torch.save({"state_dict": bad}, path)
    with pytest.raises(OfficialCheckpointError, match=r"transformer\.blocks\.1\.attn\.APT\.mm\.1\.weight: shape "
                                                      r"\(32, 2\), the model expects \(32, 3\)"):
        ViLTransformerSS(vilt_config(peft="apt", load_path=path, test_only=True))
    # a stray method key (a block the model does not have) and a missing one
    bad = dict(sd)
    bad["transformer.blocks.7.attn.APT.mm_tokens"] = bad.pop("transformer.blocks.1.attn.APT.mm_tokens")
    torch.save({"state_dict": bad}, path)
    with pytest.raises(OfficialCheckpointError) as e:
        ViLTransformerSS(vilt_config(peft="apt", load_path=path, test_only=True))
    assert "missing transformer.blocks.1.attn.APT.mm_tokens" in str(e.value)
    assert "transformer.blocks.7.attn.APT.mm_tokens (5, 32)" in str(e.value)
    # the default peft=full refuses a file of the authors' method code and says what to set
    torch.save({"state_dict": sd}, path)
    with pytest.raises(OfficialCheckpointError, match="set peft=apt"):
        ViLTransformerSS(vilt_config(load_path=path, test_only=True))
