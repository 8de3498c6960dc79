"""The CUDA kernels of conv_ext, run on the CPU by emulation (see
tests/cuda_emulation): the same kernel headers, plans and host code as the
GPU build, compared against F.conv2d and its gradients. This is how CI (no
GPU) knows the CUDA kernels are right; tests/test_cuda.py repeats the
comparison on a real GPU where there is one.

Every kernel/tile the plan can choose is run, on shapes with ragged edges
at every tile boundary, for every dtype the CUDA ops support."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cases import CONFIGS, config_id
from helpers import TOLERANCES, make_layout


@pytest.fixture
def tile(emu, request):
    """Forces the dense kernels' tile for one test."""
    emu.force_tile(request.param)
    yield request.param
    emu.force_tile("")


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _conv_args(stride, padding, dilation, groups):
    return _pair(stride), _pair(padding), _pair(dilation), groups


def check_emulated(emu, x, w, b, stride=1, padding=0, dilation=1, groups=1, layout="contiguous"):
    """Emulated forward, grad-input and grad-weight against torch, on the
    same inputs in `layout`. Half types are compared with torch in float32
    on the same rounded inputs, as the kernels accumulate in float32."""
    dtype = x.dtype
    tol = TOLERANCES[dtype]
    args = _conv_args(stride, padding, dilation, groups)
    ref_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    x, w = make_layout(x, layout), make_layout(w, layout)
    xr, wr = x.to(ref_dtype), w.to(ref_dtype)
    br = b.to(ref_dtype) if b is not None else None

    out = emu.conv2d_forward(x, w, b, *args)
    expected = F.conv2d(xr, wr, br, *args)
    assert out.dtype == dtype and out.shape == expected.shape
    if layout == "channels_last" and x.shape[0] > 0:
        assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.to(ref_dtype), expected, **tol)

    grad_output = make_layout(torch.randn(expected.shape).to(dtype), layout)
    gyr = grad_output.to(ref_dtype)
    grad_input = emu.conv2d_backward_input(grad_output, w, list(x.shape), *args)
    grad_weight = emu.conv2d_backward_weight(grad_output, x, list(w.shape), *args)
    want_input = torch.nn.grad.conv2d_input(x.shape, wr, gyr, *args)
    want_weight = torch.nn.grad.conv2d_weight(xr, w.shape, gyr, *args)
    assert grad_input.dtype == dtype and grad_weight.dtype == dtype
    torch.testing.assert_close(grad_input.to(ref_dtype), want_input, **tol,
                               msg=lambda m: f"grad input: {m}")
    torch.testing.assert_close(grad_weight.to(ref_dtype), want_weight, **tol,
                               msg=lambda m: f"grad weight: {m}")
    return out, grad_input, grad_weight


