"""torch.compile and torch.library.opcheck. Compilation is slow on few cores,
so there are few compile tests, each covering a lot: no graph breaks,
forward and backward equal to eager, new shapes (dynamic), CUDA graphs."""
import copy

import pytest
import torch
import torch.nn as nn

import conv_ext
from helpers import TOLERANCES, make_layout


class SmallNet(nn.Module):
    """Every kind of conv the ops handle: padding, stride, groups, dilation,
    'same' padding, 1x1, bias and no bias, a reflect padding_mode."""

    def __init__(self, conv=nn.Conv2d):
        super().__init__()
        self.features = nn.Sequential(
            conv(3, 8, 3, padding=1), nn.ReLU(),
            conv(8, 8, 3, stride=2, padding=1, groups=4, bias=False), nn.ReLU(),
            conv(8, 8, 3, padding="same", dilation=2, groups=8), nn.Tanh(),
            conv(8, 6, 1), nn.ReLU(),
            conv(6, 4, (3, 2), padding=(1, 0), padding_mode="reflect"),
        )

    def forward(self, x):
        return self.features(x).mean((2, 3))


def make_models(device="cpu"):
    reference = SmallNet().to(device)
    return reference, conv_ext.convert(copy.deepcopy(reference))


def forward_backward(model, x):
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def assert_same_results(got, want, dtype=torch.float32):
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(got[0], want[0], **tol)
    for g, e in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, e, **tol)


def test_compile_fullgraph_matches_eager_without_graph_breaks():
    torch._dynamo.reset()
    reference, model = make_models()
    x = make_layout(torch.randn(2, 3, 16, 15), "channels_last")
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(model, fullgraph=True)
    eager = forward_backward(model, x)
    assert_same_results(forward_backward(compiled, x), eager)
    # And eager conv_ext equals nn.Conv2d, so compiled equals torch too.
    assert_same_results(eager, forward_backward(reference, x))


def test_compile_dynamic_shapes():
    # New input shapes run through one dynamic graph (fake kernels with
    # symbolic sizes, AOT autograd), no recompilation. aot_eager keeps it
    # quick; inductor is covered above.
    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    _, model = make_models()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    for shape in [(2, 3, 16, 14), (3, 3, 21, 18), (5, 3, 12, 30)]:  # not square: duck sizing
        x = torch.randn(shape)
        assert_same_results(forward_backward(compiled, x), forward_backward(model, x))
    assert counter.frame_count == 1


def test_compile_functional_and_autocast():
    # The functional API traced directly, under CPU autocast (bf16).
    torch._dynamo.reset()
    x, w, b = torch.randn(2, 4, 10, 10), torch.randn(6, 2, 3, 3), torch.randn(6)

    def fn(x, w, b):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return conv_ext.conv2d(x, w, b, stride=2, padding=1, groups=2)

    got = torch.compile(fn, fullgraph=True)(x, w, b)
    want = fn(x, w, b)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, **TOLERANCES[torch.bfloat16])


@pytest.mark.cuda
def test_compile_reduce_overhead_cuda_graphs():
    # CUDA graphs replay the kernels on the stream captured, so the kernels
    # must run on the current stream; several replays, fresh inputs each time.
    torch._dynamo.reset()
    reference, model = make_models("cuda")
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    for _ in range(4):
        x = torch.randn(4, 3, 20, 20, device="cuda")
        got = forward_backward(compiled, x)
        assert_same_results(got, forward_backward(model, x))
        assert_same_results(got, forward_backward(reference, x))


# opcheck runs, among others, test_schema, test_autograd_registration,
# test_faketensor, test_aot_dispatch_static and test_aot_dispatch_dynamic.
OPCHECK_CASES = [
    dict(N=2, C=4, K=6, groups=1, stride=[1], padding=[1], dilation=[1], bias=True,
         layout="contiguous", dtype=torch.float32),
    dict(N=1, C=4, K=4, groups=4, stride=[1, 2], padding=[2, 0], dilation=[2, 1], bias=False,
         layout="channels_last", dtype=torch.float64),
    dict(N=0, C=2, K=3, groups=1, stride=[2], padding=[0], dilation=[1], bias=True,
         layout="contiguous", dtype=torch.float32),
    dict(N=3, C=6, K=4, groups=2, stride=[3, 1], padding=[1, 1], dilation=[1], bias=True,
         layout="strided", dtype=torch.float64),
]


@pytest.mark.parametrize("case", OPCHECK_CASES, ids=lambda c: f"N{c['N']}g{c['groups']}{c['layout']}")
def test_opcheck_every_op(case):
    c = dict(case)
    N, C, K, groups, dtype = c["N"], c["C"], c["K"], c["groups"], c["dtype"]
    params = (c["stride"], c["padding"], c["dilation"], groups)
    x = make_layout(torch.randn(N, C, 9, 8, dtype=dtype), c["layout"]).requires_grad_()
    w = make_layout(torch.randn(K, C // groups, 3, 2, dtype=dtype), c["layout"]).requires_grad_()
    b = torch.randn(K, dtype=dtype, requires_grad=True) if c["bias"] else None
    ops = torch.ops.conv_ext
    gy = torch.randn_like(ops.conv2d_forward(x, w, b, *params))
    for op, args in [(ops.conv2d_forward, (x, w, b, *params)),
                     (ops.conv2d_backward_input, (gy, w, list(x.shape), *params)),
                     (ops.conv2d_backward_weight, (gy, x, list(w.shape), *params))]:
        results = torch.library.opcheck(op, args)
        assert results["test_aot_dispatch_dynamic"] == "SUCCESS", results
        assert set(results.values()) == {"SUCCESS"}, results
