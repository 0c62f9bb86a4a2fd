"""Objectives (docs/backbones.md, ViLT) and task selection (loss_names thresholds) on hand cases and the tiny ViLT."""
import math

import pytest
import torch
import torch.nn.functional as F

from shared_apt.vl.training import objectives
from shared_apt.vl.training.module import VisionLanguageModule
from tests.tiny import vilt_batch, vilt_config
from vilt.modules.vilt_module import ViLTransformerSS


def test_vqa_loss_is_bce_summed_over_labels_mean_over_batch():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.5]])
    targets = objectives.vqa_targets([[1], [0, 2]], [[1.0], [0.3, 0.6]], 3)
    assert torch.allclose(targets, torch.tensor([[0.0, 1.0, 0.0], [0.3, 0.0, 0.6]]))
    hand = 0.0
    for i in range(2):
        for c in range(3):
            x, y = logits[i, c].item(), targets[i, c].item()
            p = 1 / (1 + math.exp(-x))
            hand += -(y * math.log(p) + (1 - y) * math.log(1 - p))
    hand /= 2  # sum over the 3 classes, mean over the 2 questions
    assert objectives.vqa_loss(logits, targets).item() == pytest.approx(hand, rel=1e-6)


def test_vqa_target_rejects_label_outside_head():
    with pytest.raises(ValueError, match="vqav2_label_size=3"):
        objectives.vqa_targets([[5]], [[1.0]], 3)


def test_batch_vqa_score_takes_soft_score_of_argmax():
    logits = torch.tensor([[0.0, 2.0, -1.0], [3.0, 0.0, 0.5]])
    targets = torch.tensor([[0.0, 0.6, 0.0], [0.0, 0.0, 1.0]])
    assert objectives.batch_vqa_score(logits, targets).item() == pytest.approx(0.3)


class _Recorder(torch.nn.Module):
    """A stand-in module recording the infer calls of an objective."""

    def __init__(self, hidden=4, config=None):
        super().__init__()
        self.calls = []
        self.hparams = type("H", (), {"config": config or {}})()
        self.nlvr2_classifier = torch.nn.Linear(2 * hidden, 2)
        self.rank_output = torch.nn.Linear(hidden, 1)
        self.hidden = hidden

    def infer(self, batch, mask_text=False, mask_image=False, image_token_type_idx=1, **kw):
        self.calls.append({"idx": image_token_type_idx, "batch": batch})
        n = batch["text_ids"].shape[0]
        return {"cls_feats": torch.full((n, self.hidden), float(image_token_type_idx)) + batch["text_ids"][:, :1]}


