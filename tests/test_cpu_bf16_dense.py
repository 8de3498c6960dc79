"""The bfloat16 dense / first-layer / pointwise forward on AVX512-BF16
(vdpbf16ps: csrc/cpu/conv2d_cpu_avx512bf16.h, conv2d_cpu_kernels_avx512bf16.cpp).
Each case runs with it on (skipped with the reason on CPUs without
AVX512-BF16) and off (the float32 kernels with widening copies): against
float64 on the same bf16 values within the bound of float32 accumulation
plus one rounding to bf16, and against torch's own bf16 F.conv2d within
about one bf16 ulp. Odd C (the zero pair channel), K not a multiple of 16,
strides, padding, dilation along either axis (the unfused (s, pair) loop),
1x1, 3x3, 7x7/2 with C = 3, N = 0/1/3, NCHW / channels_last / strided
operands, bias or not; bitwise identical across thread counts 1/2/3, runs
and batch splits. The same for the unit-stride grad-input and the 1x1
stride-1 grad-weight (pixel pairs), against float64."""
import contextlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import conv_ext
from helpers import (assert_bf16_grad_input_within_one_rounding,
                     assert_bf16_within_one_rounding,
                     assert_bitwise_across_threads_runs_and_batch, check_bf16_gradients,
                     make_layout, pair)

debug = torch.ops.conv_ext_debug
ops = torch.ops.conv_ext
HAS_BF16_DOT = debug.cpu_bf16_dot_supported()
NO_BF16_DOT = "this CPU lacks AVX512-BF16 (vdpbf16ps)"


@contextlib.contextmanager
def dot_mode(on):
    """vdpbf16ps on (the avx512 kernels active, AMX off so that it is the one
    that runs) or off (the float32 kernels; AMX off too)."""
    previous_isa = debug.set_cpu_isa("avx512") if on else None
    previous_amx = debug.set_cpu_amx(False)
    previous = debug.set_cpu_bf16_dot(on)
    try:
        yield
    finally:
        debug.set_cpu_bf16_dot(previous)
        debug.set_cpu_amx(previous_amx)
        if previous_isa is not None:
            debug.set_cpu_isa(previous_isa)


@pytest.fixture(params=["bf16_dot", "float32_kernels"])
def mode(request):
    if request.param == "bf16_dot" and not HAS_BF16_DOT:
        pytest.skip(NO_BF16_DOT)
    with dot_mode(request.param == "bf16_dot"):
        yield request.param


@pytest.fixture
def dot_on():
    if not HAS_BF16_DOT:
        pytest.skip(NO_BF16_DOT)
    with dot_mode(True):
        yield


# (name, N, C, H, W, K, R, S, stride, padding, dilation)
CASES = [
    ("3x3_whole", 2, 64, 10, 12, 64, 3, 3, 1, 1, 1),
    ("3x3_odd_c_k", 3, 19, 9, 11, 21, 3, 3, 1, 1, 1),        # pair channel, K tail
    ("3x3_c40_k50", 1, 40, 7, 9, 50, 3, 3, 1, 1, 1),
    ("3x3_k200", 1, 128, 6, 7, 200, 3, 3, 1, 1, 1),          # 4 channel groups, last 1 vector
    ("3x3_s2", 2, 24, 13, 12, 40, 3, 3, 2, 1, 1),
    ("3x3_s3_dil2", 1, 33, 17, 16, 17, 3, 3, 3, 2, 2),
    ("dil_w2", 2, 9, 11, 12, 20, 3, 3, 1, 2, (1, 2)),        # unfused (s, pair) loop
    ("asym", 1, 10, 8, 13, 9, 2, 5, (1, 2), (0, 3), (2, 1)),
    ("pad_gt_filter", 2, 16, 5, 6, 18, 2, 2, 1, 3, 1),
    ("5x5_wide_row", 1, 32, 4, 70, 32, 5, 5, 1, 2, 1),
    ("7x7_s2_c3", 2, 3, 23, 21, 64, 7, 7, 2, 3, 1),          # first layer, C odd
    ("3x3_c1", 1, 1, 9, 9, 16, 3, 3, 1, 1, 1),
    ("3x3_c512", 1, 512, 4, 4, 32, 3, 3, 1, 1, 1),
    ("one_pixel", 3, 48, 3, 3, 20, 3, 3, 1, 0, 1),
    ("1x1", 3, 48, 7, 7, 33, 1, 1, 1, 0, 1),                 # pointwise path
    ("1x1_s2", 2, 64, 9, 11, 24, 1, 1, 2, 0, 1),
    ("1x1_k100_c70", 1, 70, 5, 6, 100, 1, 1, 1, 0, 1),
    ("1x1_c7", 2, 7, 6, 5, 17, 1, 1, 1, 0, 1),
    ("1x1_s2_wide", 2, 41, 13, 70, 36, 1, 1, 2, 0, 1),      # rows of 35: runs across blocks
    ("1x1_s21", 3, 9, 7, 9, 20, 1, 1, (2, 1), 0, 1),
    ("1x1_s12", 1, 16, 5, 33, 16, 1, 1, (1, 2), 0, 1),
    ("1x1_s3", 1, 16, 10, 10, 16, 1, 1, 3, 0, 1),            # stride_w 3: the NHWC tile
]


