"""METER's objectives where they differ from ViLT's (docs/backbones.md, METER); every other task uses
shared_apt.vl.training.objectives unchanged."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


def compute_itm(pl_module, batch) -> Dict[str, torch.Tensor]:
    """Image-text matching without ViLT's word-patch-alignment term: floor(B/2) label-1 entries and the rest label 0,
    randomly permuted; label-0 samples take their image from ``false_image_0``; cross-entropy on itm_score(cls_feats).
    ``itm_wpa_loss`` is an exact 0 placeholder so the shared metric bookkeeping (which logs it) works unchanged."""
    n = batch["text_ids"].shape[0]
    pos_len = n // 2
    device = batch["text_ids"].device
    itm_labels = torch.cat([torch.ones(pos_len), torch.zeros(n - pos_len)]).to(device)
    itm_labels = itm_labels[torch.randperm(itm_labels.size(0)).to(device)]
    if "false_image_0" not in batch:
        raise KeyError("ITM needs negative images: the batch has no 'false_image_0' (set draw_false_image >= 1)")
    itm_images = [
        torch.stack([ti if itm_labels[i] == 1 else fi for i, (ti, fi) in enumerate(zip(bti, bfi))])
        for bti, bfi in zip(batch["image"], batch["false_image_0"])
    ]
    batch = dict(batch)
    batch["image"] = itm_images
    infer = pl_module.infer(batch, mask_text=False, mask_image=False)
    itm_logits = pl_module.itm_score(infer["cls_feats"])
    itm_loss = F.cross_entropy(itm_logits.float(), itm_labels.long())
    return {"itm_loss": itm_loss, "itm_wpa_loss": itm_loss.new_zeros(()), "itm_logits": itm_logits,
            "itm_labels": itm_labels.long()}


OBJECTIVES = {"itm": compute_itm}
