"""conv2d_fused on the CPU with the epilogue in the kernels' store stage
(csrc/cpu/conv2d_epilogue_cpu.h): every store path (dense NCHW block
transpose, dense NHWC tiles, the C-chunked NHWC -> NCHW transpose, first
layer, pointwise tiles and their image-spanning copies, depthwise planes,
channel blocks NCHW and channels_last, the channels_last row kernel) and the
separate pass where a path cannot take it (grouped, channel multiplier > 1
with channels_last, bfloat16), each activation, residual before and after,
odd sizes, against the unfused reference: conv_ext's own conv2d_forward
(the same sums) with the epilogue applied by torch in the same dtype.
ReLU, ReLU6, scale/shift and the residual are compared bitwise; SiLU (float:
a vector exp), GELU (libm, lane by lane) and hardswish against torch's
vectorized formulas within a few ulp (1e-6 relative in float32). Results are identical across thread
counts."""
import pytest
import torch

from conv_ext.fused import ACTIVATIONS
from helpers import make_layout

EXACT = ("none", "relu", "relu6")

# name: (N, C, H, W, K, R, S, stride, padding, dilation, groups, expected CPU path)
CASES = {
    "dense": (2, 16, 9, 11, 20, 3, 3, 1, 1, 1, 1, "dense"),
    "dense_strided_tail": (3, 12, 10, 7, 9, 3, 3, 2, 1, 1, 1, "dense"),
    # 9 * 1200 * 32 floats of weights per tile column: over 640 KB, in C chunks on either ISA
    "dense_c_chunks": (1, 1200, 5, 6, 19, 3, 3, 1, 1, 1, 1, "dense"),
    "first_layer": (2, 3, 13, 12, 10, 5, 5, 2, 2, 1, 1, "first_layer"),
    # the row kernel (rows of >= 2 vectors): bands of rows, channel blocks with a tail
    "first_layer_rows": (2, 3, 20, 37, 14, 3, 3, 1, 1, 1, 1, "first_layer"),
    "pointwise": (3, 16, 7, 5, 20, 1, 1, 1, 0, 1, 1, "pointwise"),
    "pointwise_strided": (2, 12, 9, 9, 7, 1, 1, 2, 0, 1, 1, "pointwise"),
    "pointwise_large": (2, 24, 20, 21, 13, 1, 1, 1, 0, 1, 1, "pointwise"),
    "depthwise_planes": (2, 5, 40, 41, 5, 3, 3, 1, 1, 1, 5, "depthwise"),
    "depthwise_blocks": (2, 12, 10, 9, 12, 3, 3, 1, 1, 1, 12, "depthwise"),
    "depthwise_blocks_s2": (2, 11, 14, 13, 11, 3, 3, 2, 1, 1, 11, "depthwise"),
    "depthwise_5x5": (2, 13, 9, 8, 13, 5, 5, 1, 2, 1, 13, "depthwise"),
    "depthwise_multiplier": (2, 6, 9, 8, 12, 3, 3, 1, 1, 1, 6, "depthwise"),
    "grouped": (2, 8, 6, 7, 6, 3, 2, 1, 1, 1, 2, "grouped"),
}
# (scale and shift, residual, residual_before_activation)
EPILOGUES = [(False, False, True), (True, False, True), (True, True, True), (False, True, False),
             (True, True, False)]


