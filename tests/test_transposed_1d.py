"""conv_transpose2d, conv1d and conv_transpose1d (functions and modules)
against torch: random inputs over stride / padding / output_padding /
dilation / groups, all gradients, float64 gradcheck and gradgradcheck,
torch.compile without graph breaks, and the depthwise causal conv1d."""
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import conv_ext
from helpers import TOLERANCES

FUNCTIONS = {  # conv_ext's function -> torch's
    conv_ext.conv_transpose2d: F.conv_transpose2d,
    conv_ext.conv_transpose1d: F.conv_transpose1d,
    conv_ext.conv1d: F.conv1d,
}


def _compare(ours, theirs, args, kwargs, dtype=torch.float32):
    """Forward and every gradient (random grad_output) of ours and theirs."""
    tol = TOLERANCES[dtype]
    args = [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a
            for a in args]
    expected = theirs(*args, **kwargs)
    got = ours(*args, **kwargs)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, **tol)
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    grad_output = torch.randn_like(expected)
    want = torch.autograd.grad(expected, inputs, grad_output)
    have = torch.autograd.grad(got, inputs, grad_output)
    for name, g, e in zip(("input", "weight", "bias"), have, want):
        torch.testing.assert_close(g, e, **tol, msg=lambda m: f"grad {name}: {m}")


# (stride, padding, output_padding, dilation, groups): output_padding below
# stride or below dilation (the last two: output_padding >= stride, allowed
# by dilation > stride).
TRANSPOSED_CASES = [
    (1, 0, 0, 1, 1), (2, 0, 0, 1, 1), (2, 1, 1, 1, 1), (3, 2, 2, 1, 2), (2, 1, 0, 2, 1),
    ((2, 3), (1, 0), (1, 2), (1, 2), 1), (1, 1, 1, 2, 2), ((1, 2), (0, 1), (2, 1), (3, 2), 1),
    (2, 3, 1, 1, 4),
]


@pytest.mark.parametrize("stride,padding,output_padding,dilation,groups", TRANSPOSED_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv_transpose2d_matches_torch(stride, padding, output_padding, dilation, groups, dtype):
    c, k = 2 * groups, 2 * groups
    x = torch.randn(2, c, 5, 6, dtype=dtype)
    w = torch.randn(c, k // groups, 3, 4, dtype=dtype)
    b = torch.randn(k, dtype=dtype)
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                  dilation=dilation, groups=groups)
    _compare(conv_ext.conv_transpose2d, F.conv_transpose2d, (x, w, b), kwargs, dtype)
    _compare(conv_ext.conv_transpose2d, F.conv_transpose2d, (x, w), kwargs, dtype)


@pytest.mark.parametrize("stride,padding,output_padding,dilation,groups", TRANSPOSED_CASES)
def test_conv_transpose1d_matches_torch(stride, padding, output_padding, dilation, groups):
    first = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731
    c = 2 * groups
    x = torch.randn(3, c, 7)
    w = torch.randn(c, 3, 3)
    b = torch.randn(3 * groups)
    kwargs = dict(stride=first(stride), padding=first(padding),
                  output_padding=first(output_padding), dilation=first(dilation), groups=groups)
    if not (kwargs["output_padding"] < kwargs["stride"]
            or kwargs["output_padding"] < kwargs["dilation"]):
        kwargs["output_padding"] = 0
    _compare(conv_ext.conv_transpose1d, F.conv_transpose1d, (x, w, b), kwargs)


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), (3, 2, 2, 2), (1, "same", 3, 1), (1, "valid", 1, 4),
    (1, 3, 1, 4),  # depthwise causal (kernel 4, padding 3) before the trim
])
def test_conv1d_matches_torch(stride, padding, dilation, groups):
    x = torch.randn(2, 4, 19)
    w = torch.randn(8, 4 // groups, 4 if groups == 4 else 3)
    b = torch.randn(8)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _compare(conv_ext.conv1d, F.conv1d, (x, w, b), kwargs)


def test_conv1d_channels_last_view_input():
    # (N, L, C) activations transposed to (N, C, L), as sequence models do.
    x = torch.randn(2, 33, 6).transpose(1, 2)
    w = torch.randn(6, 1, 4)
    _compare(conv_ext.conv1d, F.conv1d, (x, w), dict(padding=3, groups=6))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv_transpose2d_layouts(layout):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=fmt)
    w = torch.randn(6, 4, 2, 2).contiguous(memory_format=fmt)
    got = conv_ext.conv_transpose2d(x, w, stride=2)
    expected = F.conv_transpose2d(x, w, stride=2)
    torch.testing.assert_close(got, expected, **TOLERANCES[torch.float32])
    assert got.is_contiguous(memory_format=fmt) == expected.is_contiguous(memory_format=fmt)