def _random_problem(config, dtype):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = config
    x = torch.randn(N, C, H, W).to(dtype)
    w = torch.randn(K, C // groups, R, S).to(dtype)
    b = torch.randn(K).to(dtype)
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_torch(emu, config, dtype, layout):
    x, w, b, args = _random_problem(config, dtype)
    check_emulated(emu, x, w, b, **args, layout=layout)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_half_types_match_torch_in_float32(emu, config, dtype):
    x, w, b, args = _random_problem(config, dtype)
    check_emulated(emu, x, w, b, **args)


# Each dense tile on every config (the plan picks the small one for these
# sizes on its own), so the large tile's edges are exercised too.
@pytest.mark.parametrize("tile", ["small", "large", "huge"], indirect=True)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_each_tile_matches_torch(emu, tile, config):
    x, w, b, args = _random_problem(config, torch.float64)
    check_emulated(emu, x, w, b, **args)


# Sizes one off the tile sizes in every dimension: M (pixels), N (channels)
# and the reduction are each a multiple, one less and one more.
TAIL_CONFIGS = [
    # (N, C, H, W, K, R, S, stride, padding, dilation, groups)
    (1, 8, 4, 8, 32, 1, 1, 1, 0, 1, 1),     # M = 32, K = 32, reduction 8: exact small tiles
    (1, 9, 5, 7, 33, 1, 1, 1, 0, 1, 1),     # one over in reduction and K, M = 35
    (1, 7, 4, 8, 31, 3, 3, 1, 1, 1, 1),     # one under
    (2, 4, 8, 8, 64, 3, 3, 1, 1, 1, 1),     # M = 128, K = 64: exact large tiles
    (1, 5, 11, 12, 65, 3, 3, 1, 1, 1, 1),   # M = 132, K = 65
    (1, 66, 3, 5, 3, 1, 1, 1, 0, 1, 1),     # grad-input N = C = 66, grad-weight M = 66
    (1, 4, 9, 9, 70, 3, 3, 2, 1, 1, 2),     # groups with ragged channel tiles, stride 2
]


@pytest.mark.parametrize("tile", ["small", "large", "huge"], indirect=True)
@pytest.mark.parametrize("config", TAIL_CONFIGS, ids=config_id)
def test_tile_tails(emu, tile, config):
    x, w, b, args = _random_problem(config, torch.float32)
    check_emulated(emu, x, w, b, **args)


DEPTHWISE_FROM_CONFIGS = [c for c in CONFIGS if c[1] // c[10] == 1 and c[0] > 0]


@pytest.mark.parametrize("config", DEPTHWISE_FROM_CONFIGS, ids=config_id)
def test_depthwise_wide_index_path(emu, config):
    # The 64-bit index decoding that tensors of more than 2^31 elements take,
    # forced onto small problems (element-wise kernels, where it applies).
    assert DEPTHWISE_FROM_CONFIGS
    emu.force_wide_index(True)
    emu.force_tile("elementwise")
    try:
        x, w, b, args = _random_problem(config, torch.float64)
        check_emulated(emu, x, w, b, **args)
    finally:
        emu.force_wide_index(False)
        emu.force_tile("")


def _plan(emu, op, config):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = config
    return emu.describe_plan(op, [N, C, H, W], [K, C // groups, R, S],
                             *_conv_args(stride, padding, dilation, groups))


@pytest.mark.parametrize("op", ["forward", "backward_input", "backward_weight"])
def test_plan_picks_each_kernel_by_shape(emu, op):
    depthwise = (2, 32, 16, 16, 32, 3, 3, 1, 1, 1, 32)
    narrow = (2, 8, 10, 10, 16, 3, 3, 1, 1, 1, 1)
    # ResNet-50 sized: at least 128 large (64 channels) or huge (256) tiles per op.
    wide = (32, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1)
    widest = (32, 256, 28, 28, 256, 3, 3, 1, 1, 1, 1)
    assert _plan(emu, op, depthwise).startswith("depthwise")
    assert _plan(emu, op, narrow).startswith("gemm_small")
    assert _plan(emu, op, wide).startswith("gemm_large")
    assert _plan(emu, op, widest).startswith("gemm_huge")


def test_large_tile_chosen_by_shape_matches_torch(emu):
    # The smallest problem for which the plan itself picks the large tile
    # in the forward: 128 tiles of 128 pixels x 64 channels.
    config = (4, 3, 64, 64, 64, 3, 3, 1, 1, 1, 1)
    assert _plan(emu, "forward", config).startswith("gemm_large")
    x, w, b, args = _random_problem(config, torch.float32)
    out = emu.conv2d_forward(x, w, b, *_conv_args(**args))
    torch.testing.assert_close(out, F.conv2d(x, w, b, **args), **TOLERANCES[torch.float32])


def test_grad_weight_splits_the_reduction(emu):
    # A long reduction (N*P*Q) over few weights is split into chunks; the
    # result must not depend on the split.
    for config in [(4, 4, 20, 20, 4, 3, 3, 1, 1, 1, 1), (4, 4, 20, 20, 4, 3, 3, 1, 1, 1, 4)]:
        assert "splits=1 " not in _plan(emu, "backward_weight", config) + " "
        x, w, b, args = _random_problem(config, torch.float64)
        check_emulated(emu, x, w, b, **args)


@pytest.mark.parametrize("config", [(2, 6, 15, 13, 6, 3, 3, 1, 1, 1, 1),
                                    (3, 4, 20, 20, 8, 3, 3, 1, 1, 1, 4)], ids=config_id)
def test_grad_weight_is_bitwise_reproducible(emu, config):
    x, w, b, args = _random_problem(config, torch.float32)
    gy = torch.randn(F.conv2d(x, w, b, **args).shape)
    conv_args = _conv_args(**args)
    first = emu.conv2d_backward_weight(gy, x, list(w.shape), *conv_args)
    second = emu.conv2d_backward_weight(gy, x, list(w.shape), *conv_args)
    assert torch.equal(first, second)


def test_empty_batch_gives_zero_grad_weight(emu):
    x, w, b = torch.randn(0, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(5)
    out, grad_input, grad_weight = check_emulated(emu, x, w, b, padding=1)
    assert out.shape == (0, 5, 6, 6) and grad_input.shape == x.shape
    assert torch.equal(grad_weight, torch.zeros_like(w))


def test_zero_input_channels_give_bias(emu):
    x, w, b = torch.randn(2, 0, 5, 5), torch.randn(4, 0, 3, 3), torch.randn(4)
    out = emu.conv2d_forward(x, w, b, [1, 1], [1, 1], [1, 1], 1)
    torch.testing.assert_close(out, b.view(1, 4, 1, 1).expand(2, 4, 5, 5))


def test_bad_input_raises_like_the_cpu_op(emu):
    x, w = torch.randn(2, 4, 5, 5), torch.randn(3, 3, 3, 3)
    with pytest.raises(RuntimeError) as cpu_error:
        torch.ops.conv_ext.conv2d_forward(x, w, None, [1], [0], [1], 1)
    with pytest.raises(RuntimeError) as emu_error:
        emu.conv2d_forward(x, w, None, [1], [0], [1], 1)
    assert str(emu_error.value).splitlines()[0] == str(cpu_error.value).splitlines()[0]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(
    N=st.integers(1, 2), groups=st.integers(1, 3), c_per_group=st.integers(1, 4),
    k_per_group=st.integers(1, 5), H=st.integers(1, 10), W=st.integers(1, 10),
    R=st.integers(1, 4), S=st.integers(1, 4), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    tile=st.sampled_from(["", "small", "large", "huge"]),
)
def test_random_configs(emu, N, groups, c_per_group, k_per_group, H, W, R, S, stride, padding,
                        dilation, dtype, tile):
    # Keep only valid problems (kernel extent within the padded input).
    if H + 2 * padding[0] < dilation[0] * (R - 1) + 1 or W + 2 * padding[1] < dilation[1] * (S - 1) + 1:
        return
    emu.force_tile(tile)
    try:
        x = torch.randn(N, c_per_group * groups, H, W).to(dtype)
        w = torch.randn(k_per_group * groups, c_per_group, R, S).to(dtype)
        check_emulated(emu, x, w, torch.randn(k_per_group * groups).to(dtype), stride=stride,
                       padding=padding, dilation=dilation, groups=groups)
    finally:
        emu.force_tile("")


# Depthwise forward and grad-input: the tiled kernels (input tile + halo in shared memory,
# several planes per block for small planes) against the element-wise one and
# torch, on shapes that hit every tile shape and its edges.
DEPTHWISE_CONFIGS = [
    # (N, C, H, W, K, R, S, stride, padding, dilation, groups)
    (2, 6, 7, 7, 6, 3, 3, 1, 1, 1, 6),        # 8x8 threads, 4 planes per block, 12 planes
    (1, 5, 7, 7, 5, 3, 3, 1, 1, 1, 5),        # planes not a multiple of 4
    (1, 3, 14, 14, 3, 5, 5, 1, 2, 1, 3),      # 16x16 threads, 5x5
    (1, 2, 40, 37, 2, 3, 3, 1, 1, 1, 2),      # several tiles per plane, ragged in both
    (2, 3, 37, 41, 3, 3, 3, 2, 1, 1, 3),      # stride 2: smaller rows per thread to fit
    (1, 2, 30, 35, 4, 5, 5, 2, 2, 1, 2),      # 5x5 stride 2, channel multiplier 2
    (1, 2, 20, 21, 2, 3, 3, 1, 2, 2, 2),      # dilation 2
    (1, 2, 9, 33, 2, 2, 4, (1, 2), (0, 1), (2, 1), 2),  # asymmetric everything, generic taps
    (1, 2, 3, 5, 2, 1, 1, 1, 0, 1, 2),        # 1x1 depthwise, tiny plane
]


@pytest.mark.parametrize("tile", ["", "elementwise"], indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", DEPTHWISE_CONFIGS, ids=config_id)
def test_depthwise_tiled_and_elementwise(emu, tile, dtype, config):
    x, w, b, args = _random_problem(config, dtype)
    if tile == "":
        assert _plan(emu, "forward", config).startswith("depthwise_tiled")
        assert _plan(emu, "backward_input", config).startswith("depthwise_tiled")
    check_emulated(emu, x, w, b, **args)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_depthwise_tiled_half_types(emu, dtype):
    x, w, b, args = _random_problem((2, 4, 15, 17, 4, 3, 3, 2, 1, 1, 4), dtype)
    check_emulated(emu, x, w, b, **args)


def test_depthwise_falls_back_when_the_tile_cannot_fit(emu):
    # A dilation this large makes the staged tile exceed shared memory.
    config = (1, 2, 60, 60, 2, 3, 3, 1, 40, 40, 2)
    assert _plan(emu, "forward", config).startswith("depthwise ")
    assert _plan(emu, "backward_input", config).startswith("depthwise ")
    x, w, b, args = _random_problem(config, torch.float64)
    check_emulated(emu, x, w, b, **args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 72, 9, 15), (3, 65, 1, 67), (2, 130, 8, 9)],
                         ids=str)
def test_memory_format_copy_is_exact(emu, shape, dtype):
    # The transpose kernel behind the CUDA backends' NCHW <-> channels_last
    # copies: exact both ways, partial tiles on both axes included.
    x = torch.randn(shape).to(dtype)
    cl = emu.to_memory_format(x, True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, x)
    back = emu.to_memory_format(cl, False)
    assert back.is_contiguous() and torch.equal(back, x)
    # Views that are neither layout take torch's copy, also exact.
    view = x[:, :, ::2]
    assert torch.equal(emu.to_memory_format(view, True), view)
