"""The fast CPU kernels, path by path, against F.conv2d (output and every
gradient) on shapes chosen to hit each path's special cases: channel tails
(K or C not a multiple of the SIMD width), odd widths, tiles spanning rows
and images, N=1, strides, dilation, the C split of large filters,
channels_last. Plus which path a shape takes, and bitwise reproducibility."""
import math

import pytest
import torch

import conv_ext
from helpers import compare_with_torch

ops = torch.ops.conv_ext
# Every test runs once per vector ISA the CPU has (conftest.cpu_isa).
pytestmark = pytest.mark.usefixtures("cpu_isa")


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v]


def path_of(x, w, stride=1, padding=0, dilation=1, groups=1):
    return torch.ops.conv_ext_debug.cpu_forward_path(x, w, _pair(stride), _pair(padding), _pair(dilation), groups)


# (name, N, C, H, W, K, R, S, stride, padding, dilation, groups, expected path)
CASES = [
    ("pointwise", 2, 16, 8, 8, 24, 1, 1, 1, 0, 1, 1, "pointwise"),
    ("pointwise_pixel_tail", 1, 5, 7, 9, 13, 1, 1, 1, 0, 1, 1, "pointwise"),
    ("pointwise_stride2", 2, 12, 9, 11, 10, 1, 1, 2, 0, 1, 1, "pointwise"),
    ("pointwise_stride_asym", 1, 9, 10, 7, 7, 1, 1, (3, 2), 0, 1, 1, "pointwise"),
    ("pointwise_padded", 1, 8, 6, 6, 9, 1, 1, 1, 1, 1, 1, "dense"),
    ("first_layer_7x7_s2", 2, 3, 23, 21, 20, 7, 7, 2, 3, 1, 1, "first_layer"),
    ("first_layer_c1", 1, 1, 12, 13, 5, 5, 5, 1, 2, 1, 1, "first_layer"),
    # Output rows of 32+ pixels (two vectors at the widest ISA): the
    # row-vectorized NCHW kernel (conv2d_first_layer_kernels.h) with channel
    # tails (K = 13, 20, 7), a part-filled last vector, column strides 2, 3, 5
    # (phase-split input), dilation, padding wider than the filter.
    ("first_layer_rows_7x7_s2", 2, 3, 9, 77, 13, 7, 7, 2, 3, 1, 1, "first_layer"),
    ("first_layer_rows_1d_s5", 2, 1, 1, 400, 20, 1, 10, (1, 5), 0, 1, 1, "first_layer"),
    ("first_layer_rows_dilated", 2, 2, 6, 95, 7, 3, 4, (2, 3), (1, 5), (2, 3), 1, "first_layer"),
    ("first_layer_rows_big_pad", 1, 4, 5, 50, 9, 3, 3, 1, 4, 1, 1, "first_layer"),
    # bands of 3 output rows (per-thread phase-split copies), the last one short
    ("first_layer_rows_bands", 1, 3, 70, 150, 8, 3, 3, 2, 1, 1, 1, "first_layer"),
    ("dense_3x3", 2, 16, 9, 11, 32, 3, 3, 1, 1, 1, 1, "dense"),
    ("dense_k_c_tails", 1, 19, 7, 7, 21, 3, 3, 1, 1, 1, 1, "dense"),
    ("dense_stride2", 2, 12, 11, 10, 17, 3, 3, 2, 1, 1, 1, "dense"),
    ("dense_dilated", 1, 10, 12, 12, 9, 3, 3, 1, 2, 2, 1, "dense"),
    ("dense_dilated_w_only", 2, 8, 9, 13, 8, 3, 3, (2, 1), (1, 0), (1, 2), 1, "dense"),
    ("dense_even_kernel_no_pad", 1, 11, 8, 9, 6, 2, 4, 1, 0, 1, 1, "dense"),
    ("dense_c_split", 1, 1200, 5, 4, 9, 3, 3, 1, 1, 1, 1, "dense"),  # weights over 640 KB: C chunks
    # Small planes under large padding or dilation: the pixels are tiled by
    # tap class and the taps that meet only padding are skipped
    # (choose_dense_tiling); rows and columns that read no image at all
    # (padding 4 > a 3-tap filter) are bias only.
    ("dense_dilated_small_plane", 2, 9, 7, 9, 20, 3, 3, 1, 5, 5, 1, "dense"),
    ("dense_pad_past_filter", 1, 10, 4, 5, 11, 3, 5, 1, (4, 3), (1, 2), 1, "dense"),
    ("dense_5x5_on_6x6", 3, 13, 6, 6, 18, 5, 5, 1, 2, 1, 1, "dense"),
    # whole 16 x 16 blocks and edges in the layout transposes (C and W past
    # two vectors), output blocks spanning images
    ("dense_wide_rows", 2, 35, 6, 40, 33, 3, 3, 1, 1, 1, 1, "dense"),
    # channels_last inputs (and grad_outputs) are read in place, every tap
    # that meets padding skipped (tiles by tap class on any plane): a large
    # plane with K tails, asymmetric stride and padding, grad-input phases
    # of stride 3 with padding 2, dilation with stride.
    ("dense_in_place_large_plane", 1, 24, 30, 33, 40, 3, 3, 1, 1, 1, 1, "dense"),
    ("dense_in_place_asym", 2, 16, 17, 12, 18, 3, 5, (2, 1), (1, 2), 1, 1, "dense"),
    ("dense_in_place_s3_pad2", 1, 9, 16, 14, 21, 5, 4, 3, 2, 1, 1, "dense"),
    ("dense_in_place_dilated_s2", 2, 12, 19, 15, 16, 5, 5, 2, 3, 2, 1, "dense"),
    ("depthwise_s1", 2, 12, 11, 13, 12, 3, 3, 1, 1, 1, 12, "depthwise"),
    ("depthwise_s2", 2, 10, 12, 41, 10, 3, 3, 2, 1, 1, 10, "depthwise"),
    ("depthwise_wide_rows", 1, 3, 5, 70, 3, 3, 3, 1, 1, 1, 3, "depthwise"),
    ("depthwise_tiny_plane", 1, 9, 7, 7, 9, 3, 3, 1, 1, 1, 9, "depthwise"),
    ("depthwise_5x5_dilated_s2", 2, 6, 13, 12, 6, 5, 5, 2, 2, 2, 6, "depthwise"),
    ("depthwise_asym", 1, 5, 10, 9, 5, 3, 2, (1, 3), (0, 2), (2, 1), 5, "depthwise"),
    ("grouped", 1, 8, 6, 6, 8, 3, 3, 1, 1, 1, 2, "grouped"),
    ("depthwise_multiplier", 1, 4, 6, 6, 8, 3, 3, 1, 1, 1, 4, "depthwise"),
]