def test_unbatched_inputs():
    x2, w2 = torch.randn(4, 5, 5), torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(conv_ext.conv_transpose2d(x2, w2, stride=2),
                               F.conv_transpose2d(x2, w2, stride=2))
    x1, w1 = torch.randn(4, 9), torch.randn(4, 3, 3)
    torch.testing.assert_close(conv_ext.conv_transpose1d(x1, w1), F.conv_transpose1d(x1, w1))
    torch.testing.assert_close(conv_ext.conv1d(x1, w1.transpose(0, 1).contiguous()),
                               F.conv1d(x1, w1.transpose(0, 1).contiguous()))


@pytest.mark.parametrize("fn", list(FUNCTIONS), ids=lambda f: f.__name__)
def test_gradcheck_and_gradgradcheck(fn):
    transposed = "transpose" in fn.__name__
    dims = 2 if fn is conv_ext.conv_transpose2d else 1
    spatial = (4, 3)[:dims]
    x = torch.randn(2, 4, *spatial, dtype=torch.float64, requires_grad=True)
    w_shape = (4, 1, *(2, 3)[:dims]) if transposed else (2, 2, *(2, 3)[:dims])
    w = torch.randn(*w_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2 if transposed else 2, dtype=torch.float64, requires_grad=True)
    if transposed:
        kwargs = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    else:
        kwargs = dict(stride=1, padding=1, dilation=2, groups=2)
    f = lambda x, w, b: fn(x, w, b, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_forward_mode_ad_transposed():
    x, w = torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.randn(2, 3, 3, 3, dtype=torch.float64)
    tx, tw = torch.randn_like(x), torch.randn_like(w)
    kwargs = dict(stride=2, output_padding=1)
    _, ours = torch.func.jvp(lambda a, b: conv_ext.conv_transpose2d(a, b, **kwargs), (x, w), (tx, tw))
    _, theirs = torch.func.jvp(lambda a, b: F.conv_transpose2d(a, b, **kwargs), (x, w), (tx, tw))
    torch.testing.assert_close(ours, theirs)


def test_vmap_transposed():
    x, w = torch.randn(3, 1, 2, 4, 4), torch.randn(3, 2, 3, 2, 2)
    ours = torch.vmap(lambda a, b: conv_ext.conv_transpose2d(a, b, stride=2))(x, w)
    theirs = torch.vmap(lambda a, b: F.conv_transpose2d(a, b, stride=2))(x, w)
    torch.testing.assert_close(ours, theirs, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("fn", list(FUNCTIONS), ids=lambda f: f.__name__)
def test_compile_fullgraph(fn):
    torch._dynamo.reset()
    transposed = "transpose" in fn.__name__
    dims = 2 if fn is conv_ext.conv_transpose2d else 1
    x = torch.randn(2, 4, *(6, 5)[:dims], requires_grad=True)
    w = torch.randn(*((4, 2) if transposed else (2, 4)), *(3, 3)[:dims], requires_grad=True)
    kwargs = dict(stride=2, padding=1, output_padding=1) if transposed else dict(padding=1)

    def step(x, w):
        return fn(x, w, **kwargs).square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x, w)
    gx, gw = torch.autograd.grad(loss, (x, w))
    ref = step(x, w)
    rx, rw = torch.autograd.grad(ref, (x, w))
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)


def test_depthwise_causal_conv1d():
    # Mamba-style: kernel 4, padding 3, groups = C, keep the first L outputs.
    c, length = 16, 300
    layer = nn.Conv1d(c, c, 4, padding=3, groups=c)
    ours = conv_ext.convert(layer)
    x = torch.randn(2, c, length, requires_grad=True)
    y_ref = layer(x)[..., :length]
    y = ours(x)[..., :length]
    torch.testing.assert_close(y, y_ref, **TOLERANCES[torch.float32])
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(y_ref, x, g)[0],
                               **TOLERANCES[torch.float32])


