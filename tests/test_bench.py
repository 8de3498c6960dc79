"""The benchmark harness (bench/) runs end to end on tiny layers and writes
results whose numbers are consistent; its layer descriptions match the public
lists they come from. Timings are not checked: speed is the benchmark's job,
not the tests'."""
import json

import pytest
import torch

import conv_ext.bench
from bench import cases, cli, models, per_layer


@pytest.fixture
def one_thread():
    # Whole-model runs on one thread: OpenMP's two threads crawl on a machine
    # loaded by others.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bench_writes_table_json_and_chart(tmp_path, capsys):
    # Through `python -m conv_ext.bench`'s entry, which forwards to bench/.
    status = conv_ext.bench.main([
        "--device", "cpu", "--suite", "none", "--layer", "5,9,7,3,2,1", "--layer", "6,8,6,3,1,1,6",
        "--layer", "C=2,H=7,W=12,K=3,R=2,S=5,stride=1x2,padding=1x0,dilation=2x1",
        "--batch", "2", "--rounds", "1", "--min-time", "0.001", "--out", str(tmp_path),
        "--tag", "smoke"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "geomean" in printed and "custom_5_9_7_3_2_1" in printed and "ISA" in printed
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.png").stat().st_size > 0
    assert result["meta"]["peak_gflops"] > 0 and result["meta"]["isa"]
    rows = result["layers"]
    assert [row["layer"] for row in rows][:2] == ["custom_5_9_7_3_2_1", "custom_6_8_6_3_1_1_6"]
    for row, spec in zip(rows, ["5,9,7,3,2,1", "6,8,6,3,1,1,6"]):
        assert row["gflop"] == cases.parse_layer(spec).flops(2) / 1e9
    for row in rows:
        assert row["correct"] and row["max_rel_error"] < 1e-4
        assert row["ratio"] == row["torch_s"] / row["conv_ext_s"]
        assert row["ratio_torch_no_onednn"] == row["torch_no_onednn_s"] / row["conv_ext_s"]
        assert row["torch_backend"]  # which torch kernel the row was measured against
    odd = rows[2]
    assert (odd["H"], odd["W"], odd["R"], odd["S"]) == (7, 12, 2, 5)
    assert odd["stride"] == [1, 2] and odd["padding"] == [1, 0] and odd["dilation"] == [2, 1]
    assert result["summary"]["suites"]["custom"]["layers"] == 3


@pytest.mark.parametrize("pass_", ["train", "grad_input", "grad_weight"])
def test_bench_gradient_passes_check_their_results(pass_):
    layer = cases.parse_layer("C=4,H=7,W=6,K=6,R=3,S=2,stride=2x1,padding=1,groups=2")
    row = per_layer.run_layer(layer, batch=2, device="cpu", dtype=torch.float64, pass_=pass_,
                              rounds=1, min_time=0.001, baseline2=False)
    assert row["correct"]
    assert row["gflop"] == per_layer.PASS_FLOP_FACTOR[pass_] * layer.flops(2) / 1e9


def test_suites_are_valid_layers_with_unique_names():
    for name, layers in cases.SUITES.items():
        assert layers, name
        assert len({layer.name for layer in layers}) == len(layers), name
        for layer in layers:
            assert layer.C % layer.groups == 0 and layer.K % layer.groups == 0, layer
            assert min(layer.output_shape(1)[2:]) >= 1, layer
    assert [s for s, _ in cases.select("default")] == ["resnet50"] * 23 + ["mobilenet"] * 15
    with pytest.raises(ValueError, match="unknown suite"):
        cases.select("resnet5")


def test_public_descriptors_are_read_as_published():
    # benchdnn: h before w, dilation counted from 0, '*N' the count; the output
    # size the descriptor states is checked against the shape.
    layer = cases.from_benchdnn(
        'g1mb22ic128ih17iw17oc192oh17ow17kh7kw1ph3pw0sh1sw1n"googlenet_v3:mixed_4*2"')
    assert (layer.C, layer.H, layer.W, layer.K, layer.R, layer.S) == (128, 17, 17, 192, 7, 1)
    assert layer.padding == (3, 0) and layer.count == 2
    fc6 = cases.from_benchdnn('mb32_ic512oc1024_ih19kh3oh19ph6dh5n"ssd_300_voc0712:fc6"')
    assert fc6.dilation == (6, 6)
    with pytest.raises(ValueError, match="not the descriptor's"):
        cases.from_benchdnn('mb1ic3ih9oc4oh9kh3ph0n"wrong:size"')
    # DeepBench: (w, h, c, n, k, filter_w, filter_h, pad_w, pad_h, stride_w, stride_h).
    speech = cases.from_deepbench((151, 40, 1, 1, 32, 20, 5, 8, 8, 8, 2), "speech")
    assert (speech.H, speech.W, speech.R, speech.S) == (40, 151, 5, 20)
    assert speech.stride == (2, 8) and speech.output_shape(1) == (1, 32, 26, 19)


def test_model_mode_skips_cleanly_without_torchvision(monkeypatch, capsys):
    monkeypatch.setattr(models, "have_torchvision", lambda: False)
    assert cli.main(["--device", "cpu", "--model", "resnet18"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_model_mode_training_step(one_thread):
    pytest.importorskip("torchvision")
    row = models.run_model("resnet18", batch=2, device="cpu", dtype=torch.float32,
                           pass_="train", rounds=1, min_time=0.001, image_size=64)
    assert row["correct"], row["max_rel_error"]
    assert row["ratio"] == row["torch_s"] / row["conv_ext_s"]
    # The step's activations raise the allocator's peak above what it started with.
    assert row["conv_ext_peak_bytes"]["allocator"] > 0 and row["torch_peak_bytes"]["allocator"] > 0


def test_model_mode_training_step_with_dropout_float64(one_thread):
    # MobileNetV2 has Dropout before its classifier and BatchNorm biases whose
    # gradients are zero up to rounding: the check must see the same dropout
    # masks in both models and must not divide rounding noise by itself.
    pytest.importorskip("torchvision")
    row = models.run_model("mobilenet_v2", batch=2, device="cpu", dtype=torch.float64,
                           pass_="train", rounds=1, min_time=0.001, image_size=64)
    assert row["correct"], row["max_rel_error"]
    assert row["max_rel_error"] < 1e-9


def test_model_error_floors_near_zero_tensors():
    want = (torch.tensor([1.0, -2.0]), torch.tensor([1e-17, 0.0]))
    got = (torch.tensor([1.0, -2.0]), torch.tensor([-1e-17, 1e-17]))
    assert models._max_rel_error(got, want) < 1e-14
    got = (torch.tensor([1.0, -2.0]), torch.tensor([1e-17, 0.5]))  # a real error is seen
    assert models._max_rel_error(got, want) > 100


def test_model_mode_fused_inference(one_thread):
    pytest.importorskip("torchvision")
    row = models.run_model("resnet18", batch=2, device="cpu", dtype=torch.float32,
                           pass_="inference", rounds=1, min_time=0.001, image_size=64,
                           variants=("conv_ext_fused",))
    assert row["correct"], row["max_rel_error"]
    assert row["ratio"] == row["torch_s"] / row["conv_ext_fused_s"]
    with pytest.raises(ValueError, match="inference only"):
        models.run_model("resnet18", batch=2, device="cpu", dtype=torch.float32, pass_="train",
                         variants=("conv_ext_fused",))