def _id(case):
    return case[0]


def _make(case, layout, bias=True, n=None):
    _, N, C, H, W, K, R, S, stride, padding, dilation = case
    N = N if n is None else n
    x = make_layout(torch.randn(N, C, H, W).bfloat16(), layout)
    w = make_layout((torch.randn(K, C, R, S) / (C * R * S) ** 0.5).bfloat16(), layout)
    b = torch.randn(K).bfloat16() if bias else None
    args = (pair(stride), pair(padding), pair(dilation), 1)
    return x, w, b, args


def _assert_within_one_rounding(y, x, w, b, args):
    # C + 1 channels: the zero channel that pads odd C to whole pairs.
    assert_bf16_within_one_rounding(y, x, w, b, args, summed_channels=w.shape[1] + 1)


def _assert_near_torch(y, x, w, b, args):
    """torch's bf16 result (oneDNN: float32 accumulation, one rounding): at
    most one bf16 ulp apart, plus float32 summation noise where the sum cancels."""
    stride, padding, dilation, _ = args
    ref = F.conv2d(x, w, b, stride, padding, dilation)
    magnitude = F.conv2d(x.double().abs(), w.double().abs(),
                         b.double().abs() if b is not None else None, stride, padding, dilation)
    terms = (w.shape[1] + 1) * w.shape[2] * w.shape[3] + 1
    diff = (y.double() - ref.double()).abs()
    bound = 2.0 ** -7 * ref.double().abs() + 2 * terms * 2.0 ** -24 * magnitude
    assert bool((diff <= bound).all()), f"max excess {(diff - bound).max().item()}"


def test_taken_where_expected():
    x, w = torch.randn(2, 32, 8, 8).bfloat16(), torch.randn(32, 32, 3, 3).bfloat16()
    args = ([1, 1], [1, 1], [1, 1], 1)
    uses = lambda x, w, args=args: debug.cpu_forward_uses_bf16_dot(x, w, *args)  # noqa: E731
    with dot_mode(False):
        assert not debug.cpu_bf16_dot()
        assert not uses(x, w)
    if not HAS_BF16_DOT:
        pytest.skip(NO_BF16_DOT)
    with dot_mode(True):
        assert debug.cpu_bf16_dot()
        assert uses(x, w)                                                 # 3x3 dense
        assert uses(x, w[:, :, :1, :1], ([2, 2], [0, 0], [1, 1], 1))       # pointwise, stride 2
        assert uses(x[:, :3], w[:, :3])                                   # first layer (C < 8)
        assert not uses(x.half(), w.half())
        assert not uses(x.float(), w.float())
        assert not uses(x, w[:, :8], ([1, 1], [1, 1], [1, 1], 4))          # grouped
        previous = debug.set_cpu_isa("avx2")                              # needs the avx512 copy
        try:
            assert not debug.cpu_bf16_dot() and not uses(x, w)
        finally:
            debug.set_cpu_isa(previous)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_float64_and_torch(mode, case, layout):
    x, w, b, args = _make(case, layout, bias=case[0] not in ("1x1", "3x3_odd_c_k"))
    assert debug.cpu_forward_uses_bf16_dot(x, w, *args) == (mode == "bf16_dot")
    y = ops.conv2d_forward(x, w, b, *args)
    assert y.dtype == torch.bfloat16
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    if case[2] > 1:  # (a C = 1 input is NCHW and channels_last at once: the op picks NCHW)
        assert y.is_contiguous(memory_format=fmt)
    _assert_within_one_rounding(y, x, w, b, args)
    _assert_near_torch(y, x, w, b, args)