def _operands(case, dtype, layout, seed=0):
    N, C, H, W, K, R, S, stride, padding, dilation, groups, _ = case
    g = torch.Generator().manual_seed(seed)
    x = make_layout(torch.randn(N, C, H, W, generator=g).to(dtype), layout)
    w = make_layout(torch.randn(K, C // groups, R, S, generator=g).to(dtype), layout)
    b = torch.randn(K, generator=g).to(dtype)
    scale = (torch.rand(K, generator=g) + 0.5).to(dtype)
    shift = torch.randn(K, generator=g).to(dtype)
    return x, w, b, scale, shift, (stride, padding, dilation, groups)


def _reference(y, scale, shift, residual, activation, before):
    """Epilogue<T>::apply in torch, in y's dtype, one operation at a time."""
    if scale is not None:
        y = y * scale.view(1, -1, 1, 1)
        y = y + shift.view(1, -1, 1, 1)
    if residual is not None and before:
        y = y + residual
    zero = torch.zeros((), dtype=y.dtype)
    if activation == "relu":
        y = torch.where(y < 0, zero, y)
    elif activation == "relu6":
        y = torch.where(y < 0, zero, torch.where(y > 6, zero + 6, y))
    else:
        y = ACTIVATIONS[activation](y)
    if residual is not None and not before:
        y = y + residual
    return y


def _fused(x, w, b, scale, shift, res, activation, before, conv):
    stride, padding, dilation, groups = conv
    return torch.ops.conv_ext.conv2d_fused(x, w, b, scale, shift, res, activation, before,
                                           [stride], [padding], [dilation], groups)


def _check(case, dtype, layout, activation):
    x, w, b, scale, shift, conv = _operands(case, dtype, layout)
    stride, padding, dilation, groups = conv
    path = torch.ops.conv_ext_debug.cpu_forward_path(x, w, [stride], [padding], [dilation], groups)
    assert path == case[-1]
    y = torch.ops.conv_ext.conv2d_forward(x, w, b, [stride], [padding], [dilation], groups)
    for with_scale, with_residual, before in EPILOGUES:
        res = make_layout(torch.randn(y.shape).to(dtype), layout) if with_residual else None
        s, t = (scale, shift) if with_scale else (None, None)
        got = _fused(x, w, b, s, t, res, activation, before, conv)
        want = _reference(y, s, t, res, activation, before)
        if layout == "channels_last":
            assert got.is_contiguous(memory_format=torch.channels_last)
        msg = f"{case} {activation} scale={with_scale} residual={with_residual} before={before}"
        if dtype in (torch.float32, torch.float64) and activation in EXACT:
            assert torch.equal(got, want), msg
        elif dtype == torch.float32:
            # Against the activation in float64: torch's own float32 GELU is
            # off by up to 1e-6 in the tail on some CPUs (its AVX-512 erf),
            # more than conv_ext's (4e-7).
            def f64(t):
                return None if t is None else t.double()
            want = _reference(y.double(), f64(s), f64(t), f64(res), activation, before)
            torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-6, msg=msg)
        else:
            tol = dict(atol=1e-13, rtol=1e-13) if dtype == torch.float64 else dict(atol=3e-2, rtol=3e-2)
            torch.testing.assert_close(got, want, **tol, msg=msg)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("name", list(CASES))
def test_store_epilogue_f32(name, activation, layout):
    _check(CASES[name], torch.float32, layout, activation)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", ["relu", "silu", "gelu"])
@pytest.mark.parametrize("name", ["dense", "dense_c_chunks", "first_layer", "first_layer_rows",
                                  "pointwise", "depthwise_planes", "depthwise_blocks",
                                  "depthwise_5x5"])
def test_store_epilogue_f64(name, activation, layout):
    _check(CASES[name], torch.float64, layout, activation)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", ["dense", "pointwise", "depthwise_blocks"])
def test_store_epilogue_bf16(name, layout):
    # bfloat16 keeps the separate pass (epilogue in float, one rounding).
    case = CASES[name]
    x, w, b, scale, shift, conv = _operands(case, torch.bfloat16, layout)
    y = torch.ops.conv_ext.conv2d_forward(x, w, b, [conv[0]], [conv[1]], [conv[2]], conv[3])
    res = make_layout(torch.randn(y.shape).to(torch.bfloat16), layout)
    got = _fused(x, w, b, scale, shift, res, "relu", True, conv)
    want = _reference(y.float(), scale.float(), shift.float(), res.float(), "relu", True)
    torch.testing.assert_close(got, want.to(torch.bfloat16), atol=0, rtol=0)


def test_residual_in_another_layout():
    # An NCHW residual for a channels_last output (and the reverse): read in the output's layout.
    for layout, other in (("channels_last", "contiguous"), ("contiguous", "channels_last")):
        case = CASES["dense"]
        x, w, b, scale, shift, conv = _operands(case, torch.float32, layout)
        y = torch.ops.conv_ext.conv2d_forward(x, w, b, [conv[0]], [conv[1]], [conv[2]], conv[3])
        res = make_layout(torch.randn(y.shape), other)
        got = _fused(x, w, b, scale, shift, res, "relu", True, conv)
        assert torch.equal(got, _reference(y, scale, shift, res, "relu", True))


@pytest.mark.parametrize("name", ["dense", "dense_c_chunks", "pointwise_large", "depthwise_planes",
                                  "depthwise_blocks", "first_layer"])
def test_store_epilogue_thread_invariant(name):
    case = CASES[name]
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for layout in ("contiguous", "channels_last"):
                x, w, b, scale, shift, conv = _operands(case, torch.float32, layout, seed=1)
                g = torch.Generator().manual_seed(2)
                y_shape = torch.ops.conv_ext.conv2d_forward(
                    x, w, b, [conv[0]], [conv[1]], [conv[2]], conv[3]).shape
                res = make_layout(torch.randn(y_shape, generator=g), layout)
                results.append(_fused(x, w, b, scale, shift, res, "silu", False, conv))
    finally:
        torch.set_num_threads(previous)
    for i, r in enumerate(results):
        assert torch.equal(r, results[i % 2]), f"{name}: {i // 2 + 1} threads"
