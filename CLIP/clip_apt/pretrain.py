"""Contrastive pre-training of a tiny CLIP on the demo world's captions (CLIP's symmetric InfoNCE loss, learnable
temperature), saved as an OpenAI-format state dict that ``load_clip`` reads back."""
from __future__ import annotations

import json
import os
import time

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
    def __init__(self, world: str, image_size: int, context_length: int):
        from PIL import Image
        from torchvision import transforms as T

        with open(os.path.join(world, "captions.json")) as f:
            pairs = json.load(f)
        tf = T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
                        T.ToTensor(), T.Normalize(MEAN, STD)])
        self.images = torch.stack([tf(Image.open(os.path.join(world, "images", p)).convert("RGB"))
                                   for p, _ in pairs])
        self.tokens = tokenize([c for _, c in pairs], context_length)

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return self.images[i], self.tokens[i]


def pretrain_tiny_clip(world: str, out_path: str, geometry: dict = DEMO_GEOMETRY, epochs: int = 30,
                       batch_size: int = 64, lr: float = 1e-3, seed: int = 0, log=print) -> str:
    """Train and write ``out_path`` (skipped if it exists). Returns the path."""
    if os.path.isfile(out_path):
        return out_path
    torch.manual_seed(seed)
    data = CaptionDataset(world, geometry["image_size"], geometry["context_length"])
    model = build_clip(geometry).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
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
        if log and (epoch % 5 == 4 or epoch == epochs - 1):
            log(f"[pretrain] epoch {epoch + 1}/{epochs} loss {run / len(loader):.3f} ({time.time() - t0:.0f}s)")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    atomic_write(out_path, lambda tmp: torch.save(state, tmp))
    return out_path
