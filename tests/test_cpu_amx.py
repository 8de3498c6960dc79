"""The bfloat16 dense and pointwise forward and grad-weight on AMX tiles (csrc/cpu/conv2d_cpu_amx.h,
conv2d_cpu_kernels_amx.cpp), and the float32 kernels it falls back to: each
case runs with the AMX tiles on (where the CPU has them; skipped with the
reason elsewhere) and off, against torch in float64 on the same bf16 values
with the error bound of float32 accumulation plus one rounding to bf16. Odd
channel counts (C not a multiple of 32, K not a multiple of 16), strides,
dilation, padding larger than the filter, asymmetric filters, N up to 64,
NCHW / channels_last / non-contiguous inputs and weights; bitwise identical
across thread counts, runs and batch splits; the grad-input (the forward's
tiles) and gradients through autograd. The grad-weight against float64
with the bound of float32 accumulation over the N*P*Q pixels plus one
rounding, bitwise identical across thread counts and runs."""
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
HAS_AMX = debug.cpu_amx_supported()
NO_AMX = "this CPU lacks AMX-BF16 (or the OS did not grant the tile state)"


@contextlib.contextmanager
def amx_mode(on):
    """AMX tiles on (the avx512 kernels active, which AMX needs) or off."""
    previous_isa = debug.set_cpu_isa("avx512") if on else None
    previous = debug.set_cpu_amx(on)
    try:
        yield
    finally:
        debug.set_cpu_amx(previous)
        if previous_isa is not None:
            debug.set_cpu_isa(previous_isa)


@pytest.fixture(params=["amx", "no_amx"])
def mode(request):
    if request.param == "amx" and not HAS_AMX:
        pytest.skip(NO_AMX)
    with amx_mode(request.param == "amx"):
        yield request.param


# (name, N, C, H, W, K, R, S, stride, padding, dilation)
CASES = [
    ("3x3_whole_tiles", 2, 64, 10, 12, 64, 3, 3, 1, 1, 1),
    ("3x3_odd_c_k", 2, 19, 9, 11, 21, 3, 3, 1, 1, 1),          # C < 32, K < 32: padded tiles
    ("3x3_c40_k50", 1, 40, 7, 9, 50, 3, 3, 1, 1, 1),           # 2 channel blocks, 4 K tiles (last partial)
    ("3x3_s2", 2, 24, 13, 12, 40, 3, 3, 2, 1, 1),              # 4 stride phases
    ("3x3_s3_dil2", 1, 33, 17, 16, 17, 3, 3, 3, 2, 2),        # 9 phases, C past 32
    ("pad_gt_filter", 2, 16, 5, 6, 18, 2, 2, 1, 3, 1),        # padding 3 > filter 2
    ("s2_pad_gt_filter", 2, 16, 7, 8, 18, 2, 2, 2, 3, 1),     # grad-input phases padded past both ends
    ("s2_dil3", 1, 16, 15, 14, 20, 3, 3, 2, 2, 3),            # phases with dilation 3 (gcd 1)
    ("asym", 1, 10, 8, 13, 9, 2, 5, (1, 2), (0, 3), (2, 1)),  # phases on one axis only
    ("5x5_wide_row", 1, 32, 4, 70, 32, 5, 5, 1, 2, 1),        # rows longer than a work item
    ("7x7_s2_c8", 2, 8, 15, 13, 16, 7, 7, 2, 3, 1),           # fewest channels AMX takes
    ("one_pixel", 3, 48, 3, 3, 20, 3, 3, 1, 0, 1),            # P = Q = 1
    ("1x1", 2, 48, 7, 7, 33, 1, 1, 1, 0, 1),                  # pointwise path
    ("1x1_s2", 2, 64, 9, 11, 24, 1, 1, 2, 0, 1),              # one of four phases stored
    ("1x1_k100_c70", 1, 70, 5, 6, 100, 1, 1, 1, 0, 1),
    ("1x1_c64", 3, 64, 5, 7, 40, 1, 1, 1, 0, 1),              # channels_last: read in place
    ("n64", 64, 16, 4, 5, 16, 3, 3, 1, 1, 1),
]


def _id(case):
    return case[0]