def _case_id(case):
    return case[0]


def _weight(K, C_per_group, R, S, dtype=torch.float32):
    # Scaled by 1/sqrt(fan-in) so outputs are O(1) for every C: float32
    # rounding then stays well inside the tolerances even for C*R*S = 6300.
    return torch.randn(K, C_per_group, R, S, dtype=dtype) / math.sqrt(C_per_group * R * S)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_path_selection(case):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups, expected = case
    x = torch.randn(N, C, H, W)
    w = torch.randn(K, C // groups, R, S)
    assert path_of(x, w, stride, padding, dilation, groups) == expected
    # bfloat16 runs on the same kernels (converted to float32)
    assert path_of(x.to(torch.bfloat16), w.to(torch.bfloat16), stride, padding, dilation,
                   groups) == expected


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fast_path_matches_torch(case, dtype, layout):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups, _ = case
    x = torch.randn(N, C, H, W, dtype=dtype)
    w = _weight(K, C // groups, R, S, dtype)
    b = torch.randn(K, dtype=dtype)
    compare_with_torch(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                       layout=layout)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_fast_paths_on_strided_views(layout):
    # A non-contiguous input (every other column of a wider tensor) on every path.
    for case in CASES:
        _, N, C, H, W, K, R, S, stride, padding, dilation, groups, _ = case
        x = torch.randn(N, C, H, W)
        w = _weight(K, C // groups, R, S)
        compare_with_torch(x, w, None, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, layout=layout, check_grads=False)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "pointwise_stride2", "first_layer_c1", "dense_k_c_tails", "dense_dilated_w_only",
    "depthwise_s2", "depthwise_asym")], ids=_case_id)
def test_gradcheck_float64(case):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups, _ = case
    # Small spatial sizes keep the numerical Jacobian cheap.
    H, W = min(H, 7), min(W, 8)
    N = 1
    x = torch.randn(N, C, H, W, dtype=torch.float64, requires_grad=True)
    w = torch.randn(K, C // groups, R, S, dtype=torch.float64, requires_grad=True)
    b = torch.randn(K, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return conv_ext.conv2d(x, w, b, stride, padding, dilation, groups)

    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)


def test_first_layer_rows_gradcheck_and_batch_invariance():
    # Output rows of 19 float64 pixels: two vectors or more on every ISA, so
    # the row-vectorized kernel runs (the clamped shapes above are too narrow).
    x = torch.randn(2, 2, 3, 40, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return conv_ext.conv2d(x, w, b, (1, 2), (1, 0), (1, 1), 1)

    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, w, b), fast_mode=True)
    xs = torch.randn(5, 3, 11, 70)
    ws = torch.randn(13, 3, 3, 5)
    whole = ops.conv2d_forward(xs, ws, None, [2, 2], [1, 2], [1, 1], 1)
    for i in range(5):
        part = ops.conv2d_forward(xs[i:i + 1], ws, None, [2, 2], [1, 2], [1, 1], 1)
        assert torch.equal(whole[i:i + 1], part)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "pointwise", "first_layer_7x7_s2", "first_layer_rows_1d_s5", "first_layer_rows_bands",
    "dense_3x3", "dense_c_split",
    "dense_wide_rows", "dense_dilated_small_plane", "dense_5x5_on_6x6", "depthwise_s1")],
    ids=_case_id)
