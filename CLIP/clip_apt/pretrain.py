"""Contrastive pre-training of a tiny CLIP on captioned images (CLIP's symmetric InfoNCE loss, learnable
temperature), saved as an OpenAI-format state dict that ``load_clip`` reads back. The demo trains on its world's
``captions.json``; the real-data bench (``clip_apt.bench``) on (image path, caption) pairs of a dataset's train
split."""
from __future__ import annotations

import json
import os
import time
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from shared_apt.peft.atomic import atomic_write

from .datasets.folder import MEAN, STD
from .modules.clip_model import build_clip
from .modules.tokenizer import tokenize

DEMO_GEOMETRY = dict(embed_dim=64, image_size=32, patch_size=8, vision_width=64, vision_layers=2, vision_heads=4,
                     context_length=24, vocab_size=49408, text_width=64, text_layers=2, text_heads=4)


class CaptionDataset(Dataset):
    """(image, caption tokens) pairs, each distinct image decoded once. ``crop_scale`` None: resize + centre crop to
    ``image_size``; (lo, hi): images kept at twice the size and a random crop of that area fraction is taken each
    time (bicubic resize to ``image_size``)."""

    def __init__(self, pairs: Sequence[Tuple[str, str]], image_size: int, context_length: int,
                 crop_scale: Tuple[float, float] = None):
        from PIL import Image
        from torchvision import transforms as T

        keep = image_size if crop_scale is None else 2 * image_size
        # kept as uint8 (a quarter of the memory); ToTensor's k / 255 is restored exactly in __getitem__
        load = T.Compose([T.Resize(keep, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(keep),
                          T.PILToTensor()])
        index: dict = {}
        images = []
        for path, _ in pairs:
            if path not in index:
                index[path] = len(images)
                with Image.open(path) as im:
                    images.append(load(im.convert("RGB")))
        self.images = torch.stack(images)
        self.image_of = torch.tensor([index[p] for p, _ in pairs])
        self.normalize = T.Normalize(MEAN, STD)
        self.crop = None if crop_scale is None else T.RandomResizedCrop(
            image_size, scale=tuple(crop_scale), interpolation=T.InterpolationMode.BICUBIC, antialias=True)
        self.tokens = tokenize([c for _, c in pairs], context_length, truncate=True)

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        image = self.images[self.image_of[i]].float().div(255)
        if self.crop is not None:
            image = self.crop(image).clamp(0, 1)
        return self.normalize(image), self.tokens[i]


def pretrain_tiny_clip(world: str, out_path: str, geometry: dict = DEMO_GEOMETRY, epochs: int = 30,
                       batch_size: int = 64, lr: float = 1e-3, seed: int = 0, log=print) -> str:
    """Train on ``<world>/captions.json`` (``[[path under images/, caption], ...]``) and write ``out_path`` (skipped
    if it exists). Returns the path."""
    if os.path.isfile(out_path):
        return out_path
    with open(os.path.join(world, "captions.json")) as f:
        pairs = [(os.path.join(world, "images", p), c) for p, c in json.load(f)]
    return pretrain_on_pairs(pairs, out_path, geometry, epochs, batch_size, lr, seed, log)


def pretrain_on_pairs(pairs: Sequence[Tuple[str, str]], out_path: str, geometry: dict = DEMO_GEOMETRY,
                      epochs: int = 30, batch_size: int = 64, lr: float = 1e-3, seed: int = 0, log=print,
                      crop_scale: Tuple[float, float] = None, steps: int = None) -> str:
    """Pre-train a CLIP of ``geometry`` from scratch on (image path, caption) pairs for ``epochs`` passes, or, with
    ``steps``, for the whole number of passes closest to that many optimiser steps (at least one pass): AdamW,
    one-cycle lr, batch ``min(batch_size, len(pairs))``, last partial batch dropped. Writes ``out_path`` (skipped if
    it exists). Returns the path."""
    if os.path.isfile(out_path):
        return out_path
    if len(pairs) < 2:
        raise ValueError(f"contrastive pre-training needs at least 2 captioned images; got {len(pairs)}")
    torch.manual_seed(seed)
    data = CaptionDataset(pairs, geometry["image_size"], geometry["context_length"], crop_scale)
    model = build_clip(geometry).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    loader = DataLoader(data, batch_size=min(batch_size, len(data)), shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    if steps is not None:
        epochs = max(1, round(steps / len(loader)))
    total = epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.1)
    t0 = time.time()
    for epoch in range(epochs):
        run = 0.0
        for images, tokens in loader:
            img = model.encode_image(images, normalize=True)
            txt = model.encode_text(tokens, normalize=True)
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
            target = torch.arange(len(logits))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            run += loss.item()
        if log and ((epoch + 1) % max(5, epochs // 6) == 0 or epoch == epochs - 1):
            log(f"[pretrain] epoch {epoch + 1}/{epochs} loss {run / len(loader):.3f} ({time.time() - t0:.0f}s)")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    atomic_write(out_path, lambda tmp: torch.save(state, tmp))
    return out_path
