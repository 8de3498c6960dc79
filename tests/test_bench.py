"""The benchmark entry point runs end to end on a tiny layer and writes a
JSON whose numbers are consistent (timings are not checked: speed is the
benchmark's job, not the tests')."""
import json

import torch

from conv_ext import bench
from conv_ext.layers import parse_layer


def test_bench_writes_table_json_and_chart(tmp_path, capsys):
    status = bench.main(["--device", "cpu", "--suite", "none", "--layer", "5,9,7,3,2,1", "--layer", "6,8,6,3,1,1,6",
                         "--batch", "2", "--rounds", "1", "--min-time", "0.001",
                         "--out", str(tmp_path), "--tag", "smoke"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "geomean" in printed and "custom_5_9_7_3_2_1" in printed
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.png").stat().st_size > 0
    assert result["meta"]["peak_gflops"] > 0
    assert [row["layer"] for row in result["layers"]] == ["custom_5_9_7_3_2_1", "custom_6_8_6_3_1_1_6"]
    for row in result["layers"]:
        assert row["correct"] and row["max_rel_error"] < 1e-4
        assert row["ratio"] == row["torch_s"] / row["conv_ext_s"]
        assert row["gflop"] == parse_layer("5,9,7,3,2,1").flops(2) / 1e9 or row["groups"] == 6


def test_bench_train_pass_checks_all_results():
    layer = parse_layer("4,7,5,3,1,1")
    row = bench.run_layer(layer, batch=2, device="cpu", dtype=torch.float64, pass_="train",
                          threads=1, rounds=1, min_time=0.001, baseline2=False)
    assert row["correct"] and row["gflop"] == 3 * layer.flops(2) / 1e9