def _make(case, layout, bias=True, dtype=torch.bfloat16):
    _, N, C, H, W, K, R, S, stride, padding, dilation = case
    x = make_layout(torch.randn(N, C, H, W).to(dtype), layout)
    w = make_layout((torch.randn(K, C, R, S) / (C * R * S) ** 0.5).to(dtype), layout)
    b = torch.randn(K).to(dtype) if bias else None
    args = (pair(stride), pair(padding), pair(dilation), 1)
    return x, w, b, args


def test_amx_taken_where_expected():
    x, w = torch.randn(2, 32, 8, 8).bfloat16(), torch.randn(32, 32, 3, 3).bfloat16()
    args = ([1, 1], [1, 1], [1, 1], 1)
    uses = lambda x, w, args=args: debug.cpu_forward_uses_amx(x, w, *args)  # noqa: E731
    with amx_mode(False):
        assert not debug.cpu_amx()
        assert not uses(x, w)
    if not HAS_AMX:
        pytest.skip(NO_AMX)
    with amx_mode(True):
        assert debug.cpu_amx()
        assert uses(x, w)                                                 # 3x3 dense
        assert uses(x, w[:, :, :1, :1], ([2, 2], [0, 0], [1, 1], 1))       # pointwise, stride 2
        assert not uses(x.half(), w.half())                               # no AMX-FP16 here
        assert not uses(x.float(), w.float())
        assert not uses(x[:, :3], w[:, :3])                               # first layer (C < 8)
        assert not uses(x, w[:, :8], ([1, 1], [1, 1], [1, 1], 4))          # grouped
        previous = debug.set_cpu_isa("avx2")                              # AMX needs the avx512 copy
        try:
            assert not debug.cpu_amx() and not uses(x, w)
        finally:
            debug.set_cpu_isa(previous)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_float64(mode, case, layout):
    x, w, b, args = _make(case, layout, bias=case[0] != "1x1")
    assert debug.cpu_forward_uses_amx(x, w, *args) == (mode == "amx")
    y = ops.conv2d_forward(x, w, b, *args)
    assert y.dtype == torch.bfloat16
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    assert_bf16_within_one_rounding(y, x, w, b, args)


def test_channels_last_input_with_nchw_weight(mode):
    x, w, b, args = _make(CASES[1], "channels_last")
    w = w.contiguous()
    y = ops.conv2d_forward(x, w, b, *args)
    assert_bf16_within_one_rounding(y, x, w, b, args)
    assert torch.equal(y.contiguous(), ops.conv2d_forward(x.contiguous(), w, b, *args))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "3x3_odd_c_k", "3x3_c40_k50", "3x3_s2", "asym", "5x5_wide_row", "1x1_s2", "1x1_c64")], ids=_id)
def test_bitwise_across_threads_runs_and_batch(mode, case, layout):
    x, w, b, args = _make(case, layout)
    if x.shape[0] == 1:
        x = torch.cat([x, torch.randn_like(x), torch.randn_like(x)]).contiguous(
            memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    assert_bitwise_across_threads_runs_and_batch(lambda x: ops.conv2d_forward(x, w, b, *args), x)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("3x3_odd_c_k", "3x3_s3_dil2", "1x1")],
                         ids=_id)
def test_autograd_gradients(mode, case):
    x, w, b, args = _make(case, "contiguous")
    check_bf16_gradients(x, w, b, args)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_grad_input(mode, case, layout):
    """grad-input: unit stride as one forward of grad_output with the rotated,
    transposed filter, larger strides as one forward per stride phase
    (conv2d_cpu_ops.cpp: bf16_tile_backward_input)."""
    x, w, _, args = _make(case, layout, bias=False)
    y = F.conv2d(x.float(), w.float(), None, *args[:3])
    gy = make_layout(torch.randn(y.shape).bfloat16(), layout)
    got = ops.conv2d_backward_input(gy, w, list(x.shape), *args)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    if case[2] > 1:
        assert got.is_contiguous(memory_format=fmt)
    assert_bf16_grad_input_within_one_rounding(got, gy, w, x.shape, args)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "3x3_odd_c_k", "3x3_s2", "3x3_s3_dil2", "asym", "1x1_s2")], ids=_id)
