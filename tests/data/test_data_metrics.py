"""Recall@k on a hand-ranked 3 x 6 score matrix, and the metric classes (incl. a real 2-process gloo run)."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shared_apt.vl.data.datamodules import UnpaddedDistributedSampler
from shared_apt.vl.data.metrics import Accuracy, Scalar, VQAScore, compute_recall_at_k

SCORES = torch.tensor([
    # t0    t1    t2    t3    t4    t5        captions of image 0: t0 t1; image 1: t2 t3; image 2: t4 t5
    [0.90, 0.10, 0.80, 0.20, 0.30, 0.05],   # image 0
    [0.70, 0.60, 0.50, 0.10, 0.20, 0.30],   # image 1
    [0.10, 0.20, 0.30, 0.40, 0.35, 0.25],   # image 2
])
TEXT_TO_IMAGE = [0, 0, 1, 1, 2, 2]


def test_recall_at_k_hand_computed():
    r = compute_recall_at_k(SCORES, TEXT_TO_IMAGE, ks=(1, 2, 5, 10))
    # TR (rows): top-1 t0 (hit) / t0 (miss) / t3 (miss); top-2 {t0,t2} hit, {t0,t1} miss, {t3,t4} hit
    assert r["tr_r1"] == pytest.approx(1 / 3)
    assert r["tr_r2"] == pytest.approx(2 / 3)
    assert r["tr_r5"] == pytest.approx(1.0)
    assert r["tr_r10"] == pytest.approx(1.0)   # k clamped to the 6 captions
    # IR (columns): top-1 images 0,1,0,2,2,1 vs truth 0,0,1,1,2,2 -> 2 hits of 6
    assert r["ir_r1"] == pytest.approx(2 / 6)
    # top-2: t0 {0,1} hit, t1 {1,2} miss, t2 {0,1} hit, t3 {2,0} miss, t4 {2,0} hit, t5 {1,2} hit
    assert r["ir_r2"] == pytest.approx(4 / 6)
    assert r["ir_r5"] == pytest.approx(1.0)
    assert list(compute_recall_at_k(SCORES, TEXT_TO_IMAGE)) == ["ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5",
                                                                "tr_r10"]


def test_recall_uses_given_image_ids_and_checks_shapes():
    r = compute_recall_at_k(SCORES, [10, 10, 20, 20, 30, 30], image_ids=[10, 20, 30], ks=(1,))
    assert r == pytest.approx({"ir_r1": 2 / 6, "tr_r1": 1 / 3})
    with pytest.raises(ValueError, match="text_to_image"):
        compute_recall_at_k(SCORES, [0, 1, 2])


def test_accuracy_ignores_minus_100_and_scalar_means():
    acc = Accuracy()
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])  # predictions 1, 0, 1
    acc.update(logits, torch.tensor([[1, -100, 0]]))
    acc.update(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    assert acc.compute().item() == pytest.approx(2 / 3)
    s = Scalar()
    for v in (1.0, torch.tensor(2.0), torch.tensor([6.0])):
        s.update(v)
    assert s.compute().item() == pytest.approx(3.0)
    assert s.state_dict() == {} and acc.state_dict() == {}
    s.reset()
    assert s.compute().item() == 0.0


def test_vqa_score_metric():
    m = VQAScore()
    target = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.0, 0.6]])
    m.update(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), target)  # 0.3 + 0.6
    m.update(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))  # 1.0
    assert m.compute().item() == pytest.approx(1.9 / 3)


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        n = 7
        sampler = UnpaddedDistributedSampler(range(n))
        indices = list(sampler)
        acc, scalar = Accuracy(), Scalar()
        # sample i is "correct" iff i is even; one loss value per sample equal to i
        for i in indices:
            logits = torch.tensor([[0.0, 1.0]])
            acc.update(logits, torch.tensor([1 if i % 2 == 0 else 0]))
            scalar.update(float(i))
        result = {"indices": indices, "len": len(sampler), "acc": acc.compute().item(), "mean": scalar.compute().item()}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_unpadded_sampler_and_metric_sync_over_two_gloo_processes(tmp_path):
    world = 2
    mp.start_processes(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True,
                       start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert results[0]["indices"] == [0, 2, 4, 6] and results[1]["indices"] == [1, 3, 5]
    assert [r["len"] for r in results] == [4, 3]
    seen = sorted(i for r in results for i in r["indices"])
    assert seen == list(range(7))  # every sample exactly once, no padding duplicates
    for r in results:  # synchronised corpus values equal the one-process values
        assert r["acc"] == pytest.approx(4 / 7)
        assert r["mean"] == pytest.approx(3.0)


def test_unpadded_sampler_partition_without_process_group():
    n, world = 10, 3
    parts = [list(UnpaddedDistributedSampler(range(n), num_replicas=world, rank=r)) for r in range(world)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(parts, [])) == list(range(n))
