"""METER's objectives where they differ from ViLT's (docs/backbones.md, METER); every other task uses
shared_apt.vl.training.objectives unchanged."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from shared_apt.vl.training.objectives import itm_pairs


def compute_itm(pl_module, batch) -> Dict[str, torch.Tensor]:
    """Image-text matching without ViLT's word-patch-alignment term: pairs drawn as upstream (``itm_pairs``); cross-entropy on itm_score(cls_feats).
    ``itm_wpa_loss`` is an exact 0 placeholder so the shared metric bookkeeping (which logs it) works unchanged."""
    batch, itm_labels = itm_pairs(batch)
    infer = pl_module.infer(batch, mask_text=False, mask_image=False)
    itm_logits = pl_module.itm_score(infer["cls_feats"])
    itm_loss = F.cross_entropy(itm_logits.float(), itm_labels.long())
    return {"itm_loss": itm_loss, "itm_wpa_loss": itm_loss.new_zeros(()), "itm_logits": itm_logits,
            "itm_labels": itm_labels.long()}


OBJECTIVES = {"itm": compute_itm}
