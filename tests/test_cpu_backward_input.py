"""The dense CPU grad-input at stride > 1 into NCHW
(conv2d_backward_input_kernels.h: every stride phase of a band of rows in
one work item, the phase filters packed in one pass, NCHW written from the
item's block): odd sizes, channel tails, phases without taps (1x1 stride 2,
stride past the dilated filter), padding past the filter, stride with
dilation, asymmetric strides, bands of rows within a plane and one band for
a small plane. Against float64 torch, bitwise across thread counts and
batch splits, float64 gradcheck; channels_last (the per-phase NHWC path) for
comparison."""
import pytest
import torch
import torch.nn.functional as F

import conv_ext

ops = torch.ops.conv_ext
# Every test runs once per vector ISA the CPU has (conftest.cpu_isa).
pytestmark = pytest.mark.usefixtures("cpu_isa")

# name: (N, C, H, W, K, R, S, stride, padding, dilation)
CASES = {
    # 3x3 stride 2, odd plane, C and K tails
    "s2_odd_tails": (2, 19, 11, 13, 21, 3, 3, 2, 1, 1),
    # 1x1 stride 2: three of four phases get no tap (zero)
    "pointwise_s2": (2, 24, 9, 11, 20, 1, 1, 2, 0, 1),
    # stride 3 past a 2-tap filter: empty phases along both axes
    "s3_empty_phases": (1, 10, 13, 14, 9, 2, 2, 3, 0, 1),
    # asymmetric stride and dilation, padding on one axis only
    "asymmetric": (2, 12, 12, 9, 13, 3, 2, (2, 1), (2, 0), (1, 2)),
    # padding past the filter
    "padding_beyond_filter": (1, 8, 9, 10, 11, 2, 3, 2, (3, 4), 1),
    # dilation with stride 2: every tap reaches every other phase
    "dilated_s2": (1, 9, 14, 15, 10, 3, 3, 2, 2, 2),
    # tall planes: several bands of rows per image, the last one short
    "bands": (2, 16, 61, 20, 24, 3, 3, 2, 1, 1),
    # more grad-input channels than one channel group (C past 2 or 4 vectors)
    "channel_groups": (1, 70, 10, 9, 12, 3, 3, 2, 1, 1),
    # 5x5 stride 2 on a plane smaller than the filter span
    "5x5_small_plane": (3, 8, 4, 5, 16, 5, 5, 2, 2, 1),
    # 1x1 stride 2, N = 1, odd plane, C tail: channels_last reads grad_output
    # in place and zeroes only the pixels of the phases without taps
    "pointwise_s2_n1_odd": (1, 33, 13, 9, 40, 1, 1, 2, 0, 1),
    # 1x1 with a stride on one axis: empty column phases only
    "pointwise_s1x2": (2, 17, 8, 7, 23, 1, 1, (1, 2), 0, 1),
}


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


def _tensors(case, dtype, layout="contiguous"):
    N, C, H, W, K, R, S, stride, padding, dilation = case
    args = (_pair(stride), _pair(padding), _pair(dilation), 1)
    x_shape = [N, C, H, W]
    w = torch.randn(K, C, R, S, dtype=dtype)
    y_shape = F.conv2d(torch.empty(x_shape, dtype=dtype), w, None, *args[:3]).shape
    gy = torch.randn(y_shape, dtype=dtype)
    if layout == "channels_last":
        gy, w = (t.contiguous(memory_format=torch.channels_last) for t in (gy, w))
    elif layout == "strided":  # every other channel of a wider grad_output, a transposed weight view
        gy = torch.randn(y_shape[0], 2 * y_shape[1], *y_shape[2:], dtype=dtype)[:, ::2]
        w = w.transpose(2, 3).contiguous().transpose(2, 3)
    return gy, w, x_shape, args


def _reference(gy, w, x_shape, args):
    x = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w.double(), None, *args)
    return torch.autograd.grad(y, x, gy.double())[0]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_grad_input_matches_torch(case, dtype, layout):
    gy, w, x_shape, args = _tensors(case, dtype, layout)
    gx = ops.conv2d_backward_input(gy, w, x_shape, *args)
    assert gx.dtype == dtype and list(gx.shape) == x_shape
    if layout != "channels_last":
        assert gx.is_contiguous()
    want = _reference(gy, w, x_shape, args)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    scale = want.abs().max().item()
    assert (gx.double() - want).abs().max().item() <= tol * scale


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_grad_input_bitwise_across_threads_and_batch(case):
    gy, w, x_shape, args = _tensors(case, torch.float32)
    saved = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(ops.conv2d_backward_input(gy, w, x_shape, *args))
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        assert torch.equal(results[0], other)
    for i in range(x_shape[0]):
        part = ops.conv2d_backward_input(gy[i:i + 1], w, [1] + x_shape[1:], *args)
        assert torch.equal(part[0], results[0][i])


@pytest.mark.parametrize("name", ["s2_odd_tails", "s3_empty_phases", "asymmetric", "dilated_s2"])
def test_gradcheck_float64(name):
    N, C, H, W, K, R, S, stride, padding, dilation = CASES[name]
    x = torch.randn(1, C, min(H, 9), min(W, 8), dtype=torch.float64, requires_grad=True)
    w = torch.randn(K, C, R, S, dtype=torch.float64, requires_grad=True)

    def fn(x, w):
        return conv_ext.conv2d(x, w, None, stride, padding, dilation)

    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)


# (bfloat16 at unit stride runs on vdpbf16ps where the CPU has it, another
# summation: amx_off keeps it on the float32 kernels; test_cpu_bf16_dense.py)
@pytest.mark.usefixtures("amx_off")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["s2_odd_tails", "pointwise_s2", "bands"])
def test_reduced_is_float32_rounded_once(name, dtype):
    gy, w, x_shape, args = _tensors(CASES[name], dtype)
    got = ops.conv2d_backward_input(gy, w, x_shape, *args)
    want = ops.conv2d_backward_input(gy.float(), w.float(), x_shape, *args)
    assert got.dtype == dtype
    assert torch.equal(got, want.to(dtype))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_nchw_bitwise_equals_channels_last(case):
    # The fused NCHW path runs the same tiles in the same order as the
    # per-phase NHWC path that channels_last takes.
    gy, w, x_shape, args = _tensors(case, torch.float32)
    nchw = ops.conv2d_backward_input(gy, w, x_shape, *args)
    cl = ops.conv2d_backward_input(gy.contiguous(memory_format=torch.channels_last),
                                   w.contiguous(memory_format=torch.channels_last), x_shape, *args)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nchw, cl)
