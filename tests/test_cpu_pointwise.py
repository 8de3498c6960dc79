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