@pytest.mark.parametrize("cls,ours_cls,ctor,shape", [
    (nn.ConvTranspose2d, conv_ext.ConvTranspose2d, (4, 6, 3), (2, 4, 5, 5)),
    (nn.ConvTranspose1d, conv_ext.ConvTranspose1d, (4, 6, 3), (2, 4, 7)),
    (nn.Conv1d, conv_ext.Conv1d, (4, 6, 3), (2, 4, 7)),
])
def test_modules(cls, ours_cls, ctor, shape):
    kwargs = dict(stride=2, padding=1, groups=2)
    ref = cls(*ctor, **kwargs)
    ours = ours_cls(*ctor, **kwargs)
    ours.load_state_dict(ref.state_dict())
    assert isinstance(ours, cls)
    assert repr(ours) == "conv_ext." + repr(ref)
    x = torch.randn(*shape)
    torch.testing.assert_close(ours(x), ref(x), **TOLERANCES[torch.float32])


def test_conv_transpose_output_size():
    ref = nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1)
    ours = conv_ext.convert(ref)
    x = torch.randn(1, 3, 6, 6)
    for size in ([12, 12], [11, 12], (1, 5, 12, 11)):
        y = ours(x, output_size=size)
        torch.testing.assert_close(y, ref(x, output_size=size), **TOLERANCES[torch.float32])
    with pytest.raises(ValueError, match="requested an output size of"):
        ours(x, output_size=[20, 20])
    ref1 = nn.ConvTranspose1d(3, 5, 3, stride=2, padding=1)
    x1 = torch.randn(1, 3, 6)
    torch.testing.assert_close(conv_ext.convert(ref1)(x1, output_size=[12]),
                               ref1(x1, output_size=[12]), **TOLERANCES[torch.float32])


def test_transposed_padding_mode_refused_as_torch():
    m = conv_ext.ConvTranspose2d(2, 2, 3)
    m.padding_mode = "reflect"
    with pytest.raises(ValueError, match="Only `zeros` padding mode is supported"):
        m(torch.randn(1, 2, 4, 4))


@pytest.mark.parametrize("padding_mode", ["reflect", "circular", "replicate"])
def test_conv1d_padding_modes(padding_mode):
    ref = nn.Conv1d(3, 4, 3, padding=2, padding_mode=padding_mode)
    x = torch.randn(2, 3, 9)
    torch.testing.assert_close(conv_ext.convert(ref)(x), ref(x), **TOLERANCES[torch.float32])


