"""The CUDA kernels on a real GPU (skipped where none is visible; run by
bench/gpu_check.sh): every dtype against a float64 reference, gradcheck and
gradgradcheck in float64 on CUDA, CPU and CUDA agree, determinism, layouts,
streams and CUDA graphs, bad input."""
import pytest
import torch
import torch.nn.functional as F

import conv_ext
from helpers import TOLERANCES, make_layout
from cases import CONFIGS, GRADCHECK_CONFIGS, config_id

pytestmark = pytest.mark.cuda

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "strided"]

# Larger shapes that reach the big tiles and their tails (sizes not multiples
# of any tile), depthwise and the ResNet/MobileNet shapes' structure.
LARGE_CONFIGS = [
    # N, C, H, W, K, R, S, stride, padding, dilation, groups
    (3, 64, 29, 31, 96, 3, 3, 1, 1, 1, 1),
    (2, 67, 30, 30, 130, 1, 1, 1, 0, 1, 1),
    (2, 128, 28, 28, 256, 1, 1, 2, 0, 1, 1),
    (2, 96, 23, 23, 80, 3, 3, 2, 1, 1, 1),
    (2, 3, 64, 64, 64, 7, 7, 2, 3, 1, 1),
    (2, 64, 40, 40, 64, 3, 3, 1, 2, 2, 4),
    (4, 144, 56, 56, 144, 3, 3, 1, 1, 1, 144),
    (2, 96, 57, 57, 96, 3, 3, 2, 1, 1, 96),
    (2, 48, 30, 30, 96, 5, 5, 1, 2, 1, 48),
    (2, 32, 17, 19, 32, 5, 5, 2, 2, 1, 32),
]

# Tolerances relative to the output's scale (sums over C*R*S terms): half
# types round inputs and outputs, float32 sums in another order than torch.
SCALED_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 4e-3,
              torch.bfloat16: 2e-2}


def _reference(x, w, b, gy, args):
    """Output and gradients of F.conv2d in float64 on the CPU."""
    x64, w64 = x.detach().cpu().double().requires_grad_(), w.detach().cpu().double().requires_grad_()
    b64 = None if b is None else b.detach().cpu().double().requires_grad_()
    y = F.conv2d(x64, w64, b64, **args)
    inputs = [t for t in (x64, w64, b64) if t is not None]
    grads = torch.autograd.grad(y, inputs, gy.detach().cpu().double()) if y.numel() else \
        [torch.zeros_like(t) for t in inputs]
    return y, grads


def _assert_close_scaled(got, want, dtype, what):
    got = got.detach().cpu().double()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    if want.numel() == 0:
        return
    scale = want.abs().max().item() + 1.0
    err = (got - want).abs().max().item()
    assert err <= SCALED_TOL[dtype] * scale, f"{what}: max error {err:.3g} > {SCALED_TOL[dtype]} x {scale:.3g}"


