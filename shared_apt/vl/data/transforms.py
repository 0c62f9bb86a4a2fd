"""Image transforms of upstream ViLT (vilt/transforms, docs/backbones.md, ViLT) and METER (meter/transforms, docs/backbones.md, METER).

Every transform maps a PIL image to a float tensor [3, H, W]. Registry keys (config ``train_transform_keys`` /
``val_transform_keys``), built by :func:`keys_to_transforms`:

* ``pixelbert``: MinMaxResize(shorter = size, longer = int(1333 / 800 x size)) -> ToTensor -> Normalize(0.5, 0.5).
* ``pixelbert_randaug``: RandAugment(2, 9) on the original image, then ``pixelbert``.
* ``clip``: resize shorter side to size (bicubic) -> centre crop size x size -> RGB -> ToTensor -> CLIP mean/std.
* ``clip_randaug``: RGB -> RandAugment(2, 9) -> RGBA -> ``clip``.
* ``imagenet`` / ``imagenet_randaug``: as ``clip`` with ImageNet mean/std (METER's Swin variants).
* ``vit`` / ``vit_randaug``: as ``clip`` with the 0.5 / 0.5 normalisation.

The random choices use Python's global ``random`` module exactly as upstream (``random.choices``, ``random.random``),
so seeding Python's RNG reproduces upstream's draws. Upstream's SolarizeAdd used ``np.int`` (removed in numpy 1.24);
here it uses int64, which gives identical pixels.
"""
from __future__ import annotations

import random
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from torchvision import transforms

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TransformKeyError(KeyError):
    """A transform key in the config is not in the registry."""


# ----------------------------------------------------------------------------------------------------------------
# Basic steps
# ----------------------------------------------------------------------------------------------------------------


# Upstream composes torchvision transforms (ToTensor, Normalize, Compose; METER also Resize and CenterCrop): they are
# used as they are. Hand-written below only what upstream wrote itself: MinMaxResize and RandAugment.
to_tensor = transforms.ToTensor()
Normalize = transforms.Normalize
Compose = transforms.Compose


class ConvertMode:
    """``lambda image: image.convert(mode)`` of METER's transforms, as a picklable object."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert(self.mode)


def min_max_size(width: int, height: int, shorter: int = 384, longer: int = 639) -> Tuple[int, int]:
    """Output (width, height) of ViLT's MinMaxResize for an input of `width` x `height`.

    Scale the shorter side to `shorter`; if the longer side then exceeds `longer`, scale both down so that it equals
    `longer`; round each side (int(x + 0.5)); floor each to a multiple of 32.
    """
    scale = shorter / min(width, height)
    if height < width:
        new_h, new_w = shorter, scale * width
    else:
        new_h, new_w = scale * height, shorter
    if max(new_h, new_w) > longer:
        scale = longer / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    new_h, new_w = int(new_h + 0.5), int(new_w + 0.5)
    new_h, new_w = new_h // 32 * 32, new_w // 32 * 32
    return new_w, new_h


class MinMaxResize:
    """ViLT's MinMaxResize (docs/backbones.md, ViLT): aspect-preserving bicubic resize, sides multiples of 32, no crop."""

    def __init__(self, shorter: int = 800, longer: int = 1333):
        self.min = shorter
        self.max = longer

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = min_max_size(image.size[0], image.size[1], self.min, self.max)
        if w < 32 or h < 32:
            raise ValueError(f"MinMaxResize({self.min}, {self.max}) of a {image.size[0]}x{image.size[1]} image gives "
                             f"{w}x{h}: a side below one 32-pixel patch")
        return image.resize((w, h), resample=Image.BICUBIC)


def ResizeShorter(size: int) -> transforms.Resize:
    """METER's ``Resize(size, interpolation=BICUBIC)``: shorter side -> size, longer side int(size x long / short)."""
    return transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC)


CenterCrop = transforms.CenterCrop


# ----------------------------------------------------------------------------------------------------------------
# RandAugment (upstream vilt/transforms/randaug.py: 14 ops, n = 2, m = 9). Hand-written: torchvision's RandAugment
# has another op set, magnitude scale and random generator, so it would not draw upstream's augmentations.
# ----------------------------------------------------------------------------------------------------------------


def _random_sign(v: float) -> float:
    return -v if random.random() > 0.5 else v


def shear_x(img: Image.Image, v: float) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, (1, _random_sign(v), 0, 0, 1, 0))


def shear_y(img: Image.Image, v: float) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, _random_sign(v), 1, 0))


def translate_x_abs(img: Image.Image, v: float) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, (1, 0, _random_sign(v), 0, 1, 0))


def translate_y_abs(img: Image.Image, v: float) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, _random_sign(v)))


def rotate(img: Image.Image, v: float) -> Image.Image:
    return img.rotate(_random_sign(v))


def auto_contrast(img: Image.Image, _v: float) -> Image.Image:
    return ImageOps.autocontrast(img)


def equalize(img: Image.Image, _v: float) -> Image.Image:
    return ImageOps.equalize(img)


def solarize(img: Image.Image, v: float) -> Image.Image:
    return ImageOps.solarize(img, v)


def solarize_add(img: Image.Image, addition: float = 0, threshold: int = 128) -> Image.Image:
    """Add `addition` to every channel, clip to [0, 255], then solarize at 128 (upstream's np.int -> int64)."""
    array = np.asarray(img).astype(np.int64) + addition
    array = np.clip(array, 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(array), threshold)


