"""MinMaxResize sizes worked out by hand from docs/backbones.md, ViLT, RandAugment ops on the installed numpy, METER's clip
transforms (docs/backbones.md, METER), and the registry."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from shared_apt.vl.data.transforms import (CLIP_MEAN, CLIP_STD, RANDAUG_OPS, MinMaxResize, RandAugment,
                                           ResizeShorter, TransformKeyError, image_mode_for_keys, keys_to_transforms,
                                           min_max_size)


def shorter_side_size(w, h, size):
    return ResizeShorter(size)(Image.new("RGB", (w, h))).size


@pytest.mark.parametrize("w, h, expected", [
    # 500x375: s = 384/375, h < w -> (384, 512); 512 <= 639; already multiples of 32
    (500, 375, (512, 384)),
    # 640x480: s = 0.8 -> (384, 512)
    (640, 480, (512, 384)),
    # 375x500 portrait: w = 384, h = 512
    (375, 500, (384, 512)),
    # 1000x300: (384, 1280) -> longer 639: x 639/1280 -> (191.7, 639) -> round (192, 639) -> floor32 (192, 608)
    (1000, 300, (608, 192)),
    # 400x100 (NLVR v1): (384, 1536) -> (159.75, 639) -> (160, 639) -> (160, 608)
    (400, 100, (608, 160)),
    # square 100x100: (384, 384)
    (100, 100, (384, 384)),
    # 612x459 (COCO-like): s = 0.8366 -> w = 512.0 -> (384, 512)
    (612, 459, (512, 384)),
    # 500x333: s = 1.1532 -> w = 576.58 -> round 577 -> floor32 576
    (500, 333, (576, 384)),
])
def test_min_max_size_hand_examples(w, h, expected):
    assert min_max_size(w, h, 384, int(1333 / 800 * 384)) == expected


def test_min_max_resize_resizes_the_pil_image():
    out = MinMaxResize(384, 639)(Image.new("RGB", (500, 375)))
    assert out.size == (512, 384)


def test_pixelbert_values_and_shape():
    (tr,) = keys_to_transforms(["pixelbert"], size=384)
    img = Image.new("RGB", (500, 375), (255, 0, 128))
    x = tr(img)
    assert x.shape == (3, 384, 512) and x.dtype == torch.float32
    assert torch.allclose(x[:, 10, 10], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-6)


def test_every_randaug_op_runs_on_installed_numpy():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    assert len(RANDAUG_OPS) == 14
    for op, low, high in RANDAUG_OPS:
        v = RandAugment.magnitude(9, low, high)
        out = op(img, v)
        assert out.size == img.size and out.mode == "RGB", op.__name__
    assert RandAugment.magnitude(9, 0, 30) == pytest.approx(9.0)
    assert RandAugment.magnitude(9, 0.1, 1.9) == pytest.approx(0.64)
    assert RandAugment.magnitude(9, 0, 4) == pytest.approx(1.2)


def test_solarize_add_adds_33_then_solarizes_at_128():
    from shared_apt.vl.data.transforms import solarize_add

    img = Image.fromarray(np.array([[[10, 100, 240]]], dtype=np.uint8))
    # 10 + 33 = 43 (< 128 kept); 100 + 33 = 133 -> 255 - 133 = 122; 240 + 33 -> 255 -> 0
    assert np.asarray(solarize_add(img, 33.0)).tolist() == [[[43, 122, 0]]]


def test_randaug_is_random_choices_of_two_ops_then_applied_in_order():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    for seed in range(20):
        random.seed(seed)
        out = np.asarray(RandAugment(2, 9)(img))
        random.seed(seed)
        expected = img
        for op, low, high in random.choices(list(RANDAUG_OPS), k=2):
            expected = op(expected, (9 / 30) * (high - low) + low)
        assert np.array_equal(out, np.asarray(expected)), seed


def test_clip_transform_resize_crop_and_normalisation():
    tr, = keys_to_transforms(["clip"], size=64)
    img = Image.new("RGBA", (200, 100), (255, 255, 255, 255))
    x = tr(img)
    assert x.shape == (3, 64, 64)
    expected = (torch.ones(3) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(x[:, 5, 5], expected, atol=1e-5)
    assert shorter_side_size(200, 100, 64) == (128, 64)
    assert shorter_side_size(100, 333, 64) == (64, 213)   # int(64 * 333 / 100) = 213


def test_clip_centre_crop_keeps_the_middle():
    # 3 vertical bands: red | green | blue, each 100 wide; after resize to 64 x 192 the crop is the green band
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, :100, 0] = 255
    arr[:, 100:200, 1] = 255
    arr[:, 200:, 2] = 255
    tr, = keys_to_transforms(["clip"], size=64)
    x = tr(Image.fromarray(arr).convert("RGBA"))
    rgb = x * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)
    assert torch.allclose(rgb[:, 32, 32], torch.tensor([0.0, 1.0, 0.0]), atol=1e-2)


@pytest.mark.parametrize("key", ["pixelbert_randaug", "clip_randaug", "imagenet_randaug", "vit_randaug",
                                 "imagenet", "vit"])
def test_every_registered_transform_produces_a_tensor(key):
    random.seed(0)
    tr, = keys_to_transforms([key], size=64)
    mode = image_mode_for_keys([key])
    for _ in range(5):
        x = tr(Image.new("RGB", (90, 70), (20, 140, 220)).convert(mode))
        assert x.dim() == 3 and x.shape[0] == 3


def test_registry_errors_and_image_mode():
    with pytest.raises(TransformKeyError, match="unknown transform key.*'nope'"):
        keys_to_transforms(["pixelbert", "nope"], 64)
    with pytest.raises(TransformKeyError):
        keys_to_transforms([], 64)
    assert image_mode_for_keys(["pixelbert"]) == "RGB"
    assert image_mode_for_keys(["clip_randaug"]) == "RGBA"


def test_clip_transform_equals_a_transcription_of_meters_chain():
    """METER's torchvision chain written out with PIL and numpy: bicubic shorter-side resize (int(size x long /
    short)), centre crop at int(round((side - size) / 2)), RGB, /255, (x - mean) / std."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (90, 130, 4), dtype=np.uint8), "RGBA")
    tr, = keys_to_transforms(["clip"], size=48)
    w = int(48 * 130 / 90)
    resized = img.resize((w, 48), resample=Image.BICUBIC)
    left = int(round((w - 48) / 2.0))
    crop = resized.crop((left, 0, left + 48, 48)).convert("RGB")
    arr = np.asarray(crop, dtype=np.float32) / 255.0
    want = (arr - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    got = tr(img)
    assert torch.allclose(got, torch.from_numpy(want).permute(2, 0, 1), atol=1e-6)
