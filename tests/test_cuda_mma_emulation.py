"""The tensor-core forward (csrc/cuda/conv2d_forward_mma_kernels.cuh: cp.async
ring, ldmatrix, mma.sync) run through the CPU emulation, against a float64
reference on the same rounded inputs, with tolerances scaled to the input
precision. The emulation fills cp.async destinations with NaN until their
wait, so a pipeline that reads a stage too early fails here.

Shapes are small (every emulated CUDA thread is an OS thread) but cover
ragged M and N tiles, several channel chunks per tap (a ragged last one),
padding, stride, dilation, groups, NCHW and channels_last."""
import pytest
import torch
import torch.nn.functional as F

from helpers import MMA_TOLERANCES, make_layout, set_cudnn_allow_tf32
from cases import config_id as _ids


MMA_CONFIGS = [
    # (N, C, H, W, K, R, S, stride, padding, dilation, groups)
    (1, 16, 6, 7, 24, 3, 3, 1, 1, 1, 1),       # odd plane, N tile ragged (24 of 64)
    (2, 8, 5, 5, 8, 3, 3, 2, 1, 1, 1),         # stride 2, two images
    (1, 16, 7, 6, 16, 3, 3, 1, 2, 2, 1),       # dilation 2, padding 2
    (1, 48, 4, 4, 8, 1, 1, 1, 0, 1, 1),        # 48 channels: two chunks of 32, the last ragged
    (1, 32, 5, 5, 16, 3, 3, 1, 1, 1, 2),       # groups 2 (16 channels each)
    (1, 8, 12, 12, 70, 1, 1, 1, 0, 1, 1),      # M = 144, K = 70: two tiles each way
    (1, 8, 5, 9, 8, 2, 4, (1, 2), (0, 1), (2, 1), 1),  # asymmetric everything
]


