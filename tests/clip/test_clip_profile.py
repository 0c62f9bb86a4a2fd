"""The CLIP profile rows: exact trainable counts and a hand-computed FLOPs case."""
from clip_apt import profiling


def test_apt_and_coop_rows():
    rows, info = profiling.profile([profiling.ROWS[1], next(r for r in profiling.ROWS if r[1] == "apt")])
    apt = next(r for r in rows if r.method == "apt")
    coop = next(r for r in rows if r.method == "coop")
    assert (coop.trainable, coop.macs_per_image, coop.macs_per_prompt) == (2_048, 0, 0)
    # 12 layers x (K = P'W1W2: 4*512*2 + 4*2*512; X K^T and A P' over 77 tokens: 2 * 77*4*512)
    assert apt.trainable == 49_164 and apt.macs_per_image == 0
    assert apt.macs_per_prompt == 12 * (2 * 77 * 4 * 512 + 2 * 4 * 2 * 512) == 3_883_008
    text = profiling.render(rows, info)
    assert "| APT text p 4 r 2 | 49,164 | 49,164 | 0.0000 | 0.0039 |" in text