def test_bitwise_reproducible_across_runs_and_threads(case):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups, _ = case
    x = torch.randn(N, C, H, W)
    w = torch.randn(K, C // groups, R, S)
    args = (_pair(stride), _pair(padding), _pair(dilation), groups)
    gy = torch.randn_like(ops.conv2d_forward(x, w, None, *args))
    saved = torch.get_num_threads()

    def run():
        return (ops.conv2d_forward(x, w, None, *args),
                ops.conv2d_backward_input(gy, w, list(x.shape), *args),
                ops.conv2d_backward_weight(gy, x, list(w.shape), *args))

    try:
        first = run()
        again = run()
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(saved)
    for a, b, c in zip(first, again, single):
        assert torch.equal(a, b)
        assert torch.equal(a, c)


@pytest.mark.parametrize("case", [c for c in CASES if c[-1] == "dense"], ids=_case_id)
def test_channels_last_in_place_matches_padded_copy_bitwise(case):
    # A channels_last input / grad_output is read in place with the taps
    # over padding skipped; NCHW goes through a zero-padded copy where those
    # taps add exact zeros. Same products in the same order per output:
    # bitwise equal (finite data), at 1 and 3 threads, per image equal to
    # the batch.
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups, _ = case
    x = torch.randn(N, C, H, W)
    w = _weight(K, C // groups, R, S)
    b = torch.randn(K)
    args = (_pair(stride), _pair(padding), _pair(dilation), groups)
    gy = torch.randn_like(ops.conv2d_forward(x, w, None, *args))
    cl = torch.channels_last
    xc, wc, gyc = (t.contiguous(memory_format=cl) for t in (x, w, gy))

    def run(x, w, gy):
        return (ops.conv2d_forward(x, w, b, *args),
                ops.conv2d_backward_input(gy, w, list(x.shape), *args))

    saved = torch.get_num_threads()
    try:
        padded = run(x, w, gy)
        in_place = run(xc, wc, gyc)
        torch.set_num_threads(3)
        in_place3 = run(xc, wc, gyc)
    finally:
        torch.set_num_threads(saved)
    for a, c, c3 in zip(padded, in_place, in_place3):
        assert c.is_contiguous(memory_format=cl)
        assert torch.equal(a, c)
        assert torch.equal(c, c3)
    for i in range(N):
        fwd, gi = run(xc[i:i + 1], wc, gyc[i:i + 1])
        assert torch.equal(in_place[0][i:i + 1], fwd)
        assert torch.equal(in_place[1][i:i + 1], gi)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_dense_skipped_padding_taps_with_infinite_weights(layout):
    # The dense kernel leaves out taps that meet only zero padding on small
    # planes (choose_dense_tiling), as oneDNN's AVX-512 kernels do: an
    # infinite weight then gives +-inf where its tap meets the image and a
    # finite value (no inf * 0 = NaN) where it meets only padding, the same
    # at any thread count and batch split (the skipped set depends on the
    # pixel, not its tile). torch's own pattern depends on its backend
    # (oneDNN on AVX2 multiplies the padding in: NaN on the whole channel),
    # so the expected result is built here: the finite part from torch with
    # the infinite weights zeroed, the infinities from the taps' positions.
    x = torch.randn(3, 8, 9, 9)
    w = _weight(24, 8, 3, 3)
    infinite = [((5, 2, 0, 0), float("inf")), ((17, 7, 2, 1), float("-inf"))]
    finite_w = w.clone()
    for index, value in infinite:
        w[index] = value
        finite_w[index] = 0.0
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    pad = dil = 6
    args = ([1, 1], [pad, pad], [dil, dil], 1)
    expected = torch.nn.functional.conv2d(x, finite_w, None, 1, pad, dil)
    P, Q = expected.shape[2:]
    for (k, c, r, s), value in infinite:
        for oh in range(P):
            for ow in range(Q):
                ih, iw = oh - pad + r * dil, ow - pad + s * dil
                if 0 <= ih < 9 and 0 <= iw < 9:  # the tap meets the image
                    expected[:, k, oh, ow] = value * x[:, c, ih, iw].sign()
    assert expected.isinf().any() and not expected.isnan().any()
    out = ops.conv2d_forward(x, w, None, *args)
    assert not out.isnan().any()
    assert torch.equal(out.isinf(), expected.isinf())
    assert torch.equal(out[out.isinf()], expected[expected.isinf()])
    finite = expected.isfinite()
    torch.testing.assert_close(out[finite], expected[finite], rtol=1e-4, atol=1e-4)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.conv2d_forward(x, w, None, *args)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(out.nan_to_num(), single.nan_to_num())
    for i in range(3):
        part = ops.conv2d_forward(x[i:i + 1], w, None, *args)
        assert torch.equal(out[i:i + 1].nan_to_num(), part.nan_to_num())