def _problem(config, dtype):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = config
    x = torch.randn(N, C, H, W).to(dtype)
    w = torch.randn(K, C // groups, R, S).to(dtype)
    b = torch.randn(K).to(dtype)
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    return x, w, b, (pair(stride), pair(padding), pair(dilation), groups)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("config", MMA_CONFIGS, ids=_ids)
def test_mma_forward_matches_float64(emu, config, dtype, layout):
    x, w, b, args = _problem(config, dtype)
    x, w = make_layout(x, layout), make_layout(w, layout)
    out = emu.conv2d_forward(x, w, b, *args)
    assert emu.last_dense_path("forward") == "mma"
    expected = F.conv2d(x.double(), w.double(), b.double(), *args)
    assert out.dtype == dtype and out.shape == expected.shape
    # Same memory format as torch would give (channels_last in, channels_last out).
    want_cl = layout == "channels_last"
    assert out.is_contiguous(memory_format=torch.channels_last if want_cl else torch.contiguous_format)
    torch.testing.assert_close(out.double(), expected, **MMA_TOLERANCES[dtype])


def test_mma_forward_is_bitwise_reproducible(emu):
    x, w, b, args = _problem((1, 16, 6, 7, 24, 3, 3, 1, 1, 1, 1), torch.bfloat16)
    first = emu.conv2d_forward(x, w, b, *args)
    assert torch.equal(first, emu.conv2d_forward(x, w, b, *args))


def test_mma_forward_without_bias(emu):
    x, w, _, args = _problem((2, 8, 5, 5, 8, 3, 3, 2, 1, 1, 1), torch.float16)
    out = emu.conv2d_forward(x, w, None, *args)
    torch.testing.assert_close(out.double(), F.conv2d(x.double(), w.double(), None, *args),
                               **MMA_TOLERANCES[torch.float16])


@pytest.mark.parametrize("config", [(1, 3, 8, 8, 8, 3, 3, 1, 1, 1, 1),    # C = 3
                                    (1, 12, 5, 5, 8, 3, 3, 1, 1, 1, 1)],  # 12 % 8 != 0
                         ids=_ids)
def test_channels_not_a_whole_vector_take_the_simt_kernels(emu, config):
    x, w, b, args = _problem(config, torch.bfloat16)
    out = emu.conv2d_forward(x, w, b, *args)
    assert emu.last_dense_path("forward") == "simt"
    torch.testing.assert_close(out.double(), F.conv2d(x.double(), w.double(), b.double(), *args),
                               **MMA_TOLERANCES[torch.bfloat16])


def test_float32_stays_exact_on_simt(emu):
    # Without TF32 allowed, float32 never takes the tensor cores.
    x, w, b, args = _problem((1, 16, 6, 7, 24, 3, 3, 1, 1, 1, 1), torch.float32)
    out = emu.conv2d_forward(x, w, b, *args)
    assert emu.last_dense_path("forward") == "simt"
    torch.testing.assert_close(out, F.conv2d(x, w, b, *args), rtol=1e-4, atol=1e-4)


def test_forced_simt_tile_overrides(emu):
    x, w, b, args = _problem((1, 16, 6, 7, 24, 3, 3, 1, 1, 1, 1), torch.bfloat16)
    emu.force_tile("small")
    try:
        emu.conv2d_forward(x, w, b, *args)
        assert emu.last_dense_path("forward") == "simt"
    finally:
        emu.force_tile("")


def _tf32(x):
    """cvt.rna.tf32 of a float32 tensor, as float32."""
    bits = x.view(torch.int32).to(torch.int64)
    rounded = ((bits + 0x1000) & ~0x1FFF) & 0xFFFFFFFF
    rounded = torch.where(rounded >= 2**31, rounded - 2**32, rounded)
    return rounded.to(torch.int32).view(torch.float32)


@pytest.fixture
def tf32():
    set_cudnn_allow_tf32(True)
    yield
    set_cudnn_allow_tf32(False)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("config", [MMA_CONFIGS[0], MMA_CONFIGS[3], MMA_CONFIGS[4], MMA_CONFIGS[6],
                                    (1, 4, 6, 5, 8, 3, 3, 1, 1, 1, 1)], ids=_ids)
def test_tf32_forward_when_torch_allows_it(emu, tf32, config, layout):
    x, w, b, args = _problem(config, torch.float32)
    x, w = make_layout(x, layout), make_layout(w, layout)
    out = emu.conv2d_forward(x, w, b, *args)
    assert emu.last_dense_path("forward") == "mma"
    # Exactly the inputs rounded to tf32 (cvt.rna), fp32 accumulation ...
    rounded = F.conv2d(_tf32(x).double(), _tf32(w).double(), b.double(), *args)
    torch.testing.assert_close(out.double(), rounded, rtol=1e-5, atol=1e-4)
    # ... so about 1e-3 from the exact float32 convolution.
    exact = F.conv2d(x.double(), w.double(), b.double(), *args)
    torch.testing.assert_close(out.double(), exact, rtol=2e-3, atol=2e-2)


def test_tf32_flag_is_read_per_call(emu):
    x, w, b, args = _problem((1, 16, 6, 7, 24, 3, 3, 1, 1, 1, 1), torch.float32)
    set_cudnn_allow_tf32(True)
    try:
        emu.conv2d_forward(x, w, b, *args)
        assert emu.last_dense_path("forward") == "mma"
        if hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision"):
            # The newer per-op setting wins for convolutions.
            with getattr(torch.backends, "__allow_nonbracketed_mutation")():
                torch.backends.cudnn.conv.fp32_precision = "ieee"
            emu.conv2d_forward(x, w, b, *args)
            assert emu.last_dense_path("forward") == "simt"
            with getattr(torch.backends, "__allow_nonbracketed_mutation")():
                torch.backends.cudnn.conv.fp32_precision = "tf32"
            emu.conv2d_forward(x, w, b, *args)
            assert emu.last_dense_path("forward") == "mma"
    finally:
        set_cudnn_allow_tf32(False)
    emu.conv2d_forward(x, w, b, *args)
    assert emu.last_dense_path("forward") == "simt"


# grad-input at stride 1 runs the same kernel on grad_output with the
# flipped filter; other strides (and padding beyond the filter's reach) run
# the SIMT phase kernels.
GRAD_INPUT_CONFIGS = [c for c in MMA_CONFIGS if c[7] == 1 and (c[4] // c[10]) % 8 == 0] + [
    (1, 8, 5, 6, 16, 3, 3, 1, 0, 1, 1),     # no padding: the flipped problem pads by 2
]


def _grad_input(emu, x, w, args, round_tf32=False):
    """grad-input through the emulation and its float64 reference (on the
    inputs rounded to TF32 where round_tf32: what the tensor cores see)."""
    gy = torch.randn(F.conv2d(x.double(), w.double(), None, *args).shape).to(x.dtype)
    got = emu.conv2d_backward_input(gy, w, list(x.shape), *args)
    if round_tf32:
        w, gy = _tf32(w), _tf32(gy)
    want = torch.nn.grad.conv2d_input(x.shape, w.double(), gy.double(), *args)
    return got, want


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("config", GRAD_INPUT_CONFIGS, ids=_ids)
def test_mma_grad_input_at_stride_1(emu, config, dtype):
    x, w, _, args = _problem(config, dtype)
    got, want = _grad_input(emu, x, w, args)
    assert emu.last_dense_path("backward_input") == "mma"
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got.double(), want, **MMA_TOLERANCES[dtype])


def test_mma_grad_input_tf32_and_channels_last(emu, tf32):
    x, w, _, args = _problem(MMA_CONFIGS[4], torch.float32)
    x, w = make_layout(x, "channels_last"), make_layout(w, "channels_last")
    got, want = _grad_input(emu, x, w, args)
    assert emu.last_dense_path("backward_input") == "mma"
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.double(), want, rtol=2e-3, atol=2e-2)


@pytest.mark.parametrize("config", [(2, 8, 5, 5, 8, 3, 3, 2, 1, 1, 1),    # stride 2
                                    (1, 8, 5, 5, 8, 1, 1, 1, 1, 1, 1)],   # pad 1 on a 1x1
                         ids=_ids)
