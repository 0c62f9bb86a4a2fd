"""Training objectives of upstream ViLT (vilt/modules/objectives.py; docs/backbones.md, ViLT), written against the module
interface only (``pl_module.infer`` and the heads), so METER's module runs them unchanged.

Every ``compute_*`` returns a dict whose keys containing "loss" are summed by the training step. Metric bookkeeping
(running epoch metrics and per-step logging, docs/backbones.md, ViLT) is done by :func:`update_metrics`, called by the module after
each objective; the objectives themselves are pure functions of the batch.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------------------------
# MLM


def compute_mlm(pl_module, batch) -> Dict[str, torch.Tensor]:
    """Masked language modelling: infer on ``text_ids_mlm``; CE over the vocabulary, ignore index -100."""
    infer = pl_module.infer(batch, mask_text=True, mask_image=False)
    mlm_logits = pl_module.mlm_score(infer["text_feats"])
    mlm_labels = infer["text_labels"]
    mlm_loss = F.cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]).float(), mlm_labels.reshape(-1),
                               ignore_index=-100)
    return {"mlm_loss": mlm_loss, "mlm_logits": mlm_logits, "mlm_labels": mlm_labels, "mlm_ids": infer["text_ids"]}


# ---------------------------------------------------------------------------------------------------------------
# ITM + word-patch alignment (IPOT)


def cost_matrix_cosine(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - cosine similarity between every row of x [B, M, D] and y [B, N, D] → [B, M, N]."""
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"cost_matrix_cosine: incompatible shapes {tuple(x.shape)} and {tuple(y.shape)}")
    x_norm = F.normalize(x, p=2, dim=-1, eps=eps)
    y_norm = F.normalize(y, p=2, dim=-1, eps=eps)
    return 1 - x_norm.matmul(y_norm.transpose(1, 2))


def trace(x: torch.Tensor) -> torch.Tensor:
    """Batched trace of square matrices [B, n, n] → [B]."""
    b, m, n = x.shape
    if m != n:
        raise ValueError(f"trace of a non-square batch {tuple(x.shape)}")
    return x.diagonal(dim1=1, dim2=2).sum(dim=-1)


@torch.no_grad()
def ipot(C, x_len, x_pad, y_len, y_pad, joint_pad, beta: float, iteration: int, k: int) -> torch.Tensor:
    """Inexact proximal point optimal transport (upstream ``ipot``). C [B, M, N] cost (M text, N image tokens);
    returns the transport plan T [B, N, M] (masked entries 0)."""
    b, m, n = C.shape
    sigma = torch.ones(b, m, dtype=C.dtype, device=C.device) / x_len.unsqueeze(1)
    T = torch.ones(b, n, m, dtype=C.dtype, device=C.device)
    A = torch.exp(-C.transpose(1, 2) / beta)
    sigma.masked_fill_(x_pad, 0)
    joint_pad = joint_pad.transpose(1, 2)
    T.masked_fill_(joint_pad, 0)
    A.masked_fill_(joint_pad, 0)
    x_len = x_len.unsqueeze(1).unsqueeze(2)
    y_len = y_len.unsqueeze(1).unsqueeze(2)
    x_mask = (x_pad.to(C.dtype) * 1e4).unsqueeze(1)
    y_mask = (y_pad.to(C.dtype) * 1e4).unsqueeze(1)
    delta = None
    for _ in range(iteration):
        Q = A * T
        sigma = sigma.view(b, m, 1)
        for _ in range(k):
            delta = 1 / (y_len * Q.matmul(sigma).view(b, 1, n) + y_mask)
            sigma = 1 / (x_len * delta.matmul(Q) + x_mask)
        T = delta.view(b, n, 1) * Q * sigma
    T.masked_fill_(joint_pad, 0)
    return T


