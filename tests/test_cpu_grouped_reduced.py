"""The grouped CPU fast path (2+ input channels per group: ResNeXt, RegNet,
ShuffleNet v1, vmap over weights) and bfloat16/float16 on the float32 fast
kernels, against F.conv2d and a float64 reference: forward, grad-input and
grad-weight; odd shapes, group tails (groups not a multiple of the groups
packed per vector), padding larger than the filter, dilation, strides,
non-contiguous inputs, channels_last; bitwise reproducibility across thread
counts and batch splits. bfloat16/float16 are widened inside the layout
copies and rounded once where the result leaves the float kernels: bitwise
the float32 result of the widened tensors, rounded (the conversions'
contract, on every path and output layout)."""
import math

import pytest
import torch
import torch.nn.functional as F

import conv_ext
from helpers import compare_with_torch, make_layout

ops = torch.ops.conv_ext
# Every test runs once per vector ISA the CPU has (conftest.cpu_isa).
pytestmark = pytest.mark.usefixtures("cpu_isa")


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v]


# (name, N, C, H, W, K, R, S, stride, padding, dilation, groups)
GROUPED = [
    ("g4_resnext", 2, 16, 9, 11, 16, 3, 3, 1, 1, 1, 4),           # 4 in / 4 out per group
    ("g32_c2_s2", 2, 64, 10, 9, 64, 3, 3, 2, 1, 1, 32),           # 2 per group, stride 2
    ("g5_k3_tail", 1, 10, 5, 7, 15, 3, 3, 1, 1, 1, 5),            # 5 groups: partial block
    ("g2_wide_k", 1, 6, 6, 5, 80, 3, 3, 1, 1, 1, 2),              # 40 out per group: vectors + tail
    ("g2_pad_gt_filter", 2, 8, 7, 9, 12, 3, 3, (2, 3), 4, 2, 2),  # padding 4 > filter, dilation 2
    ("g3_pointwise", 2, 24, 7, 6, 48, 1, 1, 1, 0, 1, 3),          # ShuffleNet v1 1x1
    ("g4_k1", 1, 8, 6, 7, 4, 3, 2, 1, (1, 0), 1, 4),              # 1 output channel per group
    ("g8_regnet_s2", 2, 64, 9, 9, 64, 3, 3, 2, 1, 1, 8),          # 8 per group (RegNet), stride 2
    ("g2_big_c", 1, 96, 5, 5, 34, 3, 3, 1, 1, 1, 2),              # 48 in, 17 out per group
    ("g6_asym", 1, 18, 8, 10, 12, 2, 3, (1, 2), (0, 1), (2, 1), 6),
    ("g4_wide_row", 1, 16, 5, 37, 16, 3, 3, 1, 1, 1, 4),          # rows of 2+ vectors and a tail
    ("g7_c3_k5", 1, 21, 6, 19, 35, 3, 3, 1, 1, 1, 7),             # odd per group, lane gaps
    ("g2_k32", 2, 32, 7, 9, 64, 3, 3, 1, 1, 1, 2),                # whole vectors: NHWC as is
    ("g16_c2_s2_dil", 2, 32, 9, 17, 32, 3, 3, 2, 2, 2, 16),       # 2 per group, stride, dilation
    ("g2_c64_big_plane", 1, 128, 24, 24, 128, 3, 3, 1, 1, 1, 2),  # planes split into row chunks
    ("g4_s2_pad0_odd", 1, 16, 13, 15, 16, 3, 3, 2, 0, 1, 4),      # stride 2, no padding, odd sizes
    ("g3_s3_k2", 2, 12, 11, 10, 9, 2, 2, 3, 0, 1, 3),             # stride > filter: gaps in grad-input
    ("g4_c16", 1, 64, 7, 8, 64, 3, 3, 1, 1, 1, 4),                # 16 per group: channel chunks
    ("g2_c24_s2", 1, 48, 6, 9, 48, 3, 3, 2, 1, 1, 2),             # 24 per group (RegNet width 24)
    ("g2_k32_7x7", 2, 64, 7, 7, 64, 3, 3, 1, 1, 1, 2),            # 49 pixels: short last tiles
    ("g4_k32_5x7", 1, 128, 5, 7, 128, 3, 3, 1, 1, 1, 4),          # 35 pixels, 4 blocks
    ("g8_c8_7x7", 2, 64, 7, 7, 64, 3, 3, 1, 1, 1, 8),             # 8 per group, short tiles
    ("g2_c128_shared_pack", 1, 256, 5, 4, 256, 3, 3, 1, 1, 1, 2),  # block > kBlockPackBytes
    # 1x1 with >= 16 channels per group: one pointwise GEMM per group (NCHW)
    ("g3_pw_wide", 2, 48, 7, 9, 96, 1, 1, 1, 0, 1, 3),            # K 32 per group: 6-row tail
    ("g2_pw_s2", 3, 64, 9, 8, 40, 1, 1, 2, 0, 1, 2),              # stride 2: grad-input grouped
    ("g4_pw_k16", 2, 80, 5, 5, 64, 1, 1, 1, 0, 1, 4),             # 20 in / 16 out, tiles span images
]


