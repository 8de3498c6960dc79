"""conv_ext.conv2d against F.conv2d: outputs and all gradients over the
parameter space (stride, padding, dilation, groups, kernel size, batch,
layout, dtype), gradcheck/gradgradcheck in float64 (opcheck: test_compile.py)."""
import pytest
import torch
import torch.nn.functional as F

import conv_ext
from cases import CONFIGS, GRADCHECK_CONFIGS, config_id
from helpers import TOLERANCES, compare_with_torch

DTYPES = [torch.float32, torch.float64]
LAYOUTS = ["contiguous", "channels_last", "strided"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_torch(config, dtype, layout):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = config
    x = torch.randn(N, C, H, W, dtype=dtype)
    w = torch.randn(K, C // groups, R, S, dtype=dtype)
    b = torch.randn(K, dtype=dtype)
    compare_with_torch(x, w, b, stride=stride, padding=padding, dilation=dilation,
                       groups=groups, layout=layout)


@pytest.mark.parametrize("dtype", DTYPES)
def test_without_bias(dtype):
    compare_with_torch(torch.randn(2, 4, 7, 7, dtype=dtype), torch.randn(3, 4, 3, 3, dtype=dtype),
                       None, padding=1)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel,dilation", [((3, 3), 1), ((4, 2), 1), ((2, 3), (1, 3)),
                                             ((3, 4), (2, 1)), ((1, 1), 1)])
def test_string_padding(padding, kernel, dilation):
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    w = torch.randn(5, 4, *kernel, dtype=torch.float64)
    out = compare_with_torch(x, w, torch.randn(5, dtype=torch.float64), padding=padding,
                             dilation=dilation)
    if padding == "same":
        assert out.shape[-2:] == x.shape[-2:]


@pytest.mark.parametrize("dtype", DTYPES)
def test_unbatched_input(dtype):
    x = torch.randn(3, 8, 8, dtype=dtype)
    out = compare_with_torch(x, torch.randn(4, 3, 3, 3, dtype=dtype), torch.randn(4, dtype=dtype),
                             padding=1)
    assert out.dim() == 3


@pytest.mark.parametrize("C,K,groups", [(0, 4, 1), (0, 4, 2)])
def test_zero_input_channels(C, K, groups):
    # No input channels: torch returns N x 0 x P x Q and a zero bias
    # gradient; conv_ext.conv2d does the same (the op itself computes the
    # N x K x P x Q bias planes, which the function slices to torch's shape).
    x = torch.randn(2, C, 5, 5, requires_grad=True)
    w = torch.randn(K, C // groups, 3, 3, requires_grad=True)
    b = torch.randn(K, requires_grad=True)
    out = conv_ext.conv2d(x, w, b, padding=1, groups=groups)
    assert out.shape == F.conv2d(x, w, b, padding=1, groups=groups).shape == (2, 0, 5, 5)
    out.sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
    torch.testing.assert_close(b.grad, torch.zeros(K))


def test_zero_output_channels_refused_like_torch():
    x, w = torch.randn(2, 4, 5, 5), torch.randn(0, 4, 3, 3)
    for conv in (F.conv2d, conv_ext.conv2d):
        with pytest.raises(RuntimeError, match="expected weight to be at least 1 at dimension 0"):
            conv(x, w)


def test_empty_spatial_input_is_refused_like_torch():
    x, w = torch.randn(2, 3, 0, 4), torch.randn(4, 3, 1, 1)
    with pytest.raises(RuntimeError, match="Only zero batch or zero channel inputs are supported"):
        F.conv2d(x, w, padding=1)
    with pytest.raises(RuntimeError, match="Only zero batch or zero channel inputs are supported"):
        conv_ext.conv2d(x, w, padding=1)


def test_mixed_layouts():
    # channels_last weight with contiguous input: torch returns channels_last.
    x = torch.randn(2, 4, 6, 6)
    w = torch.randn(3, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    out = conv_ext.conv2d(x, w)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, F.conv2d(x, w), **TOLERANCES[torch.float32])


def test_expanded_and_transposed_views():
    base = torch.randn(1, 3, 6, 6)
    x = base.expand(3, 3, 6, 6)             # stride 0 along the batch
    w = torch.randn(4, 4, 3, 3).transpose(0, 1)[:, :3]  # permuted strides
    compare_with_torch(x, w, None, padding=1, check_grads=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_on_cpu(dtype):
    # Computed in float32 and rounded once; compare with torch in float32.
    x = torch.randn(2, 4, 7, 7).to(dtype)
    w = torch.randn(6, 2, 3, 3).to(dtype)
    out = conv_ext.conv2d(x, w, None, 1, 1, 1, 2)
    assert out.dtype == dtype
    expected = F.conv2d(x.float(), w.float(), None, 1, 1, 1, 2).to(dtype)
    torch.testing.assert_close(out, expected, **TOLERANCES[dtype])


def test_deterministic():
    x = torch.randn(4, 8, 15, 15, requires_grad=True)
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    results = []
    for _ in range(2):
        y = conv_ext.conv2d(x, w, None, 2, 1, 1, 2)
        gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
        results.append((y, gx, gw))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_deterministic_across_thread_counts():
    x = torch.randn(3, 6, 12, 12, requires_grad=True)
    w = torch.randn(9, 2, 3, 3, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = conv_ext.conv2d(x, w, None, 1, 1, 1, 3)
            results.append((y, *torch.autograd.grad(y, (x, w), torch.ones_like(y))))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# gradcheck / gradgradcheck in float64: the analytical first and second
# derivatives of the three autograd Functions against finite differences.
@pytest.mark.parametrize("args", GRADCHECK_CONFIGS, ids=str)
def test_gradcheck_and_gradgradcheck(args):
    groups = args["groups"]
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4 // groups, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return conv_ext.conv2d(x, w, b, **args)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_gradgradcheck_of_each_backward_function():
    # The backward Functions are differentiable themselves (third order).
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    params = ([1], [0], [1], 1)
    from conv_ext.autograd import Conv2dBackwardInputFunction, Conv2dBackwardWeightFunction

    def grad_input(gy, w):
        return Conv2dBackwardInputFunction.apply(gy, w, list(x.shape), *params)

    def grad_weight(gy, x):
        return Conv2dBackwardWeightFunction.apply(gy, x, list(w.shape), *params)

    assert torch.autograd.gradgradcheck(grad_input, (gy, w))
    assert torch.autograd.gradgradcheck(grad_weight, (gy, x))


def test_op_errors_on_wrong_grad_output_shape():
    w = torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="expected grad_output of size"):
        torch.ops.conv_ext.conv2d_backward_input(torch.randn(1, 3, 4, 4), w, [1, 2, 5, 5],
                                                 [1], [0], [1], 1)
    with pytest.raises(RuntimeError, match="expected grad_output of size"):
        torch.ops.conv_ext.conv2d_backward_weight(torch.randn(1, 3, 4, 4), torch.randn(1, 2, 5, 5),
                                                  [3, 2, 3, 3], [1], [0], [1], 1)


def test_built_with_cuda_flag():
    assert isinstance(conv_ext.built_with_cuda(), bool)
