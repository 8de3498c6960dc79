"""The dense CPU grad-weight (conv2d_backward_weight_kernels.h) on shapes that
hit its cases: grad_output or the input as the vector operand (whichever
copy is smaller; none for a channels_last operand with whole vectors of
channels), tails of both operands, taps whose valid output range is empty
(padding larger than the filter), stride with dilation, chunks of whole
small images and bands of rows, non-contiguous operands. Against float64
torch, bitwise across thread counts, and float64 gradcheck."""
import pytest
import torch
import torch.nn.functional as F

import conv_ext

ops = torch.ops.conv_ext
# Every test runs once per vector ISA the CPU has (conftest.cpu_isa).
pytestmark = pytest.mark.usefixtures("cpu_isa")

# name: (N, C, H, W, K, R, S, stride, padding, dilation)
CASES = {
    # the strided layer's grad_output is the smaller copy: B = grad_output, K tail
    "stride2_b_grad_output": (2, 12, 11, 10, 17, 3, 3, 2, 1, 1),
    # 1x1 expansion: the input is the smaller copy (B = input, C tail), A = 40 channels
    "expansion_b_input": (2, 9, 7, 9, 40, 1, 1, 1, 0, 1),
    # A tiles of unequal size, both operands with tails
    "channel_tails": (1, 19, 7, 7, 21, 3, 3, 1, 1, 1),
    # padding past the filter: some taps reach no input in many output rows
    "padding_beyond_filter": (2, 10, 5, 6, 12, 2, 3, 1, (4, 3), 1),
    "strided_dilated": (2, 10, 12, 9, 13, 3, 2, (2, 1), (2, 0), (1, 2)),
    # 4-wide rows: a chunk is a band of rows of one image
    "tall_narrow_bands": (2, 8, 50, 4, 24, 3, 3, 1, 1, 1),
    # 20-pixel planes: a chunk spans 6 images, then 1
    "small_images": (7, 16, 4, 5, 16, 3, 3, 1, 1, 1),
    # B = input with 6 vectors (AVX-512): two groups of 3
    "vector_groups": (1, 96, 6, 7, 100, 3, 3, 1, 1, 1),
    # channels_last: the input serves as B in place (C whole vectors, K not)
    "input_in_place": (2, 32, 6, 7, 20, 3, 3, 1, 1, 1),
    # channels_last: grad_output serves as B in place
    "grad_output_in_place": (2, 16, 8, 8, 32, 3, 3, 1, 1, 1),
    # first layer (C < 8): the fused (s, c) tiles
    "first_layer": (2, 3, 15, 13, 20, 5, 5, 2, 2, 1),
    # NCHW first layers with rows of >= 2 vectors: the row tiles in place
    # (conv2d_first_layer_kernels.h), channel and tap tails, bands of rows,
    # a tail vector per row; dilated with per-axis stride; a 1-D waveform
    "first_layer_rows": (2, 3, 20, 75, 22, 3, 3, 2, 1, 1),
    "first_layer_rows_dilated": (1, 2, 17, 80, 7, 3, 4, (1, 2), (1, 3), (2, 3)),
    "first_layer_rows_1d": (2, 1, 1, 300, 16, 1, 9, 3, (0, 4), 1),
    # 70 (image, band) units (one band per image) in 64 chunks: 6 of 2 units
    "first_layer_rows_chunks": (70, 1, 8, 40, 5, 3, 3, 1, 1, 1),
    # rows of 19 pixels (a fifth of AVX2's 24 lanes idle): the NHWC path
    # (first_layer::weight_grad_fits), with the speech layers' 5 x 20 filter
    # and 2 x 8 stride
    "first_layer_short_rows": (2, 1, 10, 151, 8, 5, 20, (2, 8), (2, 8), 1),
    # 1x1 stride 1, K + C <= 256, NCHW operands (contiguous, and the channel-
    # strided grad_output of "strided"): the dot-product tiles in place.
    # k and c tiles of unequal size, 63 pixels (a partial vector per plane)
    "pointwise_pixel_tail": (2, 24, 7, 9, 20, 1, 1, 1, 0, 1),
    # planes of 6 pixels (less than a vector): a chunk spans many images
    "pointwise_small_planes": (9, 13, 2, 3, 11, 1, 1, 1, 0, 1),
    # 930-pixel planes: bands of whole vectors, the last with the tail
    "pointwise_bands": (2, 100, 30, 31, 90, 1, 1, 1, 0, 1),
    # fewer channels than one tile
    "pointwise_one_tile": (3, 8, 5, 5, 3, 1, 1, 1, 0, 1),
    # K + C > 256: the dense GEMM (B = the input's copy) on NCHW too
    "pointwise_wide_dense": (1, 9, 5, 6, 260, 1, 1, 1, 0, 1),
    # 1x1 with stride: a compact copy of the input pixels that meet
    # grad_output (in the input's layout), then the stride-1 problem. Many
    # input channels (the copy is B in NCHW; in place as B or A with
    # channels_last), odd planes, asymmetric stride with C and K tails
    "pointwise_s2_compact": (2, 1600, 6, 6, 80, 1, 1, 2, 0, 1),
    "pointwise_s2_odd": (3, 40, 13, 11, 72, 1, 1, 2, 0, 1),
    "pointwise_s23_tails": (1, 21, 9, 11, 19, 1, 1, (2, 3), 0, 1),
    # many output channels: A = grad_output (2000), B = the input's copy
    "pointwise_wide_k": (3, 80, 3, 3, 2000, 1, 1, 1, 0, 1),
    # chunks bounded by A and B bytes together (kWgradChunkBytes): a wide B
    # (grad_output of 2048 channels, 8 KB a pixel) cuts the plane into
    # bands of 5 rows; with 1040 channels and 3x3 taps, bands of 13 rows
    "wide_b_bands": (2, 64, 20, 23, 2048, 1, 1, 1, 0, 1),
    "wide_b_3x3": (1, 48, 13, 12, 1040, 3, 3, 1, 1, 1),
    # channels_last, both operands in place, the input the wider with pixels
    # 4 KB or more apart: the input is B, grad_output A (1x1 and 3x3)
    "wide_input_b": (2, 1024, 5, 6, 48, 1, 1, 1, 0, 1),
    "wide_input_b_3x3": (1, 1040, 4, 5, 32, 3, 3, 1, 1, 1),
    # 1x1 without padding, pixels 2 KB or more apart (kWgradPanelStrideBytes):
    # the operands copied into per-chunk panels, both where A is the
    # channels_last input ("channels_last"), B alone where A is an NCHW
    # grad_output ("mixed", "contiguous", when the vector width leaves the
    # input in place as B). Many A tiles (threads start mid-way through
    # them) with a channel tail; bands of rows; chunks of several small
    # images. ("wide_input_b" has A = grad_output, B = the 4 KB input.)
    "panels_many_tiles": (1, 520, 6, 7, 48, 1, 1, 1, 0, 1),
    "panels_bands": (1, 600, 20, 25, 40, 1, 1, 1, 0, 1),
    "panels_small_images": (9, 530, 3, 5, 24, 1, 1, 1, 0, 1),
    # NCHW: A (grad_output) in place along its planes, B (the input's NHWC
    # copy, 2 KB pixels) in panels; stride 2 through the compact copy
    "panels_b_only": (2, 520, 5, 6, 600, 1, 1, 1, 0, 1),
    "panels_b_only_s2": (2, 528, 7, 9, 520, 1, 1, 2, 0, 1),
}


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