def test_grad_input_outside_stride_1_takes_simt(emu, config):
    x, w, _, args = _problem(config, torch.bfloat16)
    got, want = _grad_input(emu, x, w, args)
    assert emu.last_dense_path("backward_input") == "simt"
    torch.testing.assert_close(got.double(), want, **MMA_TOLERANCES[torch.bfloat16])


@pytest.fixture
def mma_tile(emu, request):
    emu.force_tile("mma:" + request.param)
    yield request.param
    emu.force_tile("")


@pytest.mark.parametrize("mma_tile", ["128x64", "128x64deep", "128x128", "64x64"], indirect=True)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("config", [MMA_CONFIGS[0], MMA_CONFIGS[3], MMA_CONFIGS[4], MMA_CONFIGS[5],
                                    (1, 72, 5, 6, 136, 3, 3, 1, 1, 1, 1)], ids=_ids)
def test_each_forward_tile(emu, mma_tile, config, dtype, request):
    # Every tensor-core tile (forced; conv2d_forward_mma.h picks one by
    # shape): ragged M and N tiles, a ragged last slab (48 and 72 channels),
    # groups, output channels that are whole 16-byte vectors (the staged
    # epilogue's vector stores) and that are not (70).
    if dtype == torch.float32:
        request.getfixturevalue("tf32")
    x, w, b, args = _problem(config, dtype)
    out = emu.conv2d_forward(x, w, b, *args)
    assert emu.last_dense_path("forward") == "mma"
    if dtype == torch.float32:
        want = F.conv2d(_tf32(x).double(), _tf32(w).double(), b.double(), *args)
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-4)
    else:
        want = F.conv2d(x.double(), w.double(), b.double(), *args)
        torch.testing.assert_close(out.double(), want, **MMA_TOLERANCES[dtype])
    vector = 4 if dtype == torch.float32 else 8
    on_mma = args[0] == [1, 1] and (config[4] // config[10]) % vector == 0
    got, want = _grad_input(emu, x, w, args, round_tf32=on_mma and dtype == torch.float32)
    if on_mma:
        assert emu.last_dense_path("backward_input") == "mma"
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else MMA_TOLERANCES[dtype]
    torch.testing.assert_close(got.double(), want, **tol)


def test_unknown_forward_tile_is_an_error(emu):
    x, w, b, args = _problem(MMA_CONFIGS[0], torch.bfloat16)
    emu.force_tile("mma:96x96")
    try:
        with pytest.raises(RuntimeError, match="unknown tensor-core tile"):
            emu.conv2d_forward(x, w, b, *args)
    finally:
        emu.force_tile("")


@pytest.mark.parametrize("splits", [2, 50])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("config", [MMA_CONFIGS[0], MMA_CONFIGS[3], MMA_CONFIGS[4],
                                    (1, 72, 5, 6, 136, 3, 3, 1, 1, 1, 1)], ids=_ids)
def test_split_reduction_forward(emu, config, dtype, splits, request):
    # The reduction split over blocks (fp32 partials, bias in split 0's,
    # summed in a fixed order); 50 is more splits than slabs (clamped).
    if dtype == torch.float32:
        request.getfixturevalue("tf32")
    x, w, b, args = _problem(config, dtype)
    emu.force_mma_splits(splits)
    try:
        out = emu.conv2d_forward(x, w, b, *args)
        assert emu.last_dense_path("forward") == "mma"
        assert torch.equal(out, emu.conv2d_forward(x, w, b, *args))  # fixed order
        got, want_gi = _grad_input(emu, x, w, args, round_tf32=dtype == torch.float32)
    finally:
        emu.force_mma_splits(0)
    if dtype == torch.float32:
        want = F.conv2d(_tf32(x).double(), _tf32(w).double(), b.double(), *args)
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(got.double(), want_gi, rtol=1e-5, atol=1e-4)
    else:
        want = F.conv2d(x.double(), w.double(), b.double(), *args)
        torch.testing.assert_close(out.double(), want, **MMA_TOLERANCES[dtype])
        torch.testing.assert_close(got.double(), want_gi, **MMA_TOLERANCES[dtype])


def test_split_chosen_by_shape(emu):
    # One tile (of 132 SMs' worth) with 36 slabs of reduction: split in 2
    # (at least 16 slabs each); a shallow reduction is not split.
    x, w, b, args = _problem((1, 128, 6, 6, 64, 3, 3, 1, 1, 1, 1), torch.bfloat16)
    out = emu.conv2d_forward(x, w, b, *args)
    assert emu.last_dense_path("forward") == "mma" and emu.last_forward_mma_splits() == 2
    torch.testing.assert_close(out.double(), F.conv2d(x.double(), w.double(), b.double(), *args),
                               **MMA_TOLERANCES[torch.bfloat16])
    x, w, b, args = _problem(MMA_CONFIGS[0], torch.bfloat16)
    emu.conv2d_forward(x, w, b, *args)
    assert emu.last_forward_mma_splits() == 1
