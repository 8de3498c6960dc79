"""64-bit indexing: tensors of more than 2**31 elements. Opt-in, since each
test allocates about 9 GB and takes minutes on a few cores:

    CONV_EXT_LARGE_TESTS=1 python -m pytest tests/test_large.py

Shapes are chosen to keep memory down (one big float32 tensor at a time,
~8.6 GB), and results are checked on sampled slices against F.conv2d, or
by exact arithmetic where every output is known.
"""
import gc
import os

import pytest
import torch
import torch.nn.functional as F

import conv_ext

pytestmark = pytest.mark.skipif(
    os.environ.get("CONV_EXT_LARGE_TESTS") != "1",
    reason="allocates ~9 GB; opt in with CONV_EXT_LARGE_TESTS=1")

INT32_LIMIT = 2**31


def test_output_over_2_31_elements():
    # A 1x1 conv of a small input with huge padding: the output has
    # 32768 x 65540 > 2**31 elements, all bias except the input's window.
    x = torch.randn(1, 1, 64, 64)
    w = torch.full((1, 1, 1, 1), 0.5)
    b = torch.tensor([0.25])
    pad_h, pad_w = (32768 - 64) // 2, (65540 - 64) // 2
    out = conv_ext.conv2d(x, w, b, padding=(pad_h, pad_w))
    assert out.shape == (1, 1, 32768, 65540) and out.numel() > INT32_LIMIT
    window = out[0, 0, pad_h:pad_h + 64, pad_w:pad_w + 64]
    torch.testing.assert_close(window, 0.5 * x[0, 0] + 0.25)
    # Every element written exactly once: elsewhere the bias, and the sum
    # adds up (an unwritten element of fresh memory would be 0, a wrapped
    # 32-bit index would write into the window or fault).
    for rows in (slice(0, 8), slice(-8, None)):
        assert torch.equal(out[0, 0, rows], torch.full_like(out[0, 0, rows], 0.25))
    assert torch.equal(out[0, 0, :, -1], torch.full((32768,), 0.25))
    expected_sum = 0.25 * out.numel() + 0.5 * x.double().sum().item()
    assert abs(out.sum(dtype=torch.float64).item() - expected_sum) < 1e-2


def test_input_over_2_31_elements_forward_and_backward():
    # Two images whose elements together exceed 2**31 (the second image
    # starts at offset ~2**30 and ends past 2**31); a strided 3x3 conv keeps
    # the output small. Output rows and weight gradients are checked
    # against F.conv2d / exact sums on slices.
    N, H, W, stride = 2, 32768, 32770, 8
    x = torch.empty(N, 1, H, W).uniform_(-1, 1)
    assert x.numel() > INT32_LIMIT
    w = torch.randn(2, 1, 3, 3)
    b = torch.randn(2)
    out = conv_ext.conv2d(x, w, b, stride=stride)
    P, Q = (H - 3) // stride + 1, (W - 3) // stride + 1
    assert out.shape == (N, 2, P, Q)
    for n, row in [(0, 0), (1, 0), (1, P // 2), (1, P - 1)]:
        rows = x[n:n + 1, :, row * stride:row * stride + 3]
        torch.testing.assert_close(out[n:n + 1, :, row:row + 1], F.conv2d(rows, w, b, stride=stride),
                                   rtol=1e-4, atol=1e-4)

    # grad_weight[k, 0, r, s] = sum_{n,i,j} gy[n, k, i, j] * x[n, 0, r + 8i, s + 8j].
    gy = torch.randn_like(out)
    grad_weight = torch.ops.conv_ext.conv2d_backward_weight(
        gy, x, list(w.shape), [stride], [0], [1], 1)
    for r, s in [(0, 0), (2, 2), (1, 0)]:
        window = x[:, 0, r:r + stride * P:stride, s:s + stride * Q:stride]
        want = torch.einsum("nkij,nij->k", gy.double(), window.double())
        torch.testing.assert_close(grad_weight[:, 0, r, s].double(), want, rtol=1e-4, atol=1e-2)
    del x, window, rows
    gc.collect()

    # grad_input has the big shape: rows 8i..8i+2 get gy * w, rows 8i+3..8i+7 zero.
    grad_input = torch.ops.conv_ext.conv2d_backward_input(
        gy, w, [N, 1, H, W], [stride], [0], [1], 1)
    assert grad_input.shape == (N, 1, H, W)
    for n, row in [(0, 0), (1, P - 1)]:
        got = grad_input[n, 0, row * stride:row * stride + stride, :Q * stride]
        want = _scatter_row(gy[n, :, row], w, stride, Q)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    last_row_used = stride * (P - 1) + 3
    assert not grad_input[:, 0, last_row_used:].any()


def _scatter_row(gy_row, w, stride, Q):
    """grad_input for one output row i (rows 8i..8i+7): each output column j
    adds gy[:, j] * w[:, 0] at columns 8j..8j+2."""
    out = torch.zeros(stride, Q * stride, dtype=torch.float64)
    contrib = torch.einsum("kj,krs->jrs", gy_row.double(), w[:, 0].double())  # Q x 3 x 3
    for s in range(3):
        out[:3, s::stride][:, :Q] += contrib[:, :, s].T
    return out.float()