def _id(case):
    return case[0]


def _weight(K, Cg, R, S, dtype=torch.float32):
    return torch.randn(K, Cg, R, S, dtype=dtype) / math.sqrt(Cg * R * S)


@pytest.mark.parametrize("case", GROUPED, ids=_id)
def test_grouped_path_selected(case):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x, w = torch.randn(N, C, H, W), torch.randn(K, C // groups, R, S)
    args = (_pair(stride), _pair(padding), _pair(dilation), groups)
    assert torch.ops.conv_ext_debug.cpu_forward_path(x, w, *args) == "grouped"
    assert torch.ops.conv_ext_debug.cpu_forward_path(x.bfloat16(), w.bfloat16(), *args) == "grouped"


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", GROUPED, ids=_id)
def test_grouped_matches_torch(case, dtype, layout):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x = torch.randn(N, C, H, W, dtype=dtype)
    w = _weight(K, C // groups, R, S, dtype)
    b = torch.randn(K, dtype=dtype)
    compare_with_torch(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                       layout=layout)


@pytest.mark.parametrize("case", [c for c in GROUPED if c[0] in (
    "g4_resnext", "g5_k3_tail", "g2_pad_gt_filter", "g6_asym", "g3_s3_k2", "g3_pw_wide")], ids=_id)
def test_grouped_gradcheck_float64(case):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    H, W = min(H, 7), min(W, 7)
    x = torch.randn(1, C, H, W, dtype=torch.float64, requires_grad=True)
    w = torch.randn(K, C // groups, R, S, dtype=torch.float64, requires_grad=True)
    b = torch.randn(K, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return conv_ext.conv2d(x, w, b, stride, padding, dilation, groups)

    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)


def _three_ops(x, w, gy, args):
    return (ops.conv2d_forward(x, w, None, *args),
            ops.conv2d_backward_input(gy, w, list(x.shape), *args),
            ops.conv2d_backward_weight(gy, x, list(w.shape), *args))


@pytest.mark.parametrize("case", [c for c in GROUPED if c[0] in (
    "g4_resnext", "g32_c2_s2", "g2_wide_k", "g8_regnet_s2", "g4_wide_row", "g2_k32",
    "g2_c64_big_plane", "g2_pad_gt_filter", "g3_s3_k2", "g4_c16")],
    ids=_id)
def test_grouped_bitwise_across_threads_and_batch(case):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    N = 3
    x = torch.randn(N, C, H, W)
    w = torch.randn(K, C // groups, R, S)
    args = (_pair(stride), _pair(padding), _pair(dilation), groups)
    gy = torch.randn_like(ops.conv2d_forward(x, w, None, *args))
    saved = torch.get_num_threads()
    try:
        first = _three_ops(x, w, gy, args)
        torch.set_num_threads(1)
        single = _three_ops(x, w, gy, args)
    finally:
        torch.set_num_threads(saved)
    for a, b in zip(first, single):
        assert torch.equal(a, b)
    # Batch invariance: forward and grad-input of image i alone equal row i.
    for i in range(N):
        y_i, gx_i, _ = _three_ops(x[i:i + 1], w, gy[i:i + 1], args)
        assert torch.equal(y_i[0], first[0][i])
        assert torch.equal(gx_i[0], first[1][i])


# bfloat16 / float16: float32 accumulation, one rounding at the end, so each
# element is within half a unit in the last place (plus the float32 sum's
# own error) of the float64 result on the same rounded inputs.
REDUCED_CASES = [
    # (name, N, C, H, W, K, R, S, stride, padding, dilation, groups, path)
    ("dense", 2, 16, 9, 11, 24, 3, 3, 1, 1, 1, 1, "dense"),
    ("dense_s2_dil", 1, 12, 11, 10, 17, 3, 3, 2, 2, 2, 1, "dense"),
    ("pointwise", 2, 16, 8, 8, 24, 1, 1, 1, 0, 1, 1, "pointwise"),
    ("first_layer", 1, 3, 15, 13, 8, 7, 7, 2, 3, 1, 1, "first_layer"),
    ("depthwise", 2, 12, 11, 13, 12, 3, 3, 1, 1, 1, 12, "depthwise"),
    ("grouped", 2, 32, 9, 7, 32, 3, 3, 1, 1, 1, 8, "grouped"),
]
REL = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}


def _assert_one_rounding(got, want64, dtype):
    assert got.dtype == dtype
    scale = want64.abs().max().item()
    err = (got.double() - want64).abs()
    bound = REL[dtype] * want64.abs() + 1e-5 * scale
    assert bool((err <= bound).all()), f"max excess {(err - bound).max().item()}"


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", REDUCED_CASES, ids=_id)
def test_reduced_precision_on_fast_kernels(case, dtype, layout):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups, path = case
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(N, C, H, W).to(dtype).contiguous(memory_format=fmt)
    w = _weight(K, C // groups, R, S).to(dtype).contiguous(memory_format=fmt)
    args = (_pair(stride), _pair(padding), _pair(dilation), groups)
    assert torch.ops.conv_ext_debug.cpu_forward_path(x, w, *args) == path
    y = ops.conv2d_forward(x, w, None, *args)
    gy = torch.randn(y.shape).to(dtype)
    gx = ops.conv2d_backward_input(gy, w, list(x.shape), *args)
    gw = ops.conv2d_backward_weight(gy, x, list(w.shape), *args)
    x64, w64, gy64 = x.double().requires_grad_(), w.double().requires_grad_(), gy.double()
    y64 = F.conv2d(x64, w64, None, stride, padding, dilation, groups)
    gx64, gw64 = torch.autograd.grad(y64, (x64, w64), gy64)
    _assert_one_rounding(y, y64.detach(), dtype)
    _assert_one_rounding(gx, gx64, dtype)
    _assert_one_rounding(gw, gw64, dtype)
    assert y.is_contiguous(memory_format=fmt)


# bfloat16 / float16 are widened to float32 inside the layout copies and
# packing (not by a whole-tensor conversion first) and rounded once where the
# result leaves the float kernels (the NCHW transposes, the tiles' stores,
# the unpacking): the result must be bitwise the float32 kernels' result on
# the widened tensors, rounded to nearest even. Cases cover every copy that
# converts: padded NHWC (NCHW rows, channels_last rows, strided elements),
# the NCHW result written by the dense work items and by the separate pass
# (C split), the pointwise pixel-block copy (tiles spanning images, stride),
# the grouped interleaved copies (several groups per vector, one group per
# vector, channels_last result as the kernel's buffer), and the packings.
CONVERSION_CASES = [
    # (name, N, C, H, W, K, R, S, stride, padding, dilation, groups)
    ("dense_odd", 2, 19, 9, 11, 21, 3, 3, 1, 1, 1, 1),
    ("dense_s2_dil", 1, 12, 11, 10, 17, 3, 3, 2, 2, 2, 1),
    ("dense_wide_rows", 2, 16, 5, 37, 40, 3, 3, 1, 1, 1, 1),      # whole 16x16 blocks + tails
    ("dense_c_split", 2, 1200, 5, 6, 64, 3, 3, 1, 1, 1, 1),       # C chunks: NHWC then NCHW pass
    ("dense_asym", 1, 10, 8, 13, 9, 2, 5, (1, 2), (0, 3), (2, 1), 1),
    ("pointwise", 2, 16, 8, 8, 24, 1, 1, 1, 0, 1, 1),
    ("pointwise_7x7_span", 8, 40, 7, 7, 13, 1, 1, 1, 0, 1, 1),   # tiles spanning images
    ("pointwise_s2", 2, 24, 9, 11, 20, 1, 1, 2, 0, 1, 1),         # subsampled copy
    ("first_layer", 1, 3, 15, 13, 8, 7, 7, 2, 3, 1, 1),
    ("depthwise", 2, 12, 11, 13, 12, 3, 3, 1, 1, 1, 12),
    ("grouped_gb4", 2, 32, 9, 7, 32, 3, 3, 1, 1, 1, 8),
    ("grouped_tail", 1, 21, 6, 19, 35, 3, 3, 1, 1, 1, 7),
    ("grouped_k32", 2, 32, 7, 9, 64, 3, 3, 1, 1, 1, 2),           # whole vectors per group
    ("grouped_s2", 2, 64, 9, 9, 64, 3, 3, 2, 1, 1, 8),
]


# (bfloat16 forward on AMX tiles sums in another order: amx_off; test_cpu_amx.py)
@pytest.mark.usefixtures("amx_off")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CONVERSION_CASES, ids=_id)
def test_reduced_is_float32_rounded_once_bitwise(case, dtype, layout):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    args = (_pair(stride), _pair(padding), _pair(dilation), groups)
    x = make_layout(torch.randn(N, C, H, W).to(dtype), layout)
    w = make_layout(_weight(K, C // groups, R, S).to(dtype), layout)
    b = torch.randn(K).to(dtype)
    y = ops.conv2d_forward(x, w, b, *args)
    gy = make_layout(torch.randn(y.shape).to(dtype), layout)
    got = (y, ops.conv2d_backward_input(gy, w, list(x.shape), *args),
           ops.conv2d_backward_weight(gy, x, list(w.shape), *args))
    # Exact, and in the same layout: a strided view's .float() would be a
    # contiguous copy, which may take another path (the in-place 1x1
    # grad-weight needs contiguous pixels) and sum in another order.
    xf, wf, gyf = (make_layout(t.float(), layout) for t in (x, w, gy))
    want = (ops.conv2d_forward(xf, wf, b.float(), *args),
            ops.conv2d_backward_input(gyf, wf, list(x.shape), *args),
            ops.conv2d_backward_weight(gyf, xf, list(w.shape), *args))
    for name, g, f in zip(("forward", "grad_input", "grad_weight"), got, want):
        assert g.dtype == dtype, name
        assert torch.equal(g, f.to(dtype)), f"{name}: max diff {(g.float() - f).abs().max()}"
        fmt = torch.channels_last if f.is_contiguous(memory_format=torch.channels_last) and \
            not f.is_contiguous() else torch.contiguous_format
        assert g.is_contiguous(memory_format=fmt), name


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [c for c in CONVERSION_CASES if c[0] in (
    "dense_odd", "dense_c_split", "pointwise_7x7_span", "grouped_gb4", "grouped_k32")], ids=_id)
def test_reduced_bitwise_across_threads_and_batch(case, dtype, layout):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    N = 3
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    args = (_pair(stride), _pair(padding), _pair(dilation), groups)
    x = torch.randn(N, C, H, W).to(dtype).contiguous(memory_format=fmt)
    w = _weight(K, C // groups, R, S).to(dtype)
    gy = torch.randn_like(ops.conv2d_forward(x, w, None, *args))
    saved = torch.get_num_threads()
    try:
        first = _three_ops(x, w, gy, args)
        torch.set_num_threads(1)
        single = _three_ops(x, w, gy, args)
    finally:
        torch.set_num_threads(saved)
    for a, b in zip(first, single):
        assert torch.equal(a, b)
    for i in range(N):
        y_i, gx_i, _ = _three_ops(x[i:i + 1], w, gy[i:i + 1], args)
        assert torch.equal(y_i[0], first[0][i])
        assert torch.equal(gx_i[0], first[1][i])
