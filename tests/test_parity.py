"""Cases where conv_ext once differed from torch, now matched: complex
dtypes (built on the real kernels), zero input channels, the even-kernel
'same' padding warning, and the order of the dtype checks."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import conv_ext

CASES = [  # (ours, torch's, input shape, weight shape, kwargs)
    (conv_ext.conv2d, F.conv2d, (2, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, padding=1, groups=2)),
    (conv_ext.conv2d, F.conv2d, (1, 3, 6, 6), (4, 3, 2, 2), dict(padding="same", dilation=1)),
    (conv_ext.conv1d, F.conv1d, (2, 4, 9), (4, 1, 4), dict(padding=3, groups=4)),
    (conv_ext.conv_transpose2d, F.conv_transpose2d, (2, 4, 4, 5), (4, 3, 3, 3),
     dict(stride=2, padding=1, output_padding=1, groups=1)),
    (conv_ext.conv_transpose1d, F.conv_transpose1d, (2, 4, 6), (4, 3, 3), dict(stride=2)),
]


@pytest.mark.parametrize("ours,theirs,x_shape,w_shape,kwargs", CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_complex64_matches_torch(ours, theirs, x_shape, w_shape, kwargs):
    x = torch.randn(*x_shape, dtype=torch.cfloat, requires_grad=True)
    w = torch.randn(*w_shape, dtype=torch.cfloat, requires_grad=True)
    k = w_shape[1] * kwargs.get("groups", 1) if "transpose" in ours.__name__ else w_shape[0]
    b = torch.randn(k, dtype=torch.cfloat, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # even-kernel 'same' padding
        got, expected = ours(x, w, b, **kwargs), theirs(x, w, b, **kwargs)
    assert got.dtype == expected.dtype == torch.cfloat
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(expected)
    for have, want in zip(torch.autograd.grad(got, (x, w, b), g),
                          torch.autograd.grad(expected, (x, w, b), g)):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fn,x_shape,w_shape,kwargs", [
    (conv_ext.conv2d, (1, 2, 4, 3), (2, 1, 2, 2), dict(stride=2, padding=1, groups=2)),
    (conv_ext.conv1d, (1, 2, 5), (2, 1, 3), dict(padding=2, groups=2)),
    (conv_ext.conv_transpose2d, (1, 2, 3, 2), (2, 1, 2, 2), dict(stride=2, output_padding=1)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_complex128_gradcheck_and_gradgradcheck(fn, x_shape, w_shape, kwargs):
    # Tiny: gradgradcheck of complex functions takes many numerical passes.
    x = torch.randn(*x_shape, dtype=torch.cdouble, requires_grad=True)
    w = torch.randn(*w_shape, dtype=torch.cdouble, requires_grad=True)
    k = w_shape[1] * kwargs.get("groups", 1) if "transpose" in fn.__name__ else w_shape[0]
    b = torch.randn(k, dtype=torch.cdouble, requires_grad=True)
    f = lambda x, w, b: fn(x, w, b, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_complex_module():
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 4, 3, padding=1, dtype=torch.cfloat)
    ours = conv_ext.convert(nn.Conv2d(3, 4, 3, padding=1, dtype=torch.cfloat))
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 5, 5, dtype=torch.cfloat)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)
    direct = conv_ext.ConvTranspose2d(3, 4, 2, stride=2, dtype=torch.cdouble)
    assert direct(x.to(torch.cdouble)).shape == (2, 4, 10, 10)


@pytest.mark.parametrize("fn,theirs,x_shape,w_shape,kwargs", [
    (conv_ext.conv2d, F.conv2d, (2, 0, 5, 5), (4, 0, 3, 3), dict(padding=1)),
    (conv_ext.conv2d, F.conv2d, (2, 0, 5, 5), (4, 0, 3, 3), dict(stride=2, groups=2)),
    (conv_ext.conv2d, F.conv2d, (0, 0, 5, 5), (4, 0, 3, 3), {}),
    (conv_ext.conv1d, F.conv1d, (2, 0, 5), (4, 0, 3), {}),
])
def test_zero_input_channels_as_torch(fn, theirs, x_shape, w_shape, kwargs):
    x = torch.randn(*x_shape, requires_grad=True)
    w = torch.randn(*w_shape, requires_grad=True)
    b = torch.randn(w_shape[0], requires_grad=True)
    got, expected = fn(x, w, b, **kwargs), theirs(x, w, b, **kwargs)
    assert got.shape == expected.shape and got.shape[1] == 0
    grads = torch.autograd.grad(got, (x, w, b), torch.randn_like(got))
    want = torch.autograd.grad(expected, (x, w, b), torch.randn_like(expected))
    for g, e in zip(grads, want):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e)
    assert torch.equal(grads[2], torch.zeros(w_shape[0]))


@pytest.mark.parametrize("fn,theirs,x,w", [
    (conv_ext.conv2d, F.conv2d, torch.randn(1, 2, 6, 6), torch.randn(3, 2, 2, 3)),
    (conv_ext.conv1d, F.conv1d, torch.randn(1, 2, 6), torch.randn(3, 2, 4)),
])
def test_same_padding_with_even_kernel_warns_as_torch(fn, theirs, x, w):
    # torch's text (TORCH_WARN_ONCE: torch itself warns once per process).
    with pytest.warns(UserWarning, match=r"Using padding='same' with even kernel lengths and odd "
                                         r"dilation may require a zero-padded copy of the input "
                                         r"be created"):
        got = fn(x, w, padding="same")
    torch.testing.assert_close(got, theirs(x, w, padding="same"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(x, w[:, :, :1, :1] if w.dim() == 4 else w[..., :1], padding="same")  # odd: no warning


@pytest.mark.parametrize("fn,theirs,shape", [(conv_ext.conv2d, F.conv2d, (1, 2, 5, 5)),
                                             (conv_ext.conv1d, F.conv1d, (1, 2, 5))])
@pytest.mark.parametrize("dtypes", [
    (torch.double, torch.float, torch.float), (torch.double, torch.double, torch.float),
    (torch.float, torch.double, torch.float), (torch.float, torch.float, torch.double),
    (torch.double, torch.float, None), (torch.float, torch.half, None),
], ids=str)
def test_dtype_mismatch_message_and_order_as_torch(fn, theirs, shape, dtypes):
    x = torch.randn(*shape, dtype=dtypes[0])
    # (A 3-wide kernel: on other shapes torch's CPU convolution may take its
    # oneDNN path, whose weight-dtype message differs.)
    w = torch.randn(3, 2, *[3] * (len(shape) - 2), dtype=dtypes[1])
    b = None if dtypes[2] is None else torch.randn(3, dtype=dtypes[2])
    with pytest.raises(RuntimeError) as expected:
        theirs(x, w, b)
    with pytest.raises(RuntimeError) as got:
        fn(x, w, b)
    assert str(got.value).split("\n")[0] == str(expected.value).split("\n")[0]
