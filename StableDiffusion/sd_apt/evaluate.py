"""DreamBooth's metrics (Ruiz et al., CVPR 2023) on a folder of samples written by ``sd_apt.sample``:

* DINO (subject fidelity): mean over every pair (generated g, real r) of cos(DINO(g), DINO(r)), DINO = the CLS
  embedding of a self-supervised ViT-S/16 (a transformers ViT folder, e.g. a local copy of facebook/dino-vits16);
* CLIP-I: the same pairwise mean with CLIP image embeddings;
* CLIP-T (prompt fidelity): mean over generated images of cos(CLIP_text(prompt), CLIP_image(g)). Whether the rare
  identifier is removed from the prompt first is an option (``--clip-t-drop-identifier``), recorded with the result.

Encoders come from local folders only (transformers ``from_pretrained`` with ``local_files_only``).

    python -m sd_apt.evaluate --samples runs/apt/samples --real photos/ --dino DINO_FOLDER --clip CLIP_FOLDER \
        --identifier sks --out runs/apt/metrics.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

from .dreambooth import list_images, load_rgb
from .prompts import drop_identifier


def pairwise_mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over all (i, j) of cos(a_i, b_j)."""
    return (F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).t()).mean().item()


def matched_mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over i of cos(a_i, b_i)."""
    if a.shape != b.shape:
        raise ValueError(f"matched cosine needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


class DinoEncoder:
    """CLS output (after the final LayerNorm) of a transformers ViT (DINO ViT-S/16 layout)."""

    def __init__(self, folder: str, device: str = "cpu"):
        from transformers import AutoImageProcessor, AutoModel

        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.device = device

    @torch.no_grad()
    def images(self, images: list) -> torch.Tensor:
        x = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        return self.model(pixel_values=x).last_hidden_state[:, 0].float().cpu()


class ClipEncoder:
    """transformers ``CLIPModel`` image and text embeddings (projected)."""

    def __init__(self, folder: str, device: str = "cpu"):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.device = device

    @staticmethod
    def _tensor(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def images(self, images: list) -> torch.Tensor:
        x = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        return self._tensor(self.model.get_image_features(pixel_values=x)).float().cpu()

    @torch.no_grad()
    def texts(self, texts: list) -> torch.Tensor:
        t = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt",
                           max_length=self.model.config.text_config.max_position_embeddings)
        return self._tensor(self.model.get_text_features(input_ids=t["input_ids"].to(self.device),
                                                         attention_mask=t["attention_mask"].to(self.device))
                            ).float().cpu()


def read_samples(folder: str) -> tuple:
    index = os.path.join(folder, "samples.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(f"{index!r} not found: not a folder written by sd_apt.sample")
    with open(index) as f:
        meta = json.load(f)
    return [load_rgb(os.path.join(folder, e["file"])) for e in meta["images"]], [e["prompt"] for e in meta["images"]]


def dreambooth_metrics(generated: list, prompts: list, real: list, dino: DinoEncoder | None,
                       clip: ClipEncoder | None, identifier: str = "sks", clip_t_drop_identifier: bool = False) -> dict:
    """DINO, CLIP-I (pairwise means over generated x real) and CLIP-T (mean over generated images)."""
    out = {"num_generated": len(generated), "num_real": len(real), "clip_t_drop_identifier": clip_t_drop_identifier}
    if dino is not None:
        out["dino"] = pairwise_mean_cosine(dino.images(generated), dino.images(real))
    if clip is not None:
        gen = clip.images(generated)
        out["clip_i"] = pairwise_mean_cosine(gen, clip.images(real))
        texts = [drop_identifier(p, identifier) if clip_t_drop_identifier else p for p in prompts]
        out["clip_t"] = matched_mean_cosine(clip.texts(texts), gen)
    return out


def render(rows: dict) -> str:
    """Markdown table: one row per named result."""
    lines = ["| run | DINO | CLIP-I | CLIP-T |", "|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" if k in m else "-" for k in ("dino", "clip_i", "clip_t"))
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sd_apt.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", required=True, nargs="+", help="sample folder(s) from sd_apt.sample")
    ap.add_argument("--real", required=True, help="folder of the subject's real images")
    ap.add_argument("--dino", default="", help="local transformers DINO ViT folder ('' = skip DINO)")
    ap.add_argument("--clip", default="", help="local transformers CLIP folder ('' = skip CLIP-I / CLIP-T)")
    ap.add_argument("--identifier", default="sks")
    ap.add_argument("--clip-t-drop-identifier", action="store_true",
                    help="remove the identifier from the prompt before CLIP-T")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    a = ap.parse_args(argv)
    if not a.dino and not a.clip:
        ap.error("give --dino and/or --clip (local encoder folders)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dino = DinoEncoder(a.dino, device) if a.dino else None
    clip = ClipEncoder(a.clip, device) if a.clip else None
    real = [load_rgb(p) for p in list_images(a.real)]
    if not real:
        raise SystemExit(f"no images in --real {a.real!r}")
    rows = {}
    for folder in a.samples:
        generated, prompts = read_samples(folder)
        rows[folder] = dreambooth_metrics(generated, prompts, real, dino, clip, a.identifier,
                                          a.clip_t_drop_identifier)
        rows[folder].update(dino_encoder=a.dino, clip_encoder=a.clip)
    print(render(rows))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
