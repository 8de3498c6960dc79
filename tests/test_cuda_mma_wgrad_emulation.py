"""The tensor-core grad-weight (csrc/cuda/conv2d_backward_weight_mma_kernels.cuh:
cp.async ring, ldmatrix.trans, mma.sync, split-K with the fixed-order sum)
run through the CPU emulation, against a float64 reference on the same
rounded inputs, with tolerances scaled to the input precision. The emulation
fills cp.async destinations with NaN until their wait, so a pipeline that
reads a stage too early fails here.

Shapes are small (every emulated CUDA thread is an OS thread) but cover
ragged channel and filter-column tiles, reductions (N*P*Q) that are not a
whole number of slabs or chunks, several chunks (split-K), padding, stride,
dilation, groups, NCHW and channels_last."""
import re

import pytest
import torch

from helpers import MMA_TOLERANCES, make_layout, set_cudnn_allow_tf32
from cases import config_id as _ids


WGRAD_CONFIGS = [
    # (N, C, H, W, K, R, S, stride, padding, dilation, groups)
    (2, 16, 6, 7, 24, 3, 3, 1, 1, 1, 1),       # 144 columns: two column tiles; Kg 24 of 64
    (1, 8, 9, 8, 8, 3, 2, (2, 1), (1, 0), (1, 2), 1),  # asymmetric stride, padding, dilation
    (1, 32, 5, 5, 16, 3, 3, 1, 1, 1, 2),       # groups 2 (16 input, 8 output channels each)
    (2, 8, 12, 11, 8, 1, 1, 1, 0, 1, 1),       # 264 pixels: two chunks, the last ragged
    (1, 8, 4, 4, 72, 1, 1, 1, 0, 1, 1),        # Kg 72: two channel tiles; 16 pixels (< a slab)
]


def _problem(config, dtype):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = config
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    args = (pair(stride), pair(padding), pair(dilation), groups)
    x = torch.randn(N, C, H, W).to(dtype)
    w_shape = (K, C // groups, R, S)
    out = torch.nn.functional.conv2d(x.double(), torch.zeros(w_shape, dtype=torch.double), None,
                                     *args)
    gy = torch.randn(out.shape).to(dtype)
    return x, gy, w_shape, args


def _reference(x, gy, w_shape, args):
    return torch.nn.grad.conv2d_weight(x.double(), w_shape, gy.double(), *args)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("config", WGRAD_CONFIGS, ids=_ids)
def test_mma_grad_weight_matches_float64(emu, config, dtype):
    x, gy, w_shape, args = _problem(config, dtype)
    got = emu.conv2d_backward_weight(gy, x, list(w_shape), *args)
    assert emu.last_dense_path("backward_weight") == "mma"
    assert got.dtype == dtype and tuple(got.shape) == w_shape
    torch.testing.assert_close(got.double(), _reference(x, gy, w_shape, args),
                               **MMA_TOLERANCES[dtype])


def _splits(emu, op, config):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = config
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    plan = emu.describe_plan(op, [N, C, H, W], [K, C // groups, R, S], pair(stride),
                             pair(padding), pair(dilation), groups)
    assert plan.startswith("mma ")
    return int(re.search(r"splits=(\d+)", plan).group(1))


def test_split_reduction_is_exercised(emu):
    # The chunked config really splits, with a last chunk shorter than the
    # others and not a whole number of slabs (264 = 160 + 104 pixels).
    assert _splits(emu, "backward_weight_mma", WGRAD_CONFIGS[3]) == 2
    assert _splits(emu, "backward_weight_mma_tf32", WGRAD_CONFIGS[3]) >= 2


def test_mma_grad_weight_channels_last_in_and_out(emu):
    x, gy, w_shape, args = _problem(WGRAD_CONFIGS[0], torch.bfloat16)
    x, gy = make_layout(x, "channels_last"), make_layout(gy, "channels_last")
    got = emu.conv2d_backward_weight(gy, x, list(w_shape), *args)
    assert emu.last_dense_path("backward_weight") == "mma"
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.double(), _reference(x, gy, w_shape, args),
                               **MMA_TOLERANCES[torch.bfloat16])


def test_mma_grad_weight_is_bitwise_reproducible(emu):
    # Split partials are summed in a fixed order: identical run to run.
    x, gy, w_shape, args = _problem(WGRAD_CONFIGS[3], torch.bfloat16)
    first = emu.conv2d_backward_weight(gy, x, list(w_shape), *args)
    assert emu.last_dense_path("backward_weight") == "mma"
    assert torch.equal(first, emu.conv2d_backward_weight(gy, x, list(w_shape), *args))


@pytest.mark.parametrize("config", [(1, 12, 5, 5, 8, 3, 3, 1, 1, 1, 1),   # Cg 12 % 8 != 0
                                    (1, 8, 5, 5, 12, 3, 3, 1, 1, 1, 1),   # Kg 12 % 8 != 0
                                    (1, 3, 6, 6, 8, 3, 3, 1, 1, 1, 1)],   # C = 3
                         ids=_ids)
def test_channels_not_a_whole_vector_take_the_simt_kernels(emu, config):
    x, gy, w_shape, args = _problem(config, torch.bfloat16)
    got = emu.conv2d_backward_weight(gy, x, list(w_shape), *args)
    assert emu.last_dense_path("backward_weight") == "simt"
    torch.testing.assert_close(got.double(), _reference(x, gy, w_shape, args),
                               **MMA_TOLERANCES[torch.bfloat16])


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
@pytest.mark.parametrize("config", [WGRAD_CONFIGS[1], WGRAD_CONFIGS[3],
                                    (1, 4, 6, 5, 12, 3, 3, 1, 1, 1, 1)], ids=_ids)
def test_tf32_grad_weight_when_torch_allows_it(emu, tf32, config, layout):
    x, gy, w_shape, args = _problem(config, torch.float32)
    x, gy = make_layout(x, layout), make_layout(gy, layout)
    got = emu.conv2d_backward_weight(gy, x, list(w_shape), *args)
    assert emu.last_dense_path("backward_weight") == "mma"
    # Exactly the inputs rounded to tf32 (cvt.rna), fp32 accumulation ...
    rounded = _reference(_tf32(x), _tf32(gy), w_shape, args)
    torch.testing.assert_close(got.double(), rounded, rtol=1e-5, atol=5e-4)
    # ... so about 1e-3 from the exact float32 gradient.
    exact = _reference(x, gy, w_shape, args)
    torch.testing.assert_close(got.double(), exact, rtol=2e-3, atol=5e-2)


def test_float32_grad_weight_stays_exact_without_tf32(emu):
    x, gy, w_shape, args = _problem(WGRAD_CONFIGS[1], torch.float32)
    got = emu.conv2d_backward_weight(gy, x, list(w_shape), *args)
    assert emu.last_dense_path("backward_weight") == "simt"
    torch.testing.assert_close(got.double(), _reference(x, gy, w_shape, args),
                               rtol=1e-5, atol=1e-5)