@pytest.mark.parametrize("n", [0, 1])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_small_batches(mode, n, layout):
    for case in (CASES[1], CASES[10], CASES[14]):
        x, w, b, args = _make(case, layout, n=n)
        y = ops.conv2d_forward(x, w, b, *args)
        want = F.conv2d(x, w, b, *args[:3])
        assert y.shape == want.shape and y.dtype == torch.bfloat16
        if n:
            _assert_within_one_rounding(y, x, w, b, args)


def test_channels_last_input_with_nchw_weight(mode):
    x, w, b, args = _make(CASES[1], "channels_last")
    w = w.contiguous()
    y = ops.conv2d_forward(x, w, b, *args)
    _assert_within_one_rounding(y, x, w, b, args)
    assert torch.equal(y.contiguous(), ops.conv2d_forward(x.contiguous(), w, b, *args))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "3x3_odd_c_k", "3x3_k200", "3x3_s2", "dil_w2", "asym", "5x5_wide_row", "7x7_s2_c3",
    "1x1_k100_c70", "1x1_s2_wide", "1x1_s21")], ids=_id)
def test_bitwise_across_threads_runs_and_batch(mode, case, layout):
    x, w, b, args = _make(case, layout, n=3)
    assert_bitwise_across_threads_runs_and_batch(lambda x: ops.conv2d_forward(x, w, b, *args), x)


def test_autograd_gradients(mode):
    x, w, b, args = _make(CASES[1], "contiguous")
    check_bf16_gradients(x, w, b, args, summed_channels=w.shape[1] + 1)


def test_bf16_dot_and_float32_kernels_agree_closely(dot_on):
    x, w, b, args = _make(CASES[0], "contiguous")
    on = ops.conv2d_forward(x, w, b, *args)
    with dot_mode(False):
        off = ops.conv2d_forward(x, w, b, *args)
    # Other roundings inside the sums, one bf16 rounding each: an ulp or two apart.
    torch.testing.assert_close(on.float(), off.float(), rtol=2.0 ** -7, atol=1e-3)


def test_switching_on_without_avx512_bf16_is_an_error():
    if HAS_BF16_DOT:
        pytest.skip("this CPU has AVX512-BF16")
    with pytest.raises(RuntimeError, match="AVX512-BF16 forward was asked for"):
        debug.set_cpu_bf16_dot(True)


@pytest.mark.parametrize("env", [{"CONV_EXT_CPU_BF16_DOT": "0"}, {"CONV_EXT_CPU_ISA": "avx2"}],
                         ids=["bf16_dot_0", "isa_avx2"])
