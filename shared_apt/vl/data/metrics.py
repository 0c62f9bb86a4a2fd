"""Metrics of upstream ViLT / METER (vilt/gadgets/my_metrics.py, docs/backbones.md, ViLT), torch only.

The metric classes are ``nn.Module`` s whose running sums are non-persistent buffers: they move with the model
(``.to(device)``), never appear in a state_dict (upstream checkpoints have no metric keys), and :meth:`compute`
sums them over every process with ``torch.distributed.all_reduce`` when a process group is initialised, so under DDP
every rank returns the corpus-level value (equal to the one-process value when every sample is seen exactly once, see
``UnpaddedDistributedSampler``). ``compute`` does not change the local state; call ``reset`` at epoch end. Call
``compute`` on every rank (it is a collective). The value is a 0-d float tensor that ``LightningModule.log`` accepts.

:func:`compute_recall_at_k` is upstream's ``compute_irtr_recall`` ranking step on a finished score matrix.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn

from .vqa import vqa_scores


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over all processes (a copy; `t` itself is untouched). Identity without a process group."""
    t = t.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class _SumMetric(nn.Module):
    """A numerator / denominator pair kept in float64 buffers."""

    def __init__(self):
        super().__init__()
        self.register_buffer("numerator", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("denominator", torch.zeros((), dtype=torch.float64), persistent=False)

    def reset(self) -> None:
        self.numerator.zero_()
        self.denominator.zero_()

    def _add(self, numerator: torch.Tensor, denominator: Union[int, float, torch.Tensor]) -> None:
        self.numerator += numerator.detach().to(self.numerator.device, torch.float64)
        self.denominator += torch.as_tensor(denominator, dtype=torch.float64, device=self.denominator.device)

    def compute(self) -> torch.Tensor:
        both = _all_reduce_sum(torch.stack([self.numerator, self.denominator]))
        if both[1] == 0:
            return torch.tensor(0.0, device=both.device)
        return (both[0] / both[1]).float()

    def forward(self, *args, **kwargs):
        return self.update(*args, **kwargs)


class Accuracy(_SumMetric):
    """Upstream ``Accuracy``: argmax of logits vs target, positions with target -100 ignored; correct / total."""

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        preds = logits.detach().argmax(dim=-1)
        target = target.detach().to(preds.device)
        keep = target != -100
        preds, target = preds[keep], target[keep]
        if target.numel() == 0:
            return
        if preds.shape != target.shape:
            raise ValueError(f"Accuracy: predictions {tuple(preds.shape)} and targets {tuple(target.shape)} differ")
        self._add((preds == target).sum(), target.numel())


class Scalar(_SumMetric):
    """Upstream ``Scalar``: mean of the values passed to ``update`` (one per call, e.g. a batch loss)."""

    def update(self, value: Union[float, torch.Tensor]) -> None:
        value = torch.as_tensor(value).detach()
        if value.numel() != 1:
            raise ValueError(f"Scalar.update expects one value, got shape {tuple(value.shape)}")
        self._add(value.reshape(()), 1)


class VQAScore(_SumMetric):
    """Upstream ``VQAScore``: sum over questions of the soft score of the argmax class, divided by #questions."""

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        scores = vqa_scores(logits.detach().float(), target.detach().float().to(logits.device))
        self._add(scores.sum(), scores.numel())


def compute_recall_at_k(
    scores: torch.Tensor,
    text_to_image: Union[Sequence[int], torch.Tensor],
    image_ids: Optional[Union[Sequence[int], torch.Tensor]] = None,
    ks: Sequence[int] = (1, 5, 10),
) -> Dict[str, float]:
    """Image/text retrieval recall from a full score matrix `scores` [n_images, n_texts] (docs/backbones.md, ViLT).

    `text_to_image[j]` is the image id of caption j; `image_ids[i]` the id of row i (default 0..n_images-1).
    TR@k (image -> text): for each image, hit if any of its k best captions belongs to it; mean over images.
    IR@k (text -> image): for each caption, hit if its image is among its k best images; mean over captions.
    A k larger than the candidate count is clamped to it (upstream's ``topk`` would fail). Returns
    ``{"ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5", "tr_r10"}`` (names follow `ks`).
    """
    scores = torch.as_tensor(scores).detach().float().cpu()
    if scores.dim() != 2:
        raise ValueError(f"scores must be [n_images, n_texts], got shape {tuple(scores.shape)}")
    n_images, n_texts = scores.shape
    tiids = torch.as_tensor(text_to_image, dtype=torch.long).cpu()
    if tiids.shape != (n_texts,):
        raise ValueError(f"text_to_image has shape {tuple(tiids.shape)}, expected ({n_texts},)")
    iids = torch.arange(n_images) if image_ids is None else torch.as_tensor(image_ids, dtype=torch.long).cpu()
    if iids.shape != (n_images,):
        raise ValueError(f"image_ids has shape {tuple(iids.shape)}, expected ({n_images},)")
    out: Dict[str, float] = {}
    for k in ks:
        top_texts = scores.topk(min(k, n_texts), dim=1).indices          # [n_images, k]
        tr_hit = (tiids[top_texts] == iids.unsqueeze(1)).any(dim=1)
        top_images = scores.topk(min(k, n_images), dim=0).indices        # [k, n_texts]
        ir_hit = (iids[top_images] == tiids.unsqueeze(0)).any(dim=0)
        out[f"ir_r{k}"] = ir_hit.float().mean().item()
        out[f"tr_r{k}"] = tr_hit.float().mean().item()
    return {key: out[key] for key in sorted(out, key=lambda s: (s[:2], int(s[4:])))}
