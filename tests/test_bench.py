"""The benchmark's output contract, on a tiny backbone (no assertion on timings)."""
import json

from shared_apt import METHODS
from shared_apt.harness.bench import main


def test_bench_json_has_every_method_and_field(tmp_path, capsys):
    path = tmp_path / "bench.json"
    main(["--size", "tiny", "--rounds", "1", "--batch", "2", "--seq-len", "10", "--device", "cpu",
          "--json", str(path)])
    res = json.loads(path.read_text())
    for key in ("backbone", "device", "batch", "seq_len", "frozen", "methods"):
        assert key in res
    assert res["batch"] == 2 and res["seq_len"] == 10 and res["device"] == "cpu"
    assert set(res["frozen"]) >= {"infer_s", "train_step_s"}
    assert set(res["methods"]) == set(METHODS)
    for m, r in res["methods"].items():
        for field in ("infer_s", "train_step_s", "peak_mem_mb", "gflops_extra", "infer_extra_vs_deep",
                      "train_extra_vs_deep", "train_step_vs_full"):
            assert field in r, (m, field)
        assert r["infer_s"] > 0 and r["train_step_s"] > 0 and r["peak_mem_mb"] > 0
    # FLOP column is the profile's: APT at d = 32, p = 200, n = 10, 2 layers, r = 4
    assert abs(res["methods"]["apt"]["gflops_extra"] * 1e9 - 2 * (2 * 10 * 200 * 32 + 2 * 200 * 32 * 4)) < 1
    # memory accounting: full tuning holds gradients and AdamW state for every weight
    assert res["methods"]["full"]["peak_mem_mb"] > res["methods"]["apt"]["peak_mem_mb"]
    assert "| apt |" in capsys.readouterr().out