def test_grad_input_bitwise_across_threads_runs_and_batch(mode, case):
    x, w, _, args = _make(case, "contiguous", bias=False)
    x = torch.cat([x, torch.randn_like(x), torch.randn_like(x)])
    y = F.conv2d(x.float(), w.float(), None, *args[:3])
    gy = torch.randn(y.shape).bfloat16()
    assert_bitwise_across_threads_runs_and_batch(
        lambda g: ops.conv2d_backward_input(g, w, [g.shape[0]] + list(x.shape[1:]), *args), gy)


def test_amx_and_float32_tiles_agree_closely():
    if not HAS_AMX:
        pytest.skip(NO_AMX)
    x, w, b, args = _make(CASES[0], "contiguous")
    with amx_mode(True):
        on = ops.conv2d_forward(x, w, b, *args)
    with amx_mode(False):
        off = ops.conv2d_forward(x, w, b, *args)
    # Other summation orders, one bf16 rounding each: at most an ulp or two apart.
    torch.testing.assert_close(on.float(), off.float(), rtol=2.0 ** -7, atol=1e-3)


def test_switching_on_without_amx_is_an_error():
    if HAS_AMX:
        pytest.skip("this CPU has AMX")
    with pytest.raises(RuntimeError, match="AMX was asked for"):
        debug.set_cpu_amx(True)


