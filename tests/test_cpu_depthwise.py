"""The CPU depthwise kernels (csrc/cpu/conv2d_depthwise_kernels.h) against
F.conv2d, forward and both gradients, NCHW and channels_last, float32 and
float64: strides, dilations, asymmetric and 'same' padding, padding larger
than the kernel, odd and tiny planes (both the row and the flat vector
plans), large kernels, channel counts that are not a multiple of the SIMD
width; float64 gradcheck; bitwise invariance across thread counts and batch
splits."""
import pytest
import torch
import torch.nn.functional as F

import conv_ext
from helpers import TOLERANCES, compare_with_torch

ops = torch.ops.conv_ext
# Every test runs once per vector ISA the CPU has (conftest.cpu_isa).
pytestmark = pytest.mark.usefixtures("cpu_isa")

# (name, N, C, H, W, R, S, stride, padding, dilation)
CASES = [
    ("3x3_s1_7x7_plane", 2, 20, 7, 7, 3, 3, 1, 1, 1),          # flat plan
    ("3x3_s1_14x14_plane", 2, 5, 14, 14, 3, 3, 1, 1, 1),
    ("3x3_s2_odd", 2, 7, 15, 13, 3, 3, 2, 1, 1),
    ("3x3_s2_wide", 1, 3, 6, 75, 3, 3, 2, 1, 1),               # vectorized de-interleave
    ("3x3_s2_even_wide", 1, 2, 8, 66, 3, 3, 2, 0, 1),
    ("5x5_s2_dilated", 2, 6, 17, 19, 5, 5, 2, 2, 2),
    ("3x3_s3", 1, 4, 13, 14, 3, 3, 3, 1, 1),
    ("asym_stride_dilation", 1, 5, 11, 12, 3, 2, (1, 3), (2, 1), (2, 1)),
    ("pad_beyond_kernel", 1, 3, 6, 7, 3, 3, 1, 4, 1),
    ("pad_beyond_kernel_s2", 1, 3, 6, 7, 3, 3, 2, (3, 4), 1),
    ("no_pad_1xk", 2, 4, 9, 21, 1, 5, 1, 0, 1),
    ("7x7_convnext_like", 2, 17, 12, 11, 7, 7, 1, 3, 1),
    ("13x13_large", 1, 3, 9, 16, 13, 13, 1, 6, 1),
    ("31x31_large", 1, 2, 10, 9, 31, 31, 1, 15, 1),
    ("1x1_plane", 3, 9, 1, 1, 3, 3, 1, 1, 1),
    ("kernel_equals_input", 2, 5, 4, 6, 4, 6, 1, 0, 1),
    ("wide_rows_tail", 1, 3, 5, 70, 3, 3, 1, 1, 1),
    # Narrow rows run channel-blocked: full and partial channel blocks,
    # input rows/columns past the last one read (stride 2, no padding).
    ("narrow_37ch", 2, 37, 9, 6, 3, 3, 1, 1, 1),
    ("narrow_s2_dilated_asym", 1, 19, 11, 9, 5, 3, 2, (2, 1), (2, 1)),
    ("narrow_s2_unread_edge", 1, 18, 8, 8, 3, 3, 2, 0, 1),
    # Sliding-window tiles (unit horizontal stride and dilation): rows split
    # into several one-row tiles, rows that share no input row (vertical
    # dilation or stride), kernels wider than a tile (13x13 at 8-wide tiles,
    # 31x31), two-row tiles over an odd number of rows.
    ("window_wide_rows", 2, 21, 10, 45, 5, 5, 1, 2, 1),
    ("window_dilated_rows", 1, 17, 13, 30, 3, 7, 1, (2, 3), (2, 1)),
    ("window_strided_rows", 1, 16, 15, 20, 5, 5, (2, 1), 2, 1),
    ("window_two_rows_odd", 2, 19, 9, 16, 13, 13, 1, 6, 1),
    # Horizontal stride 2 on the channel blocks (nhwc tiles), with a 5x5 and
    # a 7x7 kernel; unit vertical stride with stride 2 across.
    ("blocks_s2_columns", 2, 19, 9, 23, 5, 5, (1, 2), 2, 1),
    ("blocks_s2_7x7", 1, 17, 20, 41, 7, 7, 2, 3, 1),
    # Kernel rows over the zero padding only are skipped per output row: a
    # kernel as tall as the plane, rows with no image row at all.
    ("skip_pad_rows_13x13_on_7x7", 2, 17, 7, 7, 13, 13, 1, 6, 1),
    ("skip_pad_rows_all_pad_rows", 1, 18, 5, 9, 3, 5, 1, (4, 2), 1),
    # A plane whose channel block exceeds the L2 limit: channels_last runs
    # the native kernel (border tiles), not the block.
    ("big_plane_native_nhwc", 1, 2, 257, 259, 5, 5, 1, 2, 1),
]


def _id(case):
    return case[0]


def _inputs(N, C, H, W, R, S, dtype):
    x = torch.randn(N, C, H, W, dtype=dtype)
    w = torch.randn(C, 1, R, S, dtype=dtype) / (R * S) ** 0.5
    b = torch.randn(C, dtype=dtype)
    return x, w, b


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_depthwise_matches_torch(case, dtype, layout):
    _, N, C, H, W, R, S, stride, padding, dilation = case
    x, w, b = _inputs(N, C, H, W, R, S, dtype)
    assert torch.ops.conv_ext_debug.cpu_forward_path(x, w, list(stride) if isinstance(stride, tuple) else [stride],
                                list(padding) if isinstance(padding, tuple) else [padding],
                                list(dilation) if isinstance(dilation, tuple) else [dilation],
                                C) == "depthwise"
    compare_with_torch(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=C,
                       layout=layout)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kernel,dilation", [((3, 3), 1), ((4, 4), 1), ((2, 5), 2), ((7, 7), 1)])