def _run_and_compare(config, dtype, layout, check_grads=True):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = config
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = make_layout(torch.randn(N, C, H, W, device="cuda").to(dtype), layout)
    w = make_layout(torch.randn(K, C // groups, R, S, device="cuda").to(dtype), layout)
    b = torch.randn(K, device="cuda").to(dtype)
    x.requires_grad_(check_grads)
    w.requires_grad_(check_grads)
    b.requires_grad_(check_grads)
    y = conv_ext.conv2d(x, w, b, **args)
    assert y.dtype == dtype and y.device == x.device
    if layout == "channels_last" and N > 0:
        assert y.is_contiguous(memory_format=torch.channels_last)
    gy = torch.randn(y.shape, device="cuda").to(dtype)
    y_ref, grads_ref = _reference(x, w, b, gy, args)
    _assert_close_scaled(y, y_ref, dtype, "output")
    if not check_grads:
        return
    grads = torch.autograd.grad(y, (x, w, b), gy)
    for name, g, e in zip(("input", "weight", "bias"), grads, grads_ref):
        assert g.dtype == dtype
        _assert_close_scaled(g, e, dtype, f"grad {name}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_torch_small(config, dtype, layout):
    _run_and_compare(config, dtype, layout)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", LARGE_CONFIGS, ids=config_id)
def test_matches_torch_large(config, dtype, layout):
    _run_and_compare(config, dtype, layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_cudnn(dtype):
    # Same inputs through cuDNN (TF32 off) on the GPU: agree to dtype tolerance.
    x = torch.randn(4, 32, 20, 20, device="cuda").to(dtype)
    w = torch.randn(48, 16, 3, 3, device="cuda").to(dtype)
    with torch.backends.cudnn.flags(allow_tf32=False):
        want = F.conv2d(x.double(), w.double(), None, 1, 1, 1, 2)
    got = conv_ext.conv2d(x, w, None, 1, 1, 1, 2)
    _assert_close_scaled(got, want.cpu(), dtype, "output")


def test_cpu_and_cuda_agree_float64():
    x = torch.randn(2, 6, 13, 11, dtype=torch.float64)
    w = torch.randn(8, 3, 3, 2, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64)
    args = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    cpu = [t.clone().requires_grad_() for t in (x, w, b)]
    gpu = [t.cuda().requires_grad_() for t in (x, w, b)]
    y_cpu = conv_ext.conv2d(*cpu, **args)
    y_gpu = conv_ext.conv2d(*gpu, **args)
    gy = torch.randn_like(y_cpu)
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-12, atol=1e-12)
    for a, b_ in zip(torch.autograd.grad(y_cpu, cpu, gy), torch.autograd.grad(y_gpu, gpu, gy.cuda())):
        torch.testing.assert_close(b_.cpu(), a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("args", GRADCHECK_CONFIGS, ids=str)
def test_gradcheck_and_gradgradcheck_cuda(args):
    groups = args["groups"]
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    w = torch.randn(4, 4 // groups, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, device="cuda", requires_grad=True)

    def fn(x, w, b):
        return conv_ext.conv2d(x, w, b, **args)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("groups", [1, 64])
def test_grad_weight_bitwise_deterministic(groups):
    x = torch.randn(8, 64, 56, 56, device="cuda")
    w = torch.randn(64, 64 // groups, 3, 3, device="cuda")
    gy = torch.randn(8, 64, 56, 56, device="cuda")
    ops = torch.ops.conv_ext
    runs = [ops.conv2d_backward_weight(gy, x, list(w.shape), [1], [1], [1], groups) for _ in range(3)]
    runs += [ops.conv2d_backward_input(gy, w, list(x.shape), [1], [1], [1], groups) for _ in range(2)]
    runs += [ops.conv2d_forward(x, w, None, [1], [1], [1], groups) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[1], runs[2])
    assert torch.equal(runs[3], runs[4])
    assert torch.equal(runs[5], runs[6])


def test_empty_batch_cuda():
    x = torch.randn(0, 4, 8, 8, device="cuda", requires_grad=True)
    w = torch.randn(6, 4, 3, 3, device="cuda", requires_grad=True)
    b = torch.randn(6, device="cuda", requires_grad=True)
    y = conv_ext.conv2d(x, w, b, padding=1)
    assert y.shape == (0, 6, 8, 8)
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    assert x.grad.shape == x.shape


def test_side_stream_and_cuda_graph():
    # Kernels run on the current stream, so a CUDA graph can capture them.
    x = torch.randn(2, 8, 16, 16, device="cuda")
    w = torch.randn(8, 8, 3, 3, device="cuda")
    expected = F.conv2d(x.double(), w.double(), padding=1).float()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up on the side stream, as graph capture requires
            conv_ext.conv2d(x, w, padding=1)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = conv_ext.conv2d(x, w, padding=1)
    x.copy_(torch.randn_like(x))
    expected = F.conv2d(x.double(), w.double(), padding=1).float()
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)


def test_other_device_index_and_mixed_devices():
    x = torch.randn(1, 2, 5, 5, device="cuda")
    w = torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError):
        F.conv2d(x, w)
    with pytest.raises(RuntimeError, match="should be the same"):
        conv_ext.conv2d(x, w)


def test_module_on_cuda_matches_nn_conv2d():
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(8, 16, 3, padding=1, groups=2).cuda().double()
    mine = conv_ext.Conv2d(8, 16, 3, padding=1, groups=2).cuda().double()
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(3, 8, 12, 12, device="cuda", dtype=torch.float64)
    torch.testing.assert_close(mine(x), ref(x))
    mine(x).square().sum().backward()
    ref(x).square().sum().backward()
    torch.testing.assert_close(mine.weight.grad, ref.weight.grad)
    torch.testing.assert_close(mine.bias.grad, ref.bias.grad)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("config", [
    (3, 64, 29, 31, 96, 3, 3, 1, 1, 1, 1),
    (2, 128, 28, 28, 256, 1, 1, 2, 0, 1, 1),
    (2, 96, 23, 23, 80, 3, 3, 2, 1, 1, 1),
    (2, 64, 40, 40, 64, 3, 3, 1, 2, 2, 4),
], ids=config_id)
def test_tf32_tensor_cores_match_float64(config, layout):
    # torch's default for float32 convolutions on a GPU is TF32; conv_ext then
    # runs its tensor-core kernels (forward, grad-input, grad-weight). Each
    # pass must be within TF32 rounding of the float64 reference, and must
    # differ from the exact float32 result (else the TF32 kernels did not run).
    from helpers import set_cudnn_allow_tf32
    N, C, H, W, K, R, S, stride, padding, dilation, groups = config
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = make_layout(torch.randn(N, C, H, W, device="cuda"), layout).requires_grad_()
    w = make_layout(torch.randn(K, C // groups, R, S, device="cuda"), layout).requires_grad_()
    gy = None
    results = {}
    before = torch.backends.cudnn.allow_tf32
    try:
        for tf32 in (False, True):
            set_cudnn_allow_tf32(tf32)
            y = conv_ext.conv2d(x, w, None, **args)
            if gy is None:
                gy = torch.randn(y.shape, device="cuda")
            results[tf32] = (y, *torch.autograd.grad(y, (x, w), gy))
    finally:
        set_cudnn_allow_tf32(before)
    y_ref, grads_ref = _reference(x, w, None, gy, args)
    for name, want, exact, tf32 in zip(("output", "grad input", "grad weight"), (y_ref, *grads_ref),
                                      results[False], results[True]):
        _assert_close_scaled(exact, want, torch.float32, name + " (fp32)")
        got = tf32.detach().cpu().double()
        scale = want.abs().max().item() + 1.0
        err = (got - want).abs().max().item()
        assert err <= 5e-3 * scale, f"{name} (tf32): max error {err:.3g} > 5e-3 x {scale:.3g}"
        if name != "grad input" or stride == 1:  # stride-2 grad-input has no TF32 kernel yet
            assert not torch.equal(tf32, exact), f"{name}: TF32 result equals the float32 one"
