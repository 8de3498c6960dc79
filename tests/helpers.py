"""Shared comparison helpers for the conv_ext tests."""
import torch
import torch.nn.functional as F

import conv_ext

# Tolerances for comparing against torch (its algorithm sums in another order).
TOLERANCES = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
}

# Tensor-core kernels: fp32 accumulation of exact 16-bit products, so the
# error is the result's rounding to the 16-bit type (bf16: 8 bits, fp16: 11).
MMA_TOLERANCES = {
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
}


def make_layout(t, layout):
    """`t` in the given layout: 'contiguous', 'channels_last', or 'strided'
    (a non-contiguous view with the same values)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
    if layout == "strided":
        # Every other element of a tensor twice as wide: same values, odd strides.
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    raise ValueError(layout)


def compare_with_torch(x, w, b, *, stride=1, padding=0, dilation=1, groups=1, layout="contiguous",
                       check_grads=True):
    """Run conv_ext.conv2d and F.conv2d on the same inputs (in `layout`), and
    compare the output and, with a random grad_output, every gradient."""
    tol = TOLERANCES[x.dtype]
    x = make_layout(x, layout).requires_grad_(check_grads)
    w = make_layout(w, layout).requires_grad_(check_grads)
    if b is not None:
        b = b.clone().requires_grad_(check_grads)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out = conv_ext.conv2d(x, w, b, **args)
    # torch gets contiguous copies of strided views: its CPU convolution has
    # been seen to corrupt the heap on some strided inputs (torch 2.14).
    tx, tw = (x.contiguous(), w.contiguous()) if layout == "strided" else (x, w)
    expected = F.conv2d(tx, tw, b, **args)
    torch.testing.assert_close(out, expected, **tol)
    assert out.shape == expected.shape
    if layout == "channels_last" and x.dim() == 4:
        assert out.is_contiguous(memory_format=torch.channels_last) == \
            expected.is_contiguous(memory_format=torch.channels_last)
    if not check_grads:
        return out
    grad_output = torch.randn_like(expected)
    inputs = [t for t in (x, w, b) if t is not None]
    got = torch.autograd.grad(out, inputs, grad_output, allow_unused=True)
    want = torch.autograd.grad(expected, inputs, grad_output, allow_unused=True)
    for name, g, e in zip(("input", "weight", "bias"), got, want):
        torch.testing.assert_close(g, e, **tol, msg=lambda m: f"grad {name}: {m}")
    return out


def compare_modules(reference, ours, x, dtype=torch.float32):
    """nn.Conv2d `reference` and conv_ext.Conv2d `ours` (same state) on input
    x: output, input gradient and every parameter's gradient agree."""
    x_ref = x.detach().clone().requires_grad_()
    x_ours = x.detach().clone().requires_grad_()
    y_ref, y_ours = reference(x_ref), ours(x_ours)
    torch.testing.assert_close(y_ours, y_ref, **TOLERANCES[dtype])
    grad_output = torch.randn_like(y_ref)
    y_ref.backward(grad_output)
    y_ours.backward(grad_output)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **TOLERANCES[dtype])
    for (name, p_ours), p_ref in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, **TOLERANCES[dtype], msg=name)


def set_cudnn_allow_tf32(value):
    """Sets torch.backends.cudnn.allow_tf32 even after torch's test utilities
    froze the global flags (torch.testing._internal calls
    disable_global_flags on import)."""
    with getattr(torch.backends, "__allow_nonbracketed_mutation")():
        torch.backends.cudnn.allow_tf32 = value


def pair(v):
    """An int or a tuple as the [h, w] list the ops take."""
    return list(v) if isinstance(v, tuple) else [v, v]


def assert_bf16_within_one_rounding(y, x, w, b, args, summed_channels=None):
    """A bf16 forward `y` against float64 on the same bf16 values:
    |y - exact| <= one bf16 rounding + float32 summation of the C*R*S + 1
    terms (`summed_channels` where the kernel sums more channels than C,
    e.g. a zero channel that pads C to even)."""
    stride, padding, dilation, _ = args
    x64, w64 = x.double(), w.double()
    b64 = b.double() if b is not None else None
    exact = F.conv2d(x64, w64, b64, stride, padding, dilation)
    magnitude = F.conv2d(x64.abs(), w64.abs(), b64.abs() if b is not None else None, stride,
                         padding, dilation)
    channels = w.shape[1] if summed_channels is None else summed_channels
    terms = channels * w.shape[2] * w.shape[3] + 1
    bound = 2.0 ** -8 * exact.abs() + terms * 2.0 ** -24 * magnitude
    err = (y.double() - exact).abs()
    assert bool((err <= bound).all()), f"max excess {(err - bound).max().item()}"


def assert_bitwise_across_threads_runs_and_batch(forward, x, threads=(1, 2, 3)):
    """forward(x) is the same to the bit run to run, at each thread count,
    per sample and for the first two samples (x has N >= 2)."""
    y = forward(x)
    assert torch.equal(forward(x), y)
    saved = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            assert torch.equal(forward(x), y), t
    finally:
        torch.set_num_threads(saved)
    for i in range(x.shape[0]):
        assert torch.equal(forward(x[i:i + 1]), y[i:i + 1]), i
    assert torch.equal(forward(x[:2]), y[:2])


def check_bf16_gradients(x, w, b, args, summed_channels=None):
    """conv_ext.conv2d on bf16 operands: the forward within one rounding
    (assert_bf16_within_one_rounding) and all three gradients within bf16
    precision of float64's on the same values."""
    stride, padding, dilation, _ = args
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    y = conv_ext.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
    gy = torch.randn(y.shape).bfloat16()
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), gy)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y64 = F.conv2d(x64, w64, b64, stride, padding, dilation)
    want = torch.autograd.grad(y64, (x64, w64, b64), gy.double())
    assert_bf16_within_one_rounding(y.detach(), x.detach(), w.detach(), b.detach(), args,
                                    summed_channels)
    for got, ref in zip((gx, gw, gb), want):
        assert got.dtype == torch.bfloat16
        scale = ref.abs().max().item()
        torch.testing.assert_close(got.double(), ref, rtol=2.0 ** -7, atol=1e-3 * scale)


def assert_bf16_grad_input_within_one_rounding(got, grad_output, w, input_size, args):
    """A bf16 grad-input against float64 on the same bf16 values: one bf16
    rounding + float32 summation of the K*R*S terms (+ a pair channel)."""
    stride, padding, dilation, _ = args
    exact = torch.nn.grad.conv2d_input(list(input_size), w.double(), grad_output.double(), stride,
                                       padding, dilation)
    magnitude = torch.nn.grad.conv2d_input(list(input_size), w.double().abs(),
                                           grad_output.double().abs(), stride, padding, dilation)
    terms = (w.shape[0] + 1) * w.shape[2] * w.shape[3]
    bound = 2.0 ** -8 * exact.abs() + terms * 2.0 ** -24 * magnitude
    err = (got.double() - exact).abs()
    assert got.dtype == torch.bfloat16 and got.shape == exact.shape
    assert bool((err <= bound).all()), f"max excess {(err - bound).max().item()}"