def test_depthwise_same_padding(kernel, dilation, layout):
    # Even kernels: 'same' pads one more row/column at the bottom/right.
    x, w, b = _inputs(2, 6, 9, 10, *kernel, torch.float32)
    compare_with_torch(x, w, b, padding="same", dilation=dilation, groups=6, layout=layout)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "3x3_s2_odd", "5x5_s2_dilated", "asym_stride_dilation", "pad_beyond_kernel_s2",
    "7x7_convnext_like")], ids=_id)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_depthwise_gradcheck_float64(case, layout):
    _, N, C, H, W, R, S, stride, padding, dilation = case
    C = min(C, 3)
    x, w, b = _inputs(1, C, min(H, 9), min(W, 9), R, S, torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x, w, b = (t.requires_grad_() for t in (x, w, b))

    def fn(x, w, b):
        return conv_ext.conv2d(x, w, b, stride, padding, dilation, C)

    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "3x3_s1_7x7_plane", "3x3_s2_wide", "7x7_convnext_like", "asym_stride_dilation",
    "skip_pad_rows_all_pad_rows")], ids=_id)
def test_depthwise_bitwise_across_threads_and_batch_splits(case, layout):
    _, N, C, H, W, R, S, stride, padding, dilation = case
    N = 3
    x, w, _ = _inputs(N, C, H, W, R, S, torch.float32)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    pair = lambda v: list(v) if isinstance(v, tuple) else [v]  # noqa: E731
    args = (pair(stride), pair(padding), pair(dilation), C)
    gy = torch.randn_like(ops.conv2d_forward(x, w, None, *args))
    saved = torch.get_num_threads()

    def run():
        return (ops.conv2d_forward(x, w, None, *args),
                ops.conv2d_backward_input(gy, w, list(x.shape), *args),
                ops.conv2d_backward_weight(gy, x, list(w.shape), *args))

    try:
        first = run()
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(saved)
    for a, c in zip(first, single):
        assert torch.equal(a, c)
    # Each image's forward and grad-input do not depend on the rest of the batch.
    for i in range(N):
        xi = x[i:i + 1]
        assert torch.equal(ops.conv2d_forward(xi, w, None, *args), first[0][i:i + 1])
        assert torch.equal(ops.conv2d_backward_input(gy[i:i + 1], w, list(xi.shape), *args),
                           first[1][i:i + 1])


def test_depthwise_channels_last_stays_channels_last():
    x, w, _ = _inputs(2, 24, 9, 9, 3, 3, torch.float32)
    x = x.contiguous(memory_format=torch.channels_last)
    out = conv_ext.conv2d(x, w, None, 1, 1, 1, 24)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, F.conv2d(x, w, None, 1, 1, 1, 24), rtol=1e-4, atol=1e-4)


# (N, C, multiplier, H, W, R, S, stride, padding, dilation)
MULTIPLIER_CASES = [
    (2, 5, 2, 9, 11, 3, 3, 1, 1, 1),
    (1, 4, 3, 12, 13, 5, 5, 2, 2, 1),
    (2, 3, 2, 7, 7, 3, 3, 1, 2, 2),
    (1, 6, 4, 14, 14, 3, 3, 2, 1, 1),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", MULTIPLIER_CASES, ids=str)
def test_depthwise_channel_multiplier(case, dtype, layout):
    N, C, m, H, W, R, S, stride, padding, dilation = case
    x = torch.randn(N, C, H, W, dtype=dtype)
    w = torch.randn(C * m, 1, R, S, dtype=dtype) / (R * S) ** 0.5
    b = torch.randn(C * m, dtype=dtype)
    assert torch.ops.conv_ext_debug.cpu_forward_path(x, w, [stride], [padding], [dilation], C) == "depthwise"
    compare_with_torch(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=C,
                       layout=layout)


def test_depthwise_channel_multiplier_gradcheck():
    x = torch.randn(1, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv_ext.conv2d(x, w, b, 2, 1, 1, 3),
                                    (x, w, b), fast_mode=True)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "3x3_s2_odd", "7x7_convnext_like", "narrow_37ch", "window_two_rows_odd",
    "skip_pad_rows_all_pad_rows")], ids=_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_depthwise_channels_last_strided_view(case, dtype):
    # Channels contiguous, other strides not: every other column of a
    # channels_last tensor twice as wide (the block copy's pixel strides).
    _, N, C, H, W, R, S, stride, padding, dilation = case
    x, w, b = _inputs(N, C, H, 2 * W, R, S, dtype)
    x = x.contiguous(memory_format=torch.channels_last)[..., ::2].requires_grad_()
    assert x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last)
    w.requires_grad_()
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=C)
    out = conv_ext.conv2d(x, w, b, **args)
    xc = x.detach().contiguous().requires_grad_()
    expected = F.conv2d(xc, w, b, **args)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out, expected, **tol)
    gy = torch.randn_like(expected)
    got = torch.autograd.grad(out, (x, w), gy)
    want = torch.autograd.grad(expected, (xc, w), gy)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, **tol)