def test_environment_variables_switch_it_off(env):
    code = textwrap.dedent("""
        import torch, conv_ext
        d = torch.ops.conv_ext_debug
        x, w = torch.randn(1, 32, 6, 6).bfloat16(), torch.randn(16, 32, 3, 3).bfloat16()
        print(d.cpu_bf16_dot(), d.cpu_forward_uses_bf16_dot(x, w, [1, 1], [1, 1], [1, 1], 1))
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(conv_ext.__file__)))
    full = dict(os.environ)
    full.pop("CONV_EXT_CPU_ISA", None)
    full.pop("CONV_EXT_CPU_BF16_DOT", None)
    full.update(env)
    full["PYTHONPATH"] = root + os.pathsep + full.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def _cpu_vendor():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("vendor_id"):
                return line.split(":")[1].strip()
    return ""


@pytest.mark.parametrize("env", [None, "1"], ids=["unset", "bf16_dot_1"])
def test_default_on_where_it_pays(env):
    """On by default on AMD CPUs only (on an Intel Xeon vdpbf16ps ran slower
    than the float32 kernels); CONV_EXT_CPU_BF16_DOT=1 switches it on anywhere
    it is supported."""
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("needs /proc/cpuinfo for the vendor")
    code = "import torch, conv_ext; print(torch.ops.conv_ext_debug.cpu_bf16_dot())"
    root = os.path.dirname(os.path.dirname(os.path.abspath(conv_ext.__file__)))
    full = dict(os.environ)
    full.pop("CONV_EXT_CPU_ISA", None)
    full.pop("CONV_EXT_CPU_BF16_DOT", None)
    if env is not None:
        full["CONV_EXT_CPU_BF16_DOT"] = env
    full["PYTHONPATH"] = root + os.pathsep + full.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    want = HAS_BF16_DOT and (env == "1" or _cpu_vendor() == "AuthenticAMD")
    assert result.stdout.split() == [str(want)]


# (name, N, C, H, W, K, R, S, stride, padding, dilation): grad-input cases;
# unit stride runs the forward kernel on grad_output (rotated filter), larger
# strides one forward per stride phase (conv2d_cpu_ops.cpp:
# bf16_tile_backward_input).
GRAD_INPUT_CASES = [
    ("3x3", 2, 24, 9, 11, 40, 3, 3, 1, 1, 1),
    ("3x3_odd_k", 3, 21, 8, 7, 19, 3, 3, 1, 1, 1),              # K odd: the pair channel
    ("5x3_dil", 1, 17, 12, 10, 33, (5, 3), None, 1, (3, 1), (1, 2)),
    ("pad0", 2, 16, 7, 8, 20, 3, 3, 1, 0, 1),
    ("1x1", 2, 48, 6, 5, 36, 1, 1, 1, 0, 1),
    ("3x3_s2", 2, 16, 9, 10, 24, 3, 3, 2, 1, 1),                # 4 phases
    ("3x3_s3_dil2", 1, 9, 17, 16, 17, 3, 3, 3, 2, 2),           # 9 phases, dilation
    ("1x1_s2", 2, 20, 9, 11, 24, 1, 1, 2, 0, 1),                # 3 of 4 phases: no tap
    ("2x5_s12", 1, 10, 8, 13, 9, (2, 5), None, (1, 2), (0, 3), (2, 1)),  # phases on one axis
    ("7x7_s2_k3", 2, 8, 15, 13, 3, 7, 7, 2, 3, 1),              # K < 8: first-layer kernel
]


def _assert_same_at_thread_counts(compute, want, threads=(1, 3)):
    saved = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            assert torch.equal(compute(), want)
    finally:
        torch.set_num_threads(saved)


def _grad_input_tensors(case, layout):
    _, N, C, H, W, K, R, S, stride, padding, dilation = case
    if S is None:
        R, S = R
    args = (pair(stride), pair(padding), pair(dilation), 1)
    x_shape = [N, C, H, W]
    y = F.conv2d(torch.zeros(N, C, H, W), torch.zeros(K, C, R, S), None, *args[:3])
    gy = make_layout(torch.randn(y.shape).bfloat16(), layout)
    w = make_layout((torch.randn(K, C, R, S) / (K * R * S) ** 0.5).bfloat16(), layout)
    return gy, w, x_shape, args


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", GRAD_INPUT_CASES, ids=_id)
def test_grad_input_matches_float64(mode, case, layout):
    gy, w, x_shape, args = _grad_input_tensors(case, layout)
    got = ops.conv2d_backward_input(gy, w, x_shape, *args)
    assert got.dtype == torch.bfloat16 and list(got.shape) == x_shape
    assert_bf16_grad_input_within_one_rounding(got, gy, w, x_shape, args)
    _assert_same_at_thread_counts(lambda: ops.conv2d_backward_input(gy, w, x_shape, *args), got)
    one = ops.conv2d_backward_input(gy[:1], w, [1] + x_shape[1:], *args)
    assert torch.equal(one, got[:1])


# grad-weight of 1x1 stride-1 layers on vdpbf16ps (pixel pairs):
# (name, N, C, H, W, K)
GRAD_WEIGHT_CASES = [
    ("whole", 2, 64, 6, 8, 64),
    ("c_k_tails", 3, 19, 4, 6, 21),      # C not a multiple of 6, K of 16
    ("odd_pixels", 3, 20, 5, 7, 40),     # N*H*W odd: a zero pixel
    ("k200_c70", 1, 70, 4, 4, 200),      # channel groups of 4, 4, 4, 1 vectors
    ("chunks", 4, 8, 48, 48, 16),        # 4608 pixel pairs: several chunks of the reduction
    ("one_pixel", 1, 12, 1, 1, 17),
    # NCHW operands are taken where K + C > 256:
    ("nchw_even_plane", 2, 130, 6, 8, 140),
    ("nchw_odd_plane", 3, 100, 5, 7, 200),  # pairs and 32-pixel runs across images, M odd
    ("nchw_7x7", 2, 150, 7, 7, 120),
]


def _grad_weight_tensors(case, layout):
    _, N, C, H, W, K = case
    x = make_layout(torch.randn(N, C, H, W).bfloat16(), layout)
    gy = make_layout(torch.randn(N, K, H, W).bfloat16(), layout)
    return gy, x, [K, C, 1, 1]


def _assert_grad_weight_within_one_rounding(got, gy, x, w_shape, stride=1):
    """One bf16 rounding + float32 summation of the N*P*Q (+ 1) terms."""
    exact = torch.nn.grad.conv2d_weight(x.double(), w_shape, gy.double(), stride)
    magnitude = torch.nn.grad.conv2d_weight(x.double().abs(), w_shape, gy.double().abs(), stride)
    terms = gy.shape[0] * gy.shape[2] * gy.shape[3] + 1
    bound = 2.0 ** -8 * exact.abs() + terms * 2.0 ** -24 * magnitude
    err = (got.double() - exact).abs()
    assert got.dtype == torch.bfloat16 and got.shape == exact.shape
    assert bool((err <= bound).all()), f"max excess {(err - bound).max().item()}"


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", GRAD_WEIGHT_CASES, ids=_id)
def test_pointwise_grad_weight_matches_float64(mode, case, layout):
    gy, x, w_shape = _grad_weight_tensors(case, layout)
    args = ([1, 1], [0, 0], [1, 1], 1)
    taken = debug.cpu_backward_weight_uses_bf16_dot(gy, x, torch.empty(w_shape).bfloat16(), *args)
    cl = torch.channels_last
    readable = (x.is_contiguous(memory_format=cl) and gy.is_contiguous(memory_format=cl)) or (
        x.is_contiguous() and gy.is_contiguous() and x.shape[1] + gy.shape[1] > 256)
    assert taken == (mode == "bf16_dot" and readable)
    got = ops.conv2d_backward_weight(gy, x, w_shape, *args)
    _assert_grad_weight_within_one_rounding(got, gy, x, w_shape)
    _assert_same_at_thread_counts(lambda: ops.conv2d_backward_weight(gy, x, w_shape, *args), got)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("stride", [(2, 2), (2, 1), (1, 3)], ids=str)
def test_strided_pointwise_grad_weight(mode, layout, stride):
    """Strided 1x1: channels_last operands take the pixel pairs (the sampled
    input pixels packed), NCHW ones the float32 kernels."""
    x = make_layout(torch.randn(3, 24, 9, 11).bfloat16(), layout)
    w_shape = [40, 24, 1, 1]
    y_shape = F.conv2d(torch.zeros(3, 24, 9, 11), torch.zeros(w_shape), None, stride).shape
    gy = make_layout(torch.randn(y_shape).bfloat16(), layout)
    args = (list(stride), [0, 0], [1, 1], 1)
    taken = debug.cpu_backward_weight_uses_bf16_dot(gy, x, torch.empty(w_shape).bfloat16(), *args)
    assert taken == (mode == "bf16_dot" and layout == "channels_last")
    got = ops.conv2d_backward_weight(gy, x, w_shape, *args)
    _assert_grad_weight_within_one_rounding(got, gy, x, w_shape, stride)
    _assert_same_at_thread_counts(lambda: ops.conv2d_backward_weight(gy, x, w_shape, *args), got)


def test_pointwise_grad_weight_agrees_closely_with_float32_kernels(dot_on):
    gy, x, w_shape = _grad_weight_tensors(("r", 2, 64, 14, 14, 128), "channels_last")
    args = ([1, 1], [0, 0], [1, 1], 1)
    got = ops.conv2d_backward_weight(gy, x, w_shape, *args)
    assert debug.cpu_backward_weight_uses_bf16_dot(gy, x, torch.empty(w_shape).bfloat16(), *args)
    debug.set_cpu_bf16_dot(False)
    try:
        ref = ops.conv2d_backward_weight(gy, x, w_shape, *args)
    finally:
        debug.set_cpu_bf16_dot(True)
    torch.testing.assert_close(got.float(), ref.float(), rtol=2.0 ** -7, atol=1e-2)


def test_pointwise_grad_weight_through_autograd(dot_on):
    x = torch.randn(2, 32, 6, 6).bfloat16().to(memory_format=torch.channels_last)
    w = (torch.randn(48, 32, 1, 1) / 32 ** 0.5).bfloat16()
    b = torch.randn(48).bfloat16()
    check_bf16_gradients(x, w, b, ((1, 1), (0, 0), (1, 1), 1))