def wpa_distance(text_feats, image_feats, text_masks, image_masks, beta: float = 0.5, iteration: int = 50,
                 k: int = 1, skip_second_image_token: bool = False) -> torch.Tensor:
    """Word-patch alignment distance per sample (docs/backbones.md, ViLT), computed in fp32: trace(C · T)."""
    txt_mask, img_mask = text_masks.bool().clone(), image_masks.bool().clone()
    lengths = txt_mask.sum(dim=1)
    rows = torch.arange(txt_mask.shape[0], device=txt_mask.device)
    txt_mask[rows, (lengths - 1).clamp(min=0)] = False   # the last valid text token ([SEP])
    txt_mask[:, 0] = False                                # text [CLS]
    img_mask[:, 0] = False                                # image [CLS]
    if skip_second_image_token:                           # DeiT distillation token (upstream "deit" in vit)
        img_mask[:, 1] = False
    txt_pad, img_pad = ~txt_mask, ~img_mask
    with torch.autocast(device_type=text_feats.device.type, enabled=False):
        cost = cost_matrix_cosine(text_feats.float(), image_feats.float())
        joint_pad = txt_pad.unsqueeze(-1) | img_pad.unsqueeze(-2)
        cost = cost.masked_fill(joint_pad, 0)
        txt_len = (txt_pad.size(1) - txt_pad.sum(dim=1)).to(cost.dtype)
        img_len = (img_pad.size(1) - img_pad.sum(dim=1)).to(cost.dtype)
        T = ipot(cost.detach(), txt_len, txt_pad, img_len, img_pad, joint_pad, beta, iteration, k)
        return trace(cost.matmul(T.detach()))


def itm_pairs(batch) -> tuple:
    """Upstream's ITM pairing (ViLT and METER alike): floor(B/2) label-1 entries and the rest label 0, randomly
    permuted; label-0 samples take their image from ``false_image_0``. Returns (batch with the mixed images,
    labels)."""
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
    return batch, itm_labels


def compute_itm_wpa(pl_module, batch) -> Dict[str, torch.Tensor]:
    """Image-text matching with word-patch alignment: floor(B/2) positives (true image), the rest negatives
    (``false_image_0``), labels randomly permuted; ITM CE + 0.1 x (Σ dist_pos - Σ dist_neg) / B."""
    batch, itm_labels = itm_pairs(batch)
    infer = pl_module.infer(batch, mask_text=False, mask_image=False)
    deit = "deit" in str(pl_module.hparams.config.get("vit", ""))
    distance = wpa_distance(infer["text_feats"], infer["image_feats"], infer["text_masks"], infer["image_masks"],
                            skip_second_image_token=deit)
    dist_pos = distance.masked_select(itm_labels == 1)
    dist_neg = distance.masked_select(itm_labels == 0)
    ot_loss = (dist_pos.sum() - dist_neg.sum()) / (dist_pos.size(0) + dist_neg.size(0))
    itm_logits = pl_module.itm_score(infer["cls_feats"])
    itm_loss = F.cross_entropy(itm_logits.float(), itm_labels.long())
    return {"itm_loss": itm_loss, "itm_wpa_loss": 0.1 * ot_loss, "itm_logits": itm_logits,
            "itm_labels": itm_labels.long()}


# ---------------------------------------------------------------------------------------------------------------
# VQA


def vqa_targets(labels: Sequence[Sequence[int]], scores: Sequence[Sequence[float]], num_labels: int,
                device=None) -> torch.Tensor:
    """Soft-score target [B, num_labels]: zeros with each question's score at each of its labels."""
    targets = torch.zeros(len(labels), num_labels, device=device)
    for i, (lab, sc) in enumerate(zip(labels, scores)):
        for l, s in zip(lab, sc):
            if not 0 <= int(l) < num_labels:
                raise ValueError(f"VQA label {int(l)} outside [0, vqav2_label_size={num_labels})")
            targets[i, int(l)] = float(s)
    return targets


def vqa_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Upstream: mean BCE-with-logits over all B x C entries, times C (= sum over classes, mean over the batch)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float()) * targets.shape[1]


