"""Every CLIP method: exact counts at ViT-B/16 shapes, equivalences with hand-written paths at tiny size, training
touches only the method's parameters, tuned weights round-trip."""
import copy

import pytest
import torch
import torch.nn.functional as F

import shared_apt
from clip_tiny import tiny_clip

# (method, options) -> trainable parameters at ViT-B/16 (UPT paper / CoOp / CoCoOp / APT paper accounting)
VIT_B16_COUNTS = [
    ("zeroshot", {}, 0), ("coop", {"n_ctx": 4}, 2048), ("coop", {}, 8192), ("coop", {"ctx_init": "a photo of a"}, 2048),
    ("coop", {"class_specific": True, "n_cls": 1000}, 8_192_000), ("cocoop", {}, 35_360),
    ("vpt_shallow", {}, 3072), ("vpt_deep", {}, 36_864), ("joint", {}, 38_912), ("upt", {}, 1_976_064),
    ("apt", {"num_prompts": 4, "rank": 2}, 49_164),
    ("upt_deep", {}, 12 * 8 * 512 + 1_050_624 + 2 * 1024 + 2 * 262_656 + 393_984),
    ("shared_prompt", {}, 4 * 512 + 393_984), ("mlp_prompt", {}, 8 * 512 + 2 * 262_656 + 393_984),
    ("lora", {"rank": 4}, 12 * 2 * (512 * 4 + 4 * 512)),
]
METHODS = ["coop", "cocoop", "vpt_shallow", "vpt_deep", "upt", "upt_deep", "joint", "shared_prompt", "mlp_prompt",
           "apt", "lora", "adapter"]
NAMES = ["dog", "cat", "sea_turtle"]


def test_trainable_counts_at_vit_b16_on_meta():
    from clip_apt import VIT_B16, build_clip

    for method, opts, want in VIT_B16_COUNTS:
        with torch.device("meta"):
            model = build_clip(VIT_B16)
        shared_apt.apply(model, method, **opts)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert shared_apt.updated_parameter_count(model) == trainable == want, (method, opts)


def _hard_logits(model, images, template):
    return model.classify(images, NAMES, template)


@pytest.mark.parametrize("position,template", [("end", "a photo of a {}."), ("front", "{} a photo of a."),
                                               ("middle", "a photo {} of a.")])
def test_coop_from_words_equals_the_hard_prompt(position, template):
    model, _ = tiny_clip()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = _hard_logits(model, images, template)
        shared_apt.apply(model, "coop", ctx_init="a photo of a", class_token_position=position)
        got = model.classify(images, NAMES, "unused {}")
    assert torch.allclose(got, want, atol=1e-5)


def test_cocoop_is_coop_plus_meta_net_per_image():
    model, _ = tiny_clip()
    images = torch.randn(2, 3, 32, 32)
    shared_apt.apply(model, "cocoop")
    mod = shared_apt.tuning_modules(model)[0]
    with torch.no_grad():
        mod.meta_net.linear2.bias.normal_()
        got = model.classify(images, NAMES)
        img = model.encode_image(images, normalize=True)
        for b in range(2):  # per image: words "a photo of a" + pi(x) in the 4 context slots
            ids = clip_tokenize([f"a photo of a {n.replace('_', ' ')}." for n in NAMES])
            emb = model.token_embedding(ids)
            pi = mod.meta_net.linear2(torch.relu(mod.meta_net.linear1(img[b])))
            emb[:, 1:5] = emb[:, 1:5] + pi
            txt = model.encode_text_embeddings(emb, ids.argmax(-1), normalize=True)
            assert torch.allclose(got[b], model.logit_scale.exp() * img[b] @ txt.t(), atol=1e-4)


def clip_tokenize(texts):
    import clip_apt

    return clip_apt.tokenize(texts)


def _image_tokens(model, images):
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
    return x + v.positional_embedding


def _pool(model, x):
    return model.visual.ln_post(x[:, 0]) @ model.visual.proj