def posterize(img: Image.Image, v: float) -> Image.Image:
    return ImageOps.posterize(img, max(1, int(v)))


def color(img: Image.Image, v: float) -> Image.Image:
    return ImageEnhance.Color(img).enhance(v)


def contrast(img: Image.Image, v: float) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(v)


def brightness(img: Image.Image, v: float) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(v)


def sharpness(img: Image.Image, v: float) -> Image.Image:
    return ImageEnhance.Sharpness(img).enhance(v)


# (op, min, max) in upstream's order; magnitude v = m / 30 x (max - min) + min
RANDAUG_OPS: Tuple[Tuple[Callable, float, float], ...] = (
    (auto_contrast, 0, 1),
    (equalize, 0, 1),
    (rotate, 0, 30),
    (posterize, 0, 4),
    (solarize, 0, 256),
    (solarize_add, 0, 110),
    (color, 0.1, 1.9),
    (contrast, 0.1, 1.9),
    (brightness, 0.1, 1.9),
    (sharpness, 0.1, 1.9),
    (shear_x, 0.0, 0.3),
    (shear_y, 0.0, 0.3),
    (translate_x_abs, 0.0, 100),
    (translate_y_abs, 0.0, 100),
)


class RandAugment:
    """Upstream RandAugment(n, m): `n` ops drawn with replacement (``random.choices``), each at magnitude m / 30."""

    def __init__(self, n: int = 2, m: int = 9):
        self.n = n
        self.m = m
        self.augment_list = list(RANDAUG_OPS)

    @staticmethod
    def magnitude(m: float, low: float, high: float) -> float:
        return (float(m) / 30) * float(high - low) + low

    def __call__(self, img: Image.Image) -> Image.Image:
        for op, low, high in random.choices(self.augment_list, k=self.n):
            img = op(img, self.magnitude(self.m, low, high))
        return img


# ----------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------


def pixelbert_transform(size: int = 800) -> Compose:
    """ViLT ``pixelbert_transform``: MinMaxResize(size, int(1333 / 800 x size)) -> ToTensor -> Normalize(0.5)."""
    longer = int((1333 / 800) * size)
    return Compose([MinMaxResize(shorter=size, longer=longer), to_tensor, Normalize(INCEPTION_MEAN, INCEPTION_STD)])


def pixelbert_transform_randaug(size: int = 800) -> Compose:
    """ViLT ``pixelbert_transform_randaug``: RandAugment(2, 9) inserted before the MinMaxResize."""
    trs = pixelbert_transform(size)
    trs.transforms.insert(0, RandAugment(2, 9))
    return trs


def _square_transform(size: int, mean, std) -> Compose:
    return Compose([ResizeShorter(size), CenterCrop(size), ConvertMode("RGB"), to_tensor, Normalize(mean, std)])


def _with_randaug(trs: Compose) -> Compose:
    """METER's *_randaug: RGB -> RandAugment(2, 9) -> RGBA, then the square chain."""
    trs.transforms[0:0] = [ConvertMode("RGB"), RandAugment(2, 9), ConvertMode("RGBA")]
    return trs


def clip_transform(size: int) -> Compose:
    """METER ``clip_transform``: bicubic shorter-side resize, centre crop, RGB, ToTensor, CLIP mean/std."""
    return _square_transform(size, CLIP_MEAN, CLIP_STD)


def clip_transform_randaug(size: int) -> Compose:
    return _with_randaug(clip_transform(size))


def imagenet_transform(size: int) -> Compose:
    return _square_transform(size, IMAGENET_MEAN, IMAGENET_STD)


def imagenet_transform_randaug(size: int) -> Compose:
    return _with_randaug(imagenet_transform(size))


def vit_transform(size: int) -> Compose:
    return _square_transform(size, INCEPTION_MEAN, INCEPTION_STD)


def vit_transform_randaug(size: int) -> Compose:
    return _with_randaug(vit_transform(size))


TRANSFORMS: Dict[str, Callable[[int], Compose]] = {
    "pixelbert": pixelbert_transform,
    "pixelbert_randaug": pixelbert_transform_randaug,
    "clip": clip_transform,
    "clip_randaug": clip_transform_randaug,
    "imagenet": imagenet_transform,
    "imagenet_randaug": imagenet_transform_randaug,
    "vit": vit_transform,
    "vit_randaug": vit_transform_randaug,
}


def keys_to_transforms(keys: Sequence[str], size: int = 224) -> List[Compose]:
    """One transform per key (upstream ``keys_to_transforms``); unknown keys raise naming the known ones."""
    if isinstance(keys, str) or not keys:
        raise TransformKeyError(f"transform keys must be a non-empty list of names, got {keys!r}; "
                                f"known: {sorted(TRANSFORMS)}")
    unknown = [k for k in keys if k not in TRANSFORMS]
    if unknown:
        raise TransformKeyError(f"unknown transform key(s) {unknown}; known: {sorted(TRANSFORMS)}")
    return [TRANSFORMS[k](size) for k in keys]


def image_mode_for_keys(keys: Sequence[str]) -> str:
    """Mode the dataset decodes images to: METER opens "RGBA" when any key contains "clip", ViLT always "RGB"."""
    return "RGBA" if any("clip" in k for k in keys) else "RGB"