def _tensors(case, dtype, layout):
    N, C, H, W, K, R, S, stride, padding, dilation = case
    args = (_pair(stride), _pair(padding), _pair(dilation), 1)
    x = torch.randn(N, C, H, W, dtype=dtype)
    w_shape = [K, C, R, S]
    y_shape = F.conv2d(x, torch.empty(w_shape, dtype=dtype), None, *args[:3]).shape
    gy = torch.randn(y_shape, dtype=dtype)
    if layout == "channels_last":
        x, gy = (t.contiguous(memory_format=torch.channels_last) for t in (x, gy))
    elif layout == "mixed":  # channels_last input, NCHW grad_output
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # every other column of wider tensors, every other channel of gy
        x = torch.randn(N, C, H, 2 * W, dtype=dtype)[..., ::2]
        gy = torch.randn(y_shape[0], 2 * y_shape[1], *y_shape[2:], dtype=dtype)[:, ::2]
    return x, gy, w_shape, args


def _reference(x, gy, w_shape, args):
    w = torch.zeros(w_shape, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x.double(), w, None, *args)
    return torch.autograd.grad(y, w, gy.double())[0]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "mixed", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_grad_weight_matches_torch(case, dtype, layout):
    x, gy, w_shape, args = _tensors(case, dtype, layout)
    gw = ops.conv2d_backward_weight(gy, x, w_shape, *args)
    assert gw.dtype == dtype and list(gw.shape) == w_shape
    want = _reference(x, gy, w_shape, args)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    scale = want.abs().max().item()
    assert (gw.double() - want).abs().max().item() <= tol * scale


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_grad_weight_bitwise_across_thread_counts(case, layout):
    x, gy, w_shape, args = _tensors(case, torch.float32, layout)
    saved = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(ops.conv2d_backward_weight(gy, x, w_shape, *args))
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        assert torch.equal(results[0], other)


@pytest.mark.parametrize("name", ["padding_beyond_filter", "strided_dilated", "expansion_b_input",
                                  "first_layer_rows",
                                  "pointwise_pixel_tail", "pointwise_bands",
                                  "pointwise_wide_k", "pointwise_s2_odd", "pointwise_s23_tails"])
def test_gradcheck_float64(name):
    N, C, H, W, K, R, S, stride, padding, dilation = CASES[name]
    # (first-layer rows keep 40 columns: rows of 2 vectors on either ISA)
    x = torch.randn(1, C, min(H, 7), min(W, 40 if name.startswith("first_layer") else 8),
                    dtype=torch.float64, requires_grad=True)
    w = torch.randn(K, C, R, S, dtype=torch.float64, requires_grad=True)

    def fn(x, w):
        return conv_ext.conv2d(x, w, None, stride, padding, dilation)

    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)


def test_first_layer_rows_ignore_columns_no_pixel_reads():
    # 48 columns, 3 taps at stride 2: 23 output pixels (AVX2: a tail of 7
    # lanes), and column 47 meets no output pixel. An inf there must not reach
    # the sums through the tail vector's spare lane.
    x = torch.randn(2, 3, 9, 48)
    x[..., 47] = float("inf")
    gy = torch.randn(2, 8, 4, 23)
    args = ([2, 2], [0, 0], [1, 1], 1)
    gw = ops.conv2d_backward_weight(gy, x, [8, 3, 3, 3], *args)
    assert torch.isfinite(gw).all()
    want = _reference(x[..., :47], gy, [8, 3, 3, 3], args)
    assert (gw.double() - want).abs().max().item() <= 1e-5 * want.abs().max().item()