def compute_vqa(pl_module, batch) -> Dict[str, torch.Tensor]:
    infer = pl_module.infer(batch, mask_text=False, mask_image=False)
    logits = pl_module.vqa_classifier(infer["cls_feats"])
    targets = vqa_targets(batch["vqa_labels"], batch["vqa_scores"], logits.shape[1], logits.device)
    return {"vqa_loss": vqa_loss(logits, targets), "vqa_logits": logits, "vqa_targets": targets,
            "vqa_labels": batch["vqa_labels"], "vqa_scores": batch["vqa_scores"]}


# ---------------------------------------------------------------------------------------------------------------
# NLVR2


def compute_nlvr2(pl_module, batch) -> Dict[str, torch.Tensor]:
    """Two passes sharing all weights: text + image_0 with modality index 1, text + image_1 with index 2; the pooled
    vectors are concatenated [pass 1, pass 2] and classified (class 1 = "True")."""
    infer1 = pl_module.infer(batch, mask_text=False, mask_image=False, image_token_type_idx=1)
    infer2 = pl_module.infer(batch, mask_text=False, mask_image=False, image_token_type_idx=2)
    cls_feats = torch.cat([infer1["cls_feats"], infer2["cls_feats"]], dim=-1)
    logits = pl_module.nlvr2_classifier(cls_feats)
    labels = torch.as_tensor([bool(a) for a in batch["answers"]], device=logits.device).long()
    return {"nlvr2_loss": F.cross_entropy(logits.float(), labels), "nlvr2_logits": logits, "nlvr2_labels": labels}


# ---------------------------------------------------------------------------------------------------------------
# Image-text retrieval (fine-tuning)


def compute_irtr(pl_module, batch) -> Dict[str, torch.Tensor]:
    """Per image: the true caption then ``draw_false_text`` random captions; score = rank_output(cls)[:, 0]; CE with
    target index 0."""
    image = batch["image"][0]
    bs = image.shape[0]
    false_len = int(pl_module.hparams.config["draw_false_text"])
    missing = [f"false_text_{i}_ids" for i in range(false_len) if f"false_text_{i}_ids" not in batch]
    if missing:
        raise KeyError(f"IR/TR with draw_false_text={false_len} needs batch keys {missing}")

    def stacked(suffix):
        return torch.stack([batch[f"text_{suffix}"]] + [batch[f"false_text_{i}_{suffix}"] for i in range(false_len)],
                           dim=1)

    text_ids, text_masks, text_labels = stacked("ids"), stacked("masks"), stacked("labels")
    fs = false_len + 1
    images = image.unsqueeze(1).expand(bs, fs, *image.shape[1:]).reshape(bs * fs, *image.shape[1:])
    infer = pl_module.infer({
        "image": [images],
        "text_ids": text_ids.reshape(bs * fs, -1),
        "text_masks": text_masks.reshape(bs * fs, -1),
        "text_labels": text_labels.reshape(bs * fs, -1),
    })
    score = pl_module.rank_output(infer["cls_feats"])[:, 0].reshape(bs, fs)
    answer = torch.zeros(bs, dtype=torch.long, device=score.device)
    return {"irtr_loss": F.cross_entropy(score.float(), answer)}


OBJECTIVES = {
    "mlm": compute_mlm,
    "itm": compute_itm_wpa,
    "vqa": compute_vqa,
    "nlvr2": compute_nlvr2,
    "irtr": compute_irtr,
}


def batch_vqa_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over questions of the soft score of the argmax class (the per-step value of upstream's VQAScore)."""
    pred = logits.detach().argmax(dim=-1)
    return targets.gather(1, pred.unsqueeze(1)).squeeze(1).float().mean()


def batch_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    preds = logits.detach().argmax(dim=-1)
    keep = target != -100
    if keep.sum() == 0:
        return torch.tensor(0.0, device=logits.device)
    return (preds[keep] == target[keep]).float().mean()


def split_rows(table_names: Sequence[str], word: str) -> List[int]:
    return [i for i, n in enumerate(table_names) if word in n]
