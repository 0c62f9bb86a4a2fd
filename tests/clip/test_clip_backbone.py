"""load_clip and tokenize against open_clip itself (built and tokenised independently)."""
import pytest
import torch

from clip_tiny import TINY, open_clip_reference, tiny_clip


def test_state_dict_round_trip_and_features_equal_open_clip(tmp_path):
    import clip_apt

    ref = open_clip_reference(1)
    sd = ref.state_dict()
    path = tmp_path / "tiny_clip.pt"
    torch.save({k: v.half() for k, v in sd.items()}, path)  # OpenAI stores fp16
    ref16 = open_clip_reference(1)
    ref16.load_state_dict({k: v.half().float() for k, v in sd.items()})
    model = clip_apt.load_clip(str(path), text_heads=4, vision_heads=4)
    assert set(model.state_dict()) == set(sd)
    g = clip_apt.infer_geometry(sd, text_heads=4, vision_heads=4)
    assert g == TINY
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    ids = clip_apt.tokenize(["a photo of a dog.", "Hello, World!", "zyzzyva quokka"])
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), ref16.encode_image(images), atol=1e-5)
        assert torch.allclose(model.encode_text(ids), ref16.encode_text(ids), atol=1e-5)
        assert torch.equal(model.logit_scale, ref16.logit_scale)
        per_image, per_text = model(images, ids)  # OpenAI's forward: the logits both ways
        want_image, want_text = ref16.get_logits(images, ids)
        assert torch.allclose(per_image, want_image, atol=1e-4) and torch.allclose(per_text, want_text, atol=1e-4)
        # classify = exp(scale) * cosine of the hard prompts
        names = ["dog", "cat"]
        logits = model.classify(images, names, "a photo of a {}.")
        t = ref16.encode_text(clip_apt.tokenize(["a photo of a dog.", "a photo of a cat."]), normalize=True)
        want = ref16.logit_scale.exp() * ref16.encode_image(images, normalize=True) @ t.t()
        assert torch.allclose(logits, want, atol=1e-4)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_archive_loads(tmp_path):
    import clip_apt

    ref = open_clip_reference(2)
    ids = clip_apt.tokenize(["a red circle.", "Two DOGS!"])
    archive = torch.jit.trace_module(ref, {"encode_text": (ids,)}, check_trace=False)
    torch.jit.save(archive, str(tmp_path / "tiny.pt"))
    model = clip_apt.load_clip(str(tmp_path / "tiny.pt"), text_heads=4, vision_heads=4)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(ids), ref.encode_text(ids), atol=1e-5)


def test_load_clip_errors(tmp_path):
    import clip_apt

    with pytest.raises(FileNotFoundError, match="not found"):
        clip_apt.load_clip(str(tmp_path / "absent.pt"))
    sd = open_clip_reference().state_dict()
    with pytest.raises(ValueError, match="vision_heads"):
        clip_apt.infer_geometry({**sd, "visual.conv1.weight": torch.zeros(40, 3, 8, 8)})  # 40 // 64 = 0 heads
    with pytest.raises(KeyError, match="missing"):
        clip_apt.load_clip({k: v for k, v in sd.items() if k != "ln_final.weight"}, 4, 4)


def test_tokenize_equals_open_clip_and_openai_ids():
    import open_clip

    import clip_apt

    texts = ["a photo of a dog.", "A Photo Of A DOG!!", "It's the 2nd-best café... isn't it?",
             "Pneumonoultramicroscopicsilicovolcanoconiosis & zyzzyva", "  spaced\tout \n text  ", "X X X X", "sks",
             "&amp; html &lt;escaped&gt;"]
    ours = clip_apt.tokenize(texts)
    assert ours.shape == (len(texts), 77) and ours.dtype == torch.long
    assert torch.equal(ours, open_clip.get_tokenizer("ViT-B-16")(texts))
    # ids printed by openai/CLIP
    assert ours[0, :8].tolist() == [49406, 320, 1125, 539, 320, 1929, 269, 49407] and ours[0, 8:].eq(0).all()
    assert ours[5, 1:6].tolist() == [343, 343, 343, 343, 49407]
    assert ours[6, 1:3].tolist() == [48136, 49407]
    with pytest.raises(ValueError, match="context length"):
        clip_apt.tokenize(["word " * 80])
    cut = clip_apt.tokenize(["word " * 80], truncate=True)
    assert cut[0, -1].item() == 49407 and cut[0, 0].item() == 49406