def test_vpt_shallow_and_deep_match_hand_written_encoders():
    images = torch.randn(2, 3, 32, 32)
    for deep in (False, True):
        model, _ = tiny_clip()
        plain, _ = tiny_clip()  # same weights, no hooks: the hand-written path
        shared_apt.apply(model, "vpt_deep" if deep else "vpt_shallow", num_prompts=3)
        p = shared_apt.tuning_modules(model)[0].prompts.detach()
        v = plain.visual
        with torch.no_grad():
            x = _image_tokens(plain, images)
            if deep:  # after ln_pre, replaced before every later block
                x = v.ln_pre(x)
                x = torch.cat([x[:, :1], p[0].expand(2, -1, -1), x[:, 1:]], dim=1)
                for i, blk in enumerate(v.transformer.resblocks):
                    if i:
                        x = torch.cat([x[:, :1], p[i].expand(2, -1, -1), x[:, 4:]], dim=1)
                    x = blk(x)
            else:  # before ln_pre, no position embedding
                x = v.ln_pre(torch.cat([x[:, :1], p.expand(2, -1, -1), x[:, 1:]], dim=1))
                x = v.transformer(x)
            assert torch.allclose(model.encode_image(images), _pool(plain, x), atol=1e-5)


def _released_upt_layer(mod, u):
    """yuhangzang/UPT trainers/unified.py at tiny size: uni_ctx (1, 2n, d) into a sequence-first MultiheadAttention
    (eval mode: no dropout)."""
    g = mod.generator
    attn = torch.nn.MultiheadAttention(u.shape[-1], 1)  # batch_first=False, as released
    attn.load_state_dict(g.self_attn.state_dict())
    x = u  # (1, 8, d): read as sequence length 1, batch 8
    x = g.norm1(x + attn(x, x, x)[0])
    return x + g.linear2(torch.relu(g.linear1(g.norm2(x))))


def test_upt_token_mixing_false_is_the_released_layer_and_true_mixes_tokens():
    model, _ = tiny_clip()
    plain, _ = tiny_clip()  # same weights, no hooks: the hand-written path
    shared_apt.apply(model, "upt", token_mixing=False)
    mod = shared_apt.tuning_modules(model)[0]
    model.eval()
    with torch.no_grad():
        mod.uni_ctx.normal_()
        ours = mod.generate()
        assert torch.allclose(ours, _released_upt_layer(mod, mod.uni_ctx), atol=1e-5)
        changed = mod.uni_ctx.clone()
        changed[0, 0] += 1.0
        assert torch.allclose(mod.generator(changed)[0, 1:], ours[0, 1:], atol=1e-6)  # tokens never interact
        mixing = copy.deepcopy(mod.generator)
        mixing.token_mixing = True
        assert not torch.allclose(mixing(changed)[0, 1:], mixing(mod.uni_ctx)[0, 1:], atol=1e-4)
        # text part fills the 4 context slots of "a photo of a <class>."; visual part = Linear(text part 2)
        images = torch.randn(2, 3, 32, 32)
        logits = model.classify(images, NAMES)
        ids = clip_tokenize([f"a photo of a {n.replace('_', ' ')}." for n in NAMES])
        emb = plain.token_embedding(ids)
        emb[:, 1:5] = ours[0, :4]
        txt = plain.encode_text_embeddings(emb, ids.argmax(-1), normalize=True)
        vis = mod.mlp(ours[0, 4:])
        x = _image_tokens(plain, images)
        x = plain.visual.ln_pre(torch.cat([x[:, :1], vis.expand(2, -1, -1), x[:, 1:]], dim=1))
        img = F.normalize(_pool(plain, plain.visual.transformer(x)), dim=-1)
        assert torch.allclose(logits, model.logit_scale.exp() * img @ txt.t(), atol=1e-4)


@pytest.fixture(scope="module")
def demo_batch(tmp_path_factory):
    """Four training images of the CLIP demo world (CoOp layout) and the world's class names."""
    from clip_apt.datasets import ClassificationDataset, classnames_of, read_split, test_transform
    from clip_apt.datasets.demo_world import make_world

    world = make_world(str(tmp_path_factory.mktemp("clip_world")), per_class=(1, 0, 0), pretrain_per_class=0,
                       image_size=32)
    items = read_split(world)["train"]
    data = ClassificationDataset(items[:4], test_transform(32))
    images = torch.stack([data[i][0] for i in range(4)])
    return images, torch.tensor([data[i][1] for i in range(4)]), classnames_of(items)


