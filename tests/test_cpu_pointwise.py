"""The NCHW pointwise (1x1) forward (csrc/cpu/conv2d_pointwise_kernels.h):
pixel blocks of near-equal whole tiles, as many as a multiple of the thread
count, the block copy (runs of whole tiles within an image, tiles at image
edges and spanning images, the zero-filled last tile), channel and pixel
tails, N=1, strided inputs. Against torch, and bitwise the same at 1, 2 and 3
threads and for any batch split (each output element sums its C products in
one order whatever the blocking)."""
import math

import pytest
import torch

import conv_ext

from helpers import compare_with_torch

ops = torch.ops.conv_ext
pytestmark = pytest.mark.usefixtures("cpu_isa")

# (name, N, C, H, W, K, stride)
CASES = [
    ("c1_k1", 3, 1, 5, 7, 1, 1),
    ("tails", 2, 37, 9, 13, 45, 1),            # C, K (7 x 6 + 3) and pixel tails
    ("n1_small_plane", 1, 300, 7, 7, 50, 1),     # 49 pixels: one block, part tiles
    ("n1_blocks", 1, 1100, 14, 14, 20, 1),       # large C: 1-tile blocks, 13 tiles at AVX2
    ("spanning_7x7", 5, 64, 7, 7, 70, 1),        # tiles spanning images
    ("runs_and_edges", 3, 24, 17, 17, 13, 1),    # whole-tile runs + edge tiles per image
    ("wide_k", 2, 19, 6, 11, 100, 1),            # K groups of 8 tiles + tail
    ("stride2", 2, 33, 15, 13, 21, 2),           # compact subsampled copy
    ("stride_asym", 3, 10, 9, 20, 7, (2, 3)),
]


def _id(case):
    return case[0]


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


def _data(N, C, H, W, K, dtype=torch.float32):
    x = torch.randn(N, C, H, W, dtype=dtype)
    w = torch.randn(K, C, 1, 1, dtype=dtype) / math.sqrt(C)
    b = torch.randn(K, dtype=dtype)
    return x, w, b


def test_cases_take_the_pointwise_path():
    for _, N, C, H, W, K, stride in CASES:
        x, w, _ = _data(N, C, H, W, K)
        path = torch.ops.conv_ext_debug.cpu_forward_path(x, w, _pair(stride), [0, 0], [1, 1], 1)
        assert path == "pointwise"


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_pointwise_matches_torch(case, dtype, layout):
    _, N, C, H, W, K, stride = case
    x, w, b = _data(N, C, H, W, K, dtype)
    compare_with_torch(x, w, b, stride=stride, layout=layout, check_grads=False)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_pointwise_bitwise_across_threads_and_batch(case):
    _, N, C, H, W, K, stride = case
    x, w, b = _data(N, C, H, W, K)
    args = (_pair(stride), [0, 0], [1, 1], 1)
    saved = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(ops.conv2d_forward(x, w, b, *args))
            parts = [ops.conv2d_forward(x[i:i + 1], w, b, *args) for i in range(N)]
            assert torch.equal(torch.cat(parts), outs[0]), f"batch split, {threads} threads"
        torch.set_num_threads(2)
        if N > 2:
            assert torch.equal(torch.cat([ops.conv2d_forward(x[:2], w, b, *args),
                                          ops.conv2d_forward(x[2:], w, b, *args)]), outs[0])
    finally:
        torch.set_num_threads(saved)
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


@pytest.mark.usefixtures("amx_off")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "tails", "n1_blocks", "spanning_7x7", "runs_and_edges", "stride2")], ids=_id)
def test_pointwise_reduced_is_float32_rounded_once(case, dtype):
    # bfloat16/float16 are widened in the block copy and rounded once at the
    # tiles' stores: bitwise the float32 result rounded (AMX off: it sums in
    # another order).
    _, N, C, H, W, K, stride = case
    x, w, b = (t.to(dtype) for t in _data(N, C, H, W, K))
    args = (_pair(stride), [0, 0], [1, 1], 1)
    got = ops.conv2d_forward(x, w, b, *args)
    want = ops.conv2d_forward(x.float(), w.float(), b.float(), *args).to(dtype)
    assert got.dtype == dtype
    assert torch.equal(got, want)


# channels_last 1x1: the dense NHWC kernel on the input in place, its pixel
# blocks in super-blocks whose input stays in L2 while every channel group
# sweeps them (conv2d_dense_kernels.h: dense_forward's item order); grad-input
# the same kernel on grad_output in place, the pixels of phases without taps
# zeroed alone (stride 2). (name, N, C, H, W, K, stride)
CL_CASES = [
    ("cl_super_blocks", 3, 200, 23, 21, 150, 1),     # 6 super-blocks, the last short
    ("cl_super_blocks_s2", 2, 130, 31, 29, 70, 2),   # odd planes, stride 2, K tail
    ("cl_n1_odd", 1, 333, 17, 19, 90, 1),           # N = 1, C and K tails
    ("cl_asym_stride", 2, 48, 9, 14, 40, (1, 2)),   # empty column phases only
    ("cl_one_group", 2, 24, 5, 7, 16, 2),           # one channel group: no reordering
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CL_CASES, ids=_id)
def test_channels_last_pointwise_train_matches_torch(case, dtype):
    # forward, grad-input and grad-weight on fresh random channels_last tensors
    _, N, C, H, W, K, stride = case
    x, w, b = _data(N, C, H, W, K, dtype)
    compare_with_torch(x, w, b, stride=stride, layout="channels_last", check_grads=True)


@pytest.mark.parametrize("case", CL_CASES, ids=_id)
def test_channels_last_pointwise_bitwise_across_threads_and_batch(case):
    _, N, C, H, W, K, stride = case
    x, w, b = _data(N, C, H, W, K)
    cl = torch.channels_last
    x, w = x.contiguous(memory_format=cl), w.contiguous(memory_format=cl)
    args = (_pair(stride), [0, 0], [1, 1], 1)
    y = ops.conv2d_forward(x, w, b, *args)
    gy = torch.randn_like(y).contiguous(memory_format=cl)

    def passes(xs, gys):
        return (ops.conv2d_forward(xs, w, b, *args),
                ops.conv2d_backward_input(gys, w, list(xs.shape), *args),
                ops.conv2d_backward_weight(gys, xs, list(w.shape), *args))

    saved = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(passes(x, gy))
            fwd = torch.cat([ops.conv2d_forward(x[i:i + 1], w, b, *args) for i in range(N)])
            gin = torch.cat([ops.conv2d_backward_input(gy[i:i + 1], w, [1, C, H, W], *args)
                             for i in range(N)])
            assert torch.equal(fwd, results[0][0]), f"forward batch split, {threads} threads"
            assert torch.equal(gin, results[0][1]), f"grad-input batch split, {threads} threads"
    finally:
        torch.set_num_threads(saved)
    assert results[0][1].is_contiguous(memory_format=cl)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            assert torch.equal(got, want)


@pytest.mark.parametrize("stride", [1, 2])
def test_channels_last_pointwise_gradcheck_float64(stride):
    cl = torch.channels_last
    x = torch.randn(2, 20, 7, 9, dtype=torch.float64).contiguous(memory_format=cl)
    w = torch.randn(36, 20, 1, 1, dtype=torch.float64).contiguous(memory_format=cl)
    x.requires_grad_()
    w.requires_grad_()

    def fn(x, w):
        return conv_ext.conv2d(x, w, None, stride, 0, 1)

    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)
