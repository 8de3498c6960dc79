"""The LeNet-5 example (conv_ext/examples/lenet.py) runs end to end and its
agreement check can fail. Skipped without scikit-learn (an optional extra)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_lenet_example_runs_and_curves_agree(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "curves.png"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "conv_ext.examples.lenet", "--epochs", "1", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the curves agree" in result.stdout
    lines = [line.split() for line in result.stdout.splitlines()]
    epoch = next(line for line in lines if line and line[0] == "1")
    loss_nn, loss_ext = float(epoch[1]), float(epoch[2])
    assert 0 < loss_nn < 2.3 and abs(loss_nn - loss_ext) <= 1e-4 * loss_nn + 1e-5
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lenet_agreement_check_detects_disagreement():
    from conv_ext.examples.lenet import curves_agree
    a = [(1.5, 0.80), (0.3, 0.95)]
    n_test = 360
    assert curves_agree(a, [(1.5 * (1 + 1e-6), 0.80), (0.3, 0.95)], n_test)[0]
    assert curves_agree(a, [(1.5, 0.80), (0.3, 0.95 - 1 / n_test)], n_test)[0]
    assert not curves_agree(a, [(1.5, 0.80), (0.3 * 1.01, 0.95)], n_test)[0]
    assert not curves_agree(a, [(1.5, 0.80), (0.3, 0.95 - 3 / n_test)], n_test)[0]
