"""Function transforms over conv_ext, each compared with F.conv2d under the
same transform: forward-mode AD (forward_ad dual numbers, torch.func.jvp,
jacfwd), forward-over-reverse (Hessian-vector products), vmap over inputs,
weights or both, and torch.func.grad."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import grad, jacfwd, jvp, vjp, vmap

import conv_ext
from helpers import TOLERANCES

CONFIGS = [
    dict(stride=1, padding=1, dilation=1, groups=1),
    dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
    dict(stride=1, padding="same", dilation=2, groups=4),   # depthwise, asymmetric 'same'
]


def make_args(config, dtype=torch.float64, batch=2, bias=True):
    groups = config["groups"]
    x = torch.randn(batch, 4, 7, 6, dtype=dtype)
    w = torch.randn(8, 4 // groups, 3, 2, dtype=dtype)
    b = torch.randn(8, dtype=dtype) if bias else None
    return x, w, b


def pair(config):
    """(conv_ext, torch) functions of (x, w, b) for `config`."""
    return (lambda x, w, b: conv_ext.conv2d(x, w, b, **config),
            lambda x, w, b: F.conv2d(x, w, b, **config))


def assert_all_close(got, want, dtype=torch.float64):
    if isinstance(got, torch.Tensor):
        got, want = (got,), (want,)
    assert len(got) == len(want)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, **TOLERANCES[dtype])


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_forward_ad_dual_numbers(config):
    x, w, b = make_args(config)
    tangents = [torch.randn_like(t) for t in (x, w, b)]
    results = []
    for fn in pair(config):
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p, t) for p, t in zip((x, w, b), tangents)]
            out = fwAD.unpack_dual(fn(*duals))
            results.append((out.primal, out.tangent))
    assert_all_close(results[0], results[1])


@pytest.mark.parametrize("with_tangent", ["input", "weight", "bias"])
def test_forward_ad_single_tangent(with_tangent):
    # Tangents on one argument only (the others get none at all).
    config = CONFIGS[1]
    x, w, b = make_args(config)
    results = []
    for fn in pair(config):
        with fwAD.dual_level():
            args = {"input": x, "weight": w, "bias": b}
            args[with_tangent] = fwAD.make_dual(args[with_tangent], torch.ones_like(args[with_tangent]))
            results.append(fwAD.unpack_dual(fn(*args.values())).tangent)
    assert_all_close(results[0], results[1])


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_func_jvp_and_jacfwd(config):
    x, w, b = make_args(config, batch=1)
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    got, want = (jvp(fn, (x, w, b), tangents) for fn in pair(config))
    assert_all_close(got, want)
    x = x[:, :, :4, :4]   # jacfwd vmaps over every input element: keep it small
    got, want = (jacfwd(fn, argnums=(0, 1, 2))(x, w, b) for fn in pair(config))
    assert_all_close(got, want)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_hessian_vector_product_forward_over_reverse(config):
    x, w, b = make_args(config)
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    results = []
    for fn in pair(config):
        def loss(x, w, b, fn=fn):
            return (fn(x, w, b).tanh() ** 2).sum()
        results.append(jvp(grad(loss, argnums=(0, 1, 2)), (x, w, b), tangents))
    assert_all_close(results[0][0], results[1][0])   # gradients
    assert_all_close(results[0][1], results[1][1])   # Hessian-vector products


def test_forward_over_forward_is_refused():
    # torch.autograd.Function does not differentiate its jvp at an outer
    # forward level, which would silently drop the cross term: refused.
    config = CONFIGS[1]
    x, w, b = make_args(config)
    dx, dw = torch.randn_like(x), torch.randn_like(w)
    f = pair(config)[0]

    def df(x, w):
        return jvp(lambda x, w: f(x, w, b), (x, w), (dx, dw))[1]
    with pytest.raises(NotImplementedError, match="nested forward-mode AD"):
        jvp(df, (x, w), (dx, dw))
    # Forward-over-reverse second derivatives still work: jacfwd(jacrev).
    x1 = x[:1, :, :4, :3]
    got, want = (torch.func.jacfwd(torch.func.jacrev(lambda w, fn=fn: fn(x1, w, b).tanh().sum()))(w)
                 for fn in pair(config))
    assert_all_close(got, want)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_func_grad_and_vjp(config):
    x, w, b = make_args(config)
    results = []
    for fn in pair(config):
        def loss(x, w, b, fn=fn):
            return (fn(x, w, b) ** 3).mean()
        results.append(grad(loss, argnums=(0, 1, 2))(x, w, b))
    assert_all_close(results[0], results[1])
    cotangent = torch.randn_like(pair(config)[1](x, w, b))
    got, want = (vjp(fn, x, w, b)[1](cotangent) for fn in pair(config))
    assert_all_close(got, want)


# in_dims over (input, weight, bias); a batch of 3 along the vmapped dim.
VMAP_IN_DIMS = [
    (0, None, None),     # a batch of inputs
    (None, 0, 0),        # a batch of weights (and biases): an ensemble
    (None, 0, None),
    (0, 0, 0),           # both
    (1, None, None),     # vmapped dim not first
    (None, None, 0),     # only the bias
    (0, 0, None),        # no bias at all (passed as None)
]


def batched(t, dim, size=3):
    if t is None or dim is None:
        return t
    return torch.stack([torch.randn_like(t) for _ in range(size)], dim)


@pytest.mark.parametrize("in_dims", VMAP_IN_DIMS, ids=str)
@pytest.mark.parametrize("config", CONFIGS[:2], ids=str)
def test_vmap(config, in_dims):
    x, w, b = make_args(config, bias=in_dims != (0, 0, None))
    args = [batched(t, d) for t, d in zip((x, w, b), in_dims)]
    got, want = (vmap(fn, in_dims=in_dims)(*args) for fn in pair(config))
    assert_all_close(got, want)


@pytest.mark.parametrize("in_dims", VMAP_IN_DIMS[:4], ids=str)
def test_vmap_of_grad_per_sample_gradients(in_dims):
    # vmap(grad(...)): per-sample gradients / per-model gradients, which run
    # the backward ops under vmap.
    config = CONFIGS[1]
    x, w, b = make_args(config)
    args = [batched(t, d) for t, d in zip((x, w, b), in_dims)]
    results = []
    for fn in pair(config):
        def loss(x, w, b, fn=fn):
            return (fn(x, w, b).sin()).sum()
        results.append(vmap(grad(loss, argnums=(0, 1, 2)), in_dims=in_dims)(*args))
    assert_all_close(results[0], results[1])


def test_vmap_of_jvp_and_nested_vmap():
    config = CONFIGS[0]
    x, w, b = make_args(config)
    ws = batched(w, 0)
    dws = torch.randn_like(ws)
    results = []
    for fn in pair(config):
        def tangent(w, dw, fn=fn):
            return jvp(lambda w: fn(x, w, b), (w,), (dw,))[1]
        results.append(vmap(tangent)(ws, dws))
    assert_all_close(results[0], results[1])
    xs = torch.randn(2, 3, *x.shape, dtype=x.dtype)
    got, want = (vmap(vmap(fn, in_dims=(0, None, None)), in_dims=(0, None, None))(xs, w, b)
                 for fn in pair(config))
    assert_all_close(got, want)


def test_vmap_float32_unbatched_samples():
    # Per-sample vmap as in per-sample-gradient code: each sample is a 3-D
    # (unbatched) input inside vmap.
    x = torch.randn(5, 3, 9, 9)
    w = torch.randn(4, 3, 3, 3)
    got, want = (vmap(lambda s, fn=fn: fn(s, w, None, 1, 1))(x)
                 for fn in (conv_ext.conv2d, F.conv2d))
    assert_all_close(got, want, torch.float32)


def test_gradcheck_forward_ad_and_batched():
    # torch's own checker: forward-mode AD against finite differences, and
    # batched (vmapped) gradients against a loop.
    config = CONFIGS[1]
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fn = pair(config)[0]
    assert torch.autograd.gradcheck(fn, (x, w, b), check_forward_ad=True,
                                    check_batched_grad=True, check_batched_forward_grad=True)
    assert torch.autograd.gradgradcheck(fn, (x, w, b), check_fwd_over_rev=True,
                                        check_batched_grad=True)


@pytest.mark.parametrize("in_dims", [(0, None), (None, 0), (0, 0), (1, 2)], ids=str)
def test_vmap_of_the_ops_themselves(in_dims):
    # The vmap rules registered on the raw ops (no autograd Function), checked
    # against F.conv2d and its gradients computed sample by sample.
    ops = torch.ops.conv_ext
    params = ([2, 1], [1, 0], [1, 2], 2)
    x, w = torch.randn(2, 4, 7, 6, dtype=torch.float64), torch.randn(6, 2, 3, 2, dtype=torch.float64)
    gy = torch.randn_like(F.conv2d(x, w, None, *params))
    B = 3

    def stack(t, dim):
        return t if dim is None else torch.stack([torch.randn_like(t) for _ in range(B)], dim)

    def unstack(t, dim, i):
        return t if dim is None else t.select(dim, i)

    def loop(fn, a, b, dims):
        return torch.stack([fn(unstack(a, dims[0], i), unstack(b, dims[1], i)) for i in range(B)])

    d0, d1 = in_dims
    xs, ws, gys, xs1 = stack(x, d0), stack(w, d1), stack(gy, d0), stack(x, d1)
    assert_all_close(
        vmap(lambda a, b: ops.conv2d_forward(a, b, None, *params), in_dims)(xs, ws),
        loop(lambda a, b: F.conv2d(a, b, None, *params), xs, ws, in_dims))
    assert_all_close(
        vmap(lambda g, b: ops.conv2d_backward_input(g, b, list(x.shape), *params), in_dims)(gys, ws),
        loop(lambda g, b: torch.nn.grad.conv2d_input(x.shape, b, g, *params), gys, ws, in_dims))
    assert_all_close(
        vmap(lambda g, a: ops.conv2d_backward_weight(g, a, list(w.shape), *params), in_dims)(gys, xs1),
        loop(lambda g, a: torch.nn.grad.conv2d_weight(a, w.shape, g, *params), gys, xs1, in_dims))