def test_nlvr2_runs_two_passes_with_modality_indices_1_and_2():
    m = _Recorder()
    batch = {"text_ids": torch.zeros(3, 5, dtype=torch.long), "answers": [True, False, True]}
    out = objectives.compute_nlvr2(m, batch)
    assert [c["idx"] for c in m.calls] == [1, 2]
    feats = torch.cat([torch.full((3, 4), 1.0), torch.full((3, 4), 2.0)], dim=-1)
    expected = F.cross_entropy(m.nlvr2_classifier(feats), torch.tensor([1, 0, 1]))
    assert out["nlvr2_loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["nlvr2_labels"].tolist() == [1, 0, 1]


def test_irtr_scores_true_caption_first_and_targets_index_0():
    m = _Recorder(config={"draw_false_text": 2})
    B, L = 2, 5
    batch = {"image": [torch.zeros(B, 3, 8, 8)]}
    for prefix, value in (("text", 0), ("false_text_0", 1), ("false_text_1", 2)):
        batch[f"{prefix}_ids"] = torch.full((B, L), value, dtype=torch.long)
        batch[f"{prefix}_masks"] = torch.ones(B, L, dtype=torch.long)
        batch[f"{prefix}_labels"] = torch.full((B, L), -100)
    out = objectives.compute_irtr(m, batch)
    flat = m.calls[0]["batch"]
    assert flat["image"][0].shape == (B * 3, 3, 8, 8)
    # per image: true caption (0), then the two false captions (1, 2)
    assert flat["text_ids"][:, 0].tolist() == [0, 1, 2, 0, 1, 2]
    scores = m.rank_output(torch.ones(6, 4) + flat["text_ids"][:, :1].float())[:, 0].reshape(B, 3)
    expected = F.cross_entropy(scores, torch.zeros(B, dtype=torch.long))
    assert out["irtr_loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_irtr_names_missing_false_texts():
    m = _Recorder(config={"draw_false_text": 2})
    batch = {"image": [torch.zeros(1, 3, 8, 8)], "text_ids": torch.zeros(1, 3, dtype=torch.long)}
    with pytest.raises(KeyError, match="false_text_0_ids"):
        objectives.compute_irtr(m, batch)


def test_ipot_plan_has_uniform_marginals_and_zero_on_padding():
    torch.manual_seed(0)
    B, M, N = 2, 5, 4
    text, image = torch.randn(B, M, 8), torch.randn(B, N, 8)
    x_pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    y_pad = torch.tensor([[False] * 4, [False] * 2 + [True] * 2])
    C = objectives.cost_matrix_cosine(text, image)
    joint = x_pad.unsqueeze(-1) | y_pad.unsqueeze(-2)
    C = C.masked_fill(joint, 0)
    x_len = (~x_pad).sum(1).float()
    y_len = (~y_pad).sum(1).float()
    T = objectives.ipot(C, x_len, x_pad, y_len, y_pad, joint, 0.5, 200, 1)
    assert T.shape == (B, N, M)
    assert (T.transpose(1, 2)[joint] == 0).all()
    for b in range(B):
        n, m = int(y_len[b]), int(x_len[b])
        # the plan's total mass is 1 and each valid text token carries 1/m of it (Sinkhorn-style column marginal)
        assert T[b].sum().item() == pytest.approx(1.0, abs=1e-3)
        assert torch.allclose(T[b, :n, :m].sum(0), torch.full((m,), 1.0 / m), atol=1e-3)


def test_itm_wpa_on_tiny_vilt():
    cfg = vilt_config(loss_names={"itm": 1}, draw_false_image=1)
    model = ViLTransformerSS(cfg)
    batch = vilt_batch(cfg, batch=4)
    batch["false_image_0"] = [torch.flip(batch["image"][0], dims=[0])]
    batch["text"] = ["a"] * 4
    torch.manual_seed(0)
    out = objectives.compute_itm_wpa(model, batch)
    assert sorted(out["itm_labels"].tolist()) == [0, 0, 1, 1]
    assert torch.isfinite(out["itm_loss"]) and torch.isfinite(out["itm_wpa_loss"])
    out["itm_loss"].backward()
    assert model.itm_score.fc.weight.grad is not None


def test_loss_names_thresholds_build_vs_execute():
    cfg = vilt_config(loss_names={"itm": 0.5, "irtr": 1}, draw_false_text=1)
    model = ViLTransformerSS(cfg)
    model.set_tasks()
    assert model.current_tasks == ["irtr"]          # itm 0.5: head built, not executed
    assert hasattr(model, "itm_score") and not hasattr(model, "train_itm_accuracy")
    assert hasattr(model, "train_irtr_loss")


def test_training_step_returns_sum_of_losses():
    cfg = vilt_config(loss_names={"vqa": 1})
    model = ViLTransformerSS(cfg)
    batch = vilt_batch(cfg, batch=3)
    batch["vqa_labels"] = [[1], [2, 3], []]
    batch["vqa_scores"] = [[1.0], [0.6, 0.3], []]
    model.set_tasks()
    torch.manual_seed(0)
    out = model(batch)
    assert set(k for k in out if "loss" in k) == {"vqa_loss"}
    assert VisionLanguageModule.total_loss({"a_loss": torch.tensor(1.0), "b_loss": torch.tensor(2.5),
                                            "logits": torch.tensor(9.0)}).item() == 3.5


def test_mpp_execution_is_rejected_with_a_reason():
    with pytest.raises(ValueError, match="mpp"):
        ViLTransformerSS(vilt_config(loss_names={"mpp": 1}))


def test_unknown_task_name_is_rejected():
    with pytest.raises(ValueError, match="snli"):
        VisionLanguageModule({"loss_names": {"snli": 1}})