def test_environment_variable_switches_amx_off():
    code = textwrap.dedent("""
        import torch, conv_ext
        d = torch.ops.conv_ext_debug
        x, w = torch.randn(1, 32, 6, 6).bfloat16(), torch.randn(16, 32, 3, 3).bfloat16()
        print(d.cpu_amx(), d.cpu_forward_uses_amx(x, w, [1, 1], [1, 1], [1, 1], 1),
              d.cpu_backward_weight_uses_amx(x, w, [1, 1], [1, 1], [1, 1], 1))
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(conv_ext.__file__)))
    env = dict(os.environ, CONV_EXT_CPU_AMX="0")
    env.pop("CONV_EXT_CPU_ISA", None)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False"]


# ---------------------------------------------------------------------------
# The bfloat16 grad-weight on AMX tiles (conv2d_cpu_kernels_amx.cpp:
# backward_weight_bf16), and the float32 kernels with AMX off.

def assert_bf16_grad_weight_within_one_rounding(gw, gy, x, args):
    """A bf16 grad-weight `gw` against float64 on the same bf16 values:
    |gw - exact| <= one bf16 rounding + float32 summation of the N*P*Q terms
    (as assert_bf16_within_one_rounding for the forward)."""
    stride, padding, dilation, _ = args
    w_shape = gw.shape
    x64, gy64 = x.double(), gy.double()
    exact = torch.ops.aten.convolution_backward(
        gy64, x64, torch.zeros(w_shape, dtype=torch.float64), None, stride, padding, dilation,
        False, [0, 0], 1, [False, True, False])[1]
    magnitude = torch.ops.aten.convolution_backward(
        gy64.abs(), x64.abs(), torch.zeros(w_shape, dtype=torch.float64), None, stride, padding,
        dilation, False, [0, 0], 1, [False, True, False])[1]
    terms = gy.shape[0] * gy.shape[2] * gy.shape[3]
    bound = 2.0 ** -8 * exact.abs() + terms * 2.0 ** -24 * magnitude
    err = (gw.double() - exact).abs()
    assert bool((err <= bound).all()), f"max excess {(err - bound).max().item()}"


# (name, N, C, H, W, K, R, S, stride, padding, dilation)
WGRAD_CASES = CASES + [
    ("3x3_n3_odd_pixels", 3, 9, 7, 5, 10, 3, 3, 1, 1, 1),     # 35 pixels per image, C odd
    ("3x3_s2_odd", 3, 17, 11, 9, 33, 3, 3, 2, 1, 1),          # K past 32, odd output
    ("1x3_s3_pad_gt", 1, 12, 10, 11, 7, 1, 3, 3, (2, 4), 1),  # padding > filter, stride 3
    ("dil3", 2, 20, 12, 13, 24, 3, 2, 1, (3, 1), (3, 2)),
    ("r50_like", 2, 64, 14, 14, 64, 3, 3, 1, 1, 1),
    ("1x1_n3_odd", 3, 12, 5, 5, 20, 1, 1, 1, 0, 1),            # 1x1, N = 3, 25 pixels per image
]


def _make_wgrad(case, layout):
    x, w, _, args = _make(case, layout, bias=False)
    y = torch.nn.functional.conv2d(x.float().contiguous(), w.float().contiguous(), None,
                                   *args[:3])
    gy = make_layout(torch.randn(y.shape).bfloat16(), layout)
    return gy, x, w, args


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("case", WGRAD_CASES, ids=_id)
def test_grad_weight_matches_float64(mode, case, layout):
    gy, x, w, args = _make_wgrad(case, layout)
    assert debug.cpu_backward_weight_uses_amx(x, w, *args) == (mode == "amx")
    gw = ops.conv2d_backward_weight(gy, x, list(w.shape), *args)
    assert gw.dtype == torch.bfloat16 and gw.shape == w.shape
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert gw.is_contiguous(memory_format=fmt)
    assert_bf16_grad_weight_within_one_rounding(gw, gy, x, args)


def test_grad_weight_mixed_layouts(mode):
    gy, x, w, args = _make_wgrad(WGRAD_CASES[-4], "channels_last")
    want = ops.conv2d_backward_weight(gy.contiguous(), x.contiguous(), list(w.shape), *args)
    for g, xx in ((gy, x.contiguous()), (gy.contiguous(), x), (gy[:, :, :, :], make_layout(x, "strided"))):
        got = ops.conv2d_backward_weight(g, xx, list(w.shape), *args)
        assert_bf16_grad_weight_within_one_rounding(got, g, xx, args)
        if mode == "amx":  # one reduction order whatever the layouts
            assert torch.equal(got.contiguous(), want)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", [c for c in WGRAD_CASES if c[0] in (
    "3x3_odd_c_k", "3x3_c40_k50", "3x3_s2", "asym", "1x1_k100_c70", "3x3_n3_odd_pixels",
    "r50_like", "1x1", "1x1_n3_odd")], ids=_id)
def test_grad_weight_bitwise_across_threads_and_runs(mode, case, layout):
    gy, x, w, args = _make_wgrad(case, layout)
    gw = ops.conv2d_backward_weight(gy, x, list(w.shape), *args)
    assert torch.equal(ops.conv2d_backward_weight(gy, x, list(w.shape), *args), gw)
    saved = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            assert torch.equal(ops.conv2d_backward_weight(gy, x, list(w.shape), *args), gw), t
    finally:
        torch.set_num_threads(saved)


def test_grad_weight_amx_taken_where_expected():
    x, w = torch.randn(2, 32, 8, 8).bfloat16(), torch.randn(32, 32, 3, 3).bfloat16()
    args = ([1, 1], [1, 1], [1, 1], 1)
    uses = lambda x, w, args=args: debug.cpu_backward_weight_uses_amx(x, w, *args)  # noqa: E731
    with amx_mode(False):
        assert not uses(x, w)
    if not HAS_AMX:
        pytest.skip(NO_AMX)
    with amx_mode(True):
        assert uses(x, w)                                                 # 3x3 dense
        assert uses(x, w[:, :, :1, :1])                                   # pointwise
        assert uses(x, w[:, :, :1, :1], ([2, 2], [0, 0], [1, 1], 1))       # pointwise, stride 2
        assert not uses(x.half(), w.half())
        assert not uses(x.float(), w.float())
        assert not uses(x[:, :3], w[:, :3])                               # first layer (C < 8)
        assert not uses(x, w[:, :8], ([1, 1], [1, 1], [1, 1], 4))          # grouped
        previous = debug.set_cpu_isa("avx2")
        try:
            assert not uses(x, w)
        finally:
            debug.set_cpu_isa(previous)


def test_grad_weight_amx_and_float32_agree_closely():
    if not HAS_AMX:
        pytest.skip(NO_AMX)
    gy, x, w, args = _make_wgrad(WGRAD_CASES[-1], "contiguous")
    with amx_mode(True):
        on = ops.conv2d_backward_weight(gy, x, list(w.shape), *args)
    with amx_mode(False):
        off = ops.conv2d_backward_weight(gy, x, list(w.shape), *args)
    torch.testing.assert_close(on.float(), off.float(), rtol=2.0 ** -7, atol=1e-2)