@pytest.mark.parametrize("method", METHODS)
def test_training_changes_only_the_method_parameters_and_weights_round_trip(method, tmp_path, demo_batch):
    opts = {"apt": {"num_prompts": 4, "rank": 2}, "lora": {"rank": 2}, "adapter": {"bottleneck": 8}}.get(method, {})
    model, _ = tiny_clip()
    shared_apt.apply(model, method, **opts)
    if method in ("apt", "lora"):  # W2 / B start at zero: give the update a direction first
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad and p.abs().sum() == 0:
                    p.normal_(std=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train = shared_apt.trainable_parameters(model)
    assert train and set(train) == set(shared_apt.peft.api.method_parameter_names(model))
    opt = torch.optim.SGD(train.values(), lr=0.5)
    model.train()
    images, labels, names = demo_batch
    for _ in range(2):
        loss = F.cross_entropy(model.classify(images, names), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(train), sorted(changed - set(train))
    shared_apt.save_tuned(model, str(tmp_path / "tuned"))
    fresh, _ = tiny_clip()
    shared_apt.load_tuned(fresh, str(tmp_path / "tuned"))
    for n, p in shared_apt.trainable_parameters(fresh).items():
        assert torch.equal(p, dict(model.named_parameters())[n]), n
    model.eval(), fresh.eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.classify(images, ["a", "b"]), fresh.classify(images, ["a", "b"]))


def test_context_transfers_to_new_classes_but_class_specific_refuses():
    model, _ = tiny_clip()
    shared_apt.apply(model, "coop", n_ctx=2)
    assert model.classify(torch.randn(1, 3, 32, 32), ["new_a", "new_b", "new_c", "new_d"]).shape == (1, 4)
    model, _ = tiny_clip()
    shared_apt.apply(model, "coop", class_specific=True, n_cls=3, n_ctx=2)
    with pytest.raises(ValueError, match="class-specific"):
        model.classify(torch.randn(1, 3, 32, 32), ["a", "b"])
    with pytest.raises(shared_apt.ConfigError, match="n_cls"):
        shared_apt.apply(tiny_clip()[0], "coop", class_specific=True)
    with pytest.raises(shared_apt.ConfigError, match="unknown peft option.*coop"):
        shared_apt.apply(tiny_clip()[0], "coop", n_prompts=3)


def test_upt_deep_replaces_text_and_visual_slots_before_every_layer():
    model, _ = tiny_clip()
    plain, _ = tiny_clip()
    shared_apt.apply(model, "upt_deep")
    mod = shared_apt.tuning_modules(model)[0]
    model.eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        mod.uni_ctx.normal_()
        u = mod.generate()  # [layers, 8, d]
        ids = clip_tokenize([f"a photo of a {n.replace('_', ' ')}." for n in NAMES])
        x = plain.token_embedding(ids)
        x[:, 1:5] = u[0, :4]
        x = x + plain.positional_embedding
        for i, blk in enumerate(plain.transformer.resblocks):
            if i:
                x[:, 1:5] = u[i, :4]
            x = blk(x, attn_mask=plain.attn_mask)
        txt = F.normalize(plain.ln_final(x)[torch.arange(3), ids.argmax(-1)] @ plain.text_projection, dim=-1)
        vis = mod.mlp(u[:, 4:])
        v = plain.visual
        y = v.ln_pre(_image_tokens(plain, images))
        y = torch.cat([y[:, :1], vis[0].expand(2, -1, -1), y[:, 1:]], dim=1)
        for i, blk in enumerate(v.transformer.resblocks):
            if i:
                y = torch.cat([y[:, :1], vis[i].expand(2, -1, -1), y[:, 5:]], dim=1)
            y = blk(y)
        img = F.normalize(_pool(plain, y), dim=-1)
        assert torch.allclose(model.classify(images, NAMES), model.logit_scale.exp() * img @ txt.t(), atol=1e-4)
        # hard prompts through the same text encoder are untouched by the deep text slots
        assert torch.allclose(model.encode_text(ids), plain.encode_text(ids), atol=1e-6)