def _bad_calls():
    """Calls that torch rejects: (name, args, kwargs), run through both."""
    r = torch.randn
    t2 = F.conv_transpose2d
    t1 = F.conv_transpose1d
    c1 = F.conv1d
    return [
        ("t2 channels", t2, (r(1, 3, 4, 4), r(2, 2, 3, 3)), {}),
        ("t2 bias", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3), r(3)), {}),
        ("t2 bias 2d", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3), r(2, 1)), {}),
        ("t2 groups 0", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(groups=0)),
        ("t2 groups 3", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(groups=3)),
        ("t2 groups divide", t2, (r(1, 3, 4, 4), r(3, 2, 3, 3)), dict(groups=2)),
        ("t2 output_padding", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(stride=2, output_padding=2)),
        ("t2 output_padding<0", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(output_padding=-1)),
        ("t2 output_padding len", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(output_padding=(1, 1, 1))),
        ("t2 stride 0", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(stride=0)),
        ("t2 padding<0", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(padding=-1)),
        ("t2 dilation 0", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(dilation=(1, 0))),
        ("t2 output too small", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(padding=5)),
        ("t2 weight 2d", t2, (r(1, 2, 4, 4), r(2, 2)), {}),
        ("t2 weight 3d", t2, (r(1, 2, 4, 4), r(2, 2, 3)), {}),
        ("t2 input 5d", t2, (r(1, 2, 4, 4, 1), r(2, 2, 3, 3)), {}),
        ("t2 dtype", t2, (r(1, 2, 4, 4).double(), r(2, 2, 3, 3)), {}),
        ("t2 empty H", t2, (r(1, 2, 0, 4), r(2, 2, 3, 3)), {}),
        ("t2 kernel 0", t2, (r(1, 2, 4, 4), r(2, 2, 0, 3)), {}),
        ("t2 padding str", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(padding="same")),
        ("t2 groups float", t2, (r(1, 2, 4, 4), r(2, 2, 3, 3)), dict(groups=1.0)),
        ("t2 input not tensor", t2, (3, r(2, 2, 3, 3)), {}),
        ("t1 output too small", t1, (r(1, 2, 4), r(2, 2, 3)), dict(padding=5)),
        ("t1 dilation 0", t1, (r(1, 2, 4), r(2, 2, 3)), dict(dilation=0)),
        ("t1 output_padding", t1, (r(1, 2, 4), r(2, 2, 3)), dict(stride=2, output_padding=2)),
        ("t1 empty L", t1, (r(1, 2, 0), r(2, 2, 3)), {}),
        ("t1 kernel 0", t1, (r(1, 2, 4), r(2, 2, 0)), {}),
        ("t1 channels", t1, (r(1, 3, 4), r(2, 2, 3)), {}),
        ("t1 stride len", t1, (r(1, 2, 4), r(2, 2, 3)), dict(stride=(1, 1))),
        ("t1 input 4d", t1, (r(1, 2, 4, 4), r(2, 2, 3)), {}),
        ("c1 input 4d", c1, (r(1, 2, 4, 4), r(2, 2, 3)), {}),
        ("c1 weight 4d", c1, (r(1, 2, 4), r(2, 2, 3, 3)), {}),
        ("c1 kernel too big", c1, (r(1, 2, 4), r(2, 2, 7)), {}),
        ("c1 channels", c1, (r(1, 2, 4), r(2, 3, 3)), {}),
        ("c1 bias", c1, (r(1, 2, 4), r(2, 2, 3), r(3)), {}),
        ("c1 dilation 0", c1, (r(1, 2, 4), r(2, 2, 3)), dict(dilation=0)),
        ("c1 empty L", c1, (r(1, 2, 0), r(2, 2, 3)), dict(padding=2)),
        ("c1 kernel 0", c1, (r(1, 2, 4), r(2, 2, 0)), {}),
        ("c1 dtype", c1, (r(1, 2, 4).double(), r(2, 2, 3)), {}),
        ("c1 bias dtype", c1, (r(1, 2, 4).double(), r(2, 2, 3).double(), r(2)), {}),
        ("c1 padding str", c1, (r(1, 2, 4), r(2, 2, 3)), dict(padding="foo")),
        ("c1 same strided", c1, (r(1, 2, 4), r(2, 2, 3)), dict(padding="same", stride=2)),
        ("c1 groups", c1, (r(2, 2, 4), r(2, 2, 2)), dict(groups=3)),
    ]


_OURS = {F.conv_transpose2d: conv_ext.conv_transpose2d,
         F.conv_transpose1d: conv_ext.conv_transpose1d, F.conv1d: conv_ext.conv1d}


@pytest.mark.parametrize("name,fn,args,kwargs", _bad_calls(), ids=lambda v: v if isinstance(v, str) else "")
def test_errors_match_torch(name, fn, args, kwargs):
    with pytest.raises(Exception) as theirs:
        fn(*args, **kwargs)
    with pytest.raises(Exception) as ours:
        _OURS[fn](*args, **kwargs)
    assert type(ours.value) is type(theirs.value)
    # torch's message, first line (its C++ errors append a source location).
    assert str(ours.value).split("\n")[0] == str(theirs.value).split("\n")[0]


def test_variants_benchmark_runs_and_checks():
    # bench/conv_variants.py (the transposed and 1-D suites) on one tiny layer.
    from bench import conv_variants
    layer = conv_variants.Layer("tiny_up", "conv_transpose2d", 4, 2, 5, 2, 2)
    row = conv_variants.run_layer(layer, "train", torch.float32, rounds=1, min_time=0.0)
    assert row["correct"] and row["ratio"] > 0
    assert {l.kind for l in conv_variants.SUITES["all"]} == {"conv_transpose2d", "conv1d"}
