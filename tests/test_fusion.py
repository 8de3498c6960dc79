"""conv_ext::conv2d_fused (every epilogue against the unfused chain computed
by torch, CPU and emulated CUDA, float32/float64, NCHW and channels_last),
its autograd and errors, and conv_ext.fuse on small models and torchvision's
ResNet/MobileNet/EfficientNet (random weights, BatchNorm statistics from a
few training-mode passes)."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import conv_ext
from conv_ext.fused import ACTIVATIONS, conv2d_fused_reference
from helpers import TOLERANCES, make_layout

# (C, H, W, K, R, S, stride, padding, dilation, groups): one per CPU forward
# path (dense, pointwise, strided pointwise, first layer, depthwise, grouped)
# with ragged sizes.
SHAPES = [
    (8, 9, 11, 13, 3, 3, 1, 1, 1, 1),
    (16, 7, 5, 20, 1, 1, 1, 0, 1, 1),
    (12, 9, 9, 7, 1, 1, 2, 0, 1, 1),
    (3, 13, 12, 10, 5, 5, 2, 2, 1, 1),
    (12, 10, 9, 12, 3, 3, 1, 1, 1, 12),
    (12, 11, 8, 12, 3, 3, 2, 1, 2, 12),
    (8, 6, 7, 6, 3, 2, 1, 1, 1, 2),
]
# (scale and shift, residual, residual_before_activation)
EPILOGUES = [(False, None, True), (True, None, True), (True, "add", True), (False, "add", False)]


def _operands(shape, dtype, layout, with_scale, with_residual, n=3):
    C, H, W, K, R, S, stride, padding, dilation, groups = shape
    x = make_layout(torch.randn(n, C, H, W, dtype=dtype), layout)
    w = make_layout(torch.randn(K, C // groups, R, S, dtype=dtype), layout)
    b = torch.randn(K, dtype=dtype)
    scale = torch.rand(K, dtype=dtype) + 0.5 if with_scale else None
    shift = torch.randn(K, dtype=dtype) if with_scale else None
    out = F.conv2d(x, w, None, stride, padding, dilation, groups)
    residual = make_layout(torch.randn_like(out), layout) if with_residual else None
    return x, w, b, scale, shift, residual, (stride, padding, dilation, groups)


def _check_epilogues(run, dtype, layout, activation, shapes):
    tol = TOLERANCES[dtype]
    for shape in shapes:
        for with_scale, residual, before in EPILOGUES:
            x, w, b, scale, shift, res, conv = _operands(shape, dtype, layout, with_scale, residual)
            got = run(x, w, b, scale, shift, res, activation, before, *conv)
            want = conv2d_fused_reference(x, w, b, scale, shift, res, activation, before, *conv,
                                          conv=F.conv2d)
            torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{shape} {before}: {m}")
            if layout == "channels_last":
                assert got.is_contiguous(memory_format=torch.channels_last)


def _run_cpu(x, w, b, scale, shift, res, activation, before, stride, padding, dilation, groups):
    return torch.ops.conv_ext.conv2d_fused(x, w, b, scale, shift, res, activation, before,
                                           [stride], [padding], [dilation], groups)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_epilogue_cpu(activation, dtype, layout):
    _check_epilogues(_run_cpu, dtype, layout, activation, SHAPES)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_epilogue_cpu_half(dtype):
    # The generic kernel's dtypes: epilogue in float32, one rounding at the end.
    shape = SHAPES[0]
    x, w, b, scale, shift, res, conv = _operands(shape, dtype, "contiguous", True, True)
    got = _run_cpu(x, w, b, scale, shift, res, "silu", True, *conv)
    up = [t.float() for t in (x, w, b, scale, shift, res)]
    want = conv2d_fused_reference(*up, "silu", True, *conv, conv=F.conv2d).to(dtype)
    torch.testing.assert_close(got, want, **TOLERANCES[dtype])


# Small problems for the emulation (its thread-per-CUDA-thread launches are
# slow): the dense GEMM, pointwise and strided depthwise kernels.
EMULATION_SHAPES = [
    (8, 6, 7, 9, 3, 3, 1, 1, 1, 1),
    (12, 5, 5, 10, 1, 1, 1, 0, 1, 1),
    (8, 7, 6, 8, 3, 3, 2, 1, 1, 8),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_epilogue_emulated_cuda(emu, activation, dtype):
    def run(x, w, b, scale, shift, res, activation, before, stride, padding, dilation, groups):
        return emu.conv2d_fused(x, w, b, scale, shift, res, activation, before, [stride],
                                [padding], [dilation], groups)
    for layout in ("contiguous", "channels_last"):
        _check_epilogues(run, dtype, layout, activation, EMULATION_SHAPES)


@pytest.mark.cuda
@pytest.mark.parametrize("activation", ["relu", "silu", "gelu_tanh"])
def test_epilogue_cuda(activation):
    def run(x, w, b, scale, shift, res, activation, before, *conv):
        args = [t.cuda() if t is not None else None for t in (x, w, b, scale, shift, res)]
        return _run_cpu(*args, activation, before, *conv).cpu()
    _check_epilogues(run, torch.float32, "contiguous", activation, SHAPES)


def test_empty_batch():
    x = torch.randn(0, 4, 5, 5)
    w = torch.randn(6, 4, 3, 3)
    out = conv_ext.conv2d_fused(x, w, torch.randn(6), activation="relu", padding=1)
    assert out.shape == (0, 6, 5, 5)


def test_errors():
    x, w = torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        torch.ops.conv_ext.conv2d_fused(x, w, None, None, None, None, "tanh", True, [1], [1],
                                        [1], 1)
    with pytest.raises(ValueError, match="unknown activation"):
        conv_ext.conv2d_fused(x, w, activation="sigmoid")
    with pytest.raises(RuntimeError, match="expected residual of size"):
        conv_ext.conv2d_fused(x, w, residual=torch.randn(2, 6, 3, 3), padding=1)
    with pytest.raises(RuntimeError, match="expected scale to be 1-dimensional with 6"):
        conv_ext.conv2d_fused(x, w, scale=torch.randn(5))
    with pytest.raises(RuntimeError, match="should be the same"):
        conv_ext.conv2d_fused(x, w, shift=torch.randn(6, dtype=torch.float64))
    # The convolution's own checks and messages come first.
    with pytest.raises(RuntimeError, match="expected input"):
        conv_ext.conv2d_fused(torch.randn(2, 3, 5, 5), w)


@pytest.mark.parametrize("activation", ["silu", "hardswish"])
def test_autograd_gradcheck(activation):
    # float64, values off hardswish's kinks by the random draw.
    x = torch.randn(2, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(4, dtype=torch.float64, requires_grad=True)
    shift = torch.randn(4, dtype=torch.float64, requires_grad=True)
    res = torch.randn(2, 4, 2, 5, dtype=torch.float64, requires_grad=True)
    for before in (True, False):
        def fn(*t):
            return conv_ext.conv2d_fused(*t, activation=activation,
                                         residual_before_activation=before, stride=(2, 1),
                                         padding=1, groups=2)
        assert torch.autograd.gradcheck(fn, (x, w, b, scale, shift, res), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, w, b, scale, shift, res), fast_mode=True)


def test_autograd_matches_unfused():
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    w = torch.randn(5, 4, 3, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    res = torch.randn(2, 5, 6, 6, requires_grad=True)
    out = conv_ext.conv2d_fused(x, w, b, residual=res, activation="relu", padding=1)
    ref = conv2d_fused_reference(x, w, b, None, None, res, "relu", True, 1, 1, 1, 1,
                                 conv=F.conv2d)
    torch.testing.assert_close(out, ref, **TOLERANCES[torch.float32])
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, (x, w, b, res), g)
    want = torch.autograd.grad(ref, (x, w, b, res), g)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, **TOLERANCES[torch.float32])


def test_opcheck():
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    w = torch.randn(5, 4, 3, 3, requires_grad=True)
    args = (x, w, torch.randn(5), torch.rand(5), torch.randn(5), torch.randn(2, 5, 3, 3),
            "hardswish", False, [2], [1], [1], 1)
    torch.library.opcheck(torch.ops.conv_ext.conv2d_fused, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))


# ---------------------------------------------------------------------------
# conv_ext.fuse


def _randomize_bn(model, inputs, steps=3):
    """Random affine BatchNorm parameters and running statistics from a few
    training-mode passes (as after training, not the 0/1 defaults)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
            m.momentum = 0.5
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(inputs())
    return model.eval()


class Block(nn.Module):
    """A ResNet basic block written with functional calls and methods."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y += x
        y = y.relu()
        z = F.gelu(self.conv3(y), approximate="tanh")  # a conv with bias, no BN
        return z + y


def _check_fused(model, x, expected_counts=None, tol=None):
    reference = model(x)
    fused = conv_ext.fuse(model)
    got = fused(x)
    torch.testing.assert_close(got, reference, **(tol or dict(rtol=1e-4, atol=1e-4)))
    report = fused.conv_ext_fusion_report
    if expected_counts is not None:
        assert report.counts() == expected_counts, str(report)
    return fused


def test_fuse_sequential_and_functional_block():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.SiLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.Hardswish(),
        nn.Conv2d(8, 8, 1), nn.GELU(), nn.Dropout(0.5),
        Block(8),
        nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4),
    )
    _randomize_bn(model, lambda: torch.randn(4, 3, 12, 12))
    fused = _check_fused(model, torch.randn(2, 3, 12, 12), {
        "conv+bn+relu": 2, "conv+bn+relu6": 1, "conv+bn+silu": 1, "conv+bn+hardswish": 1,
        "conv+gelu": 1, "conv+bn+add+relu": 1, "conv+gelu_tanh+add": 1, "conv+bn": 1})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert "9 convolutions fused" in str(fused.conv_ext_fusion_report)
    # channels_last input and float64
    x = torch.randn(2, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    model64, x64 = copy.deepcopy(model).double(), torch.randn(2, 3, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(conv_ext.fuse(model64)(x64), model64(x64), rtol=1e-10, atol=1e-10)


def test_fuse_leaves_non_fusable_alone():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
            self.bn2 = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            z = self.bn(y)   # the raw conv output is used again: no fold
            w = self.bn2(self.reflect(z + y))
            return F.relu(w)

    model = _randomize_bn(Net(), lambda: torch.randn(3, 4, 6, 6))
    _check_fused(model, torch.randn(2, 4, 6, 6), {})


def test_fuse_untraceable_parent_and_broadcast_residual():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
            self.conv = nn.Conv2d(6, 6, 1, bias=False)
            self.bn = nn.BatchNorm2d(6)
            self.offset = nn.Parameter(torch.randn(1, 6, 1, 1))

        def forward(self, x):
            if x.sum() > -1e9:  # data-dependent control flow: not traceable
                x = self.body(x)
            return self.bn(self.conv(x)) + self.offset

    model = _randomize_bn(Untraceable(), lambda: torch.randn(3, 3, 8, 8))
    fused = _check_fused(model, torch.randn(2, 3, 8, 8), {"conv+bn+relu": 1})
    assert fused.conv_ext_fusion_report.untraced == ["Untraceable"]


def test_fuse_refuses_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with pytest.raises(RuntimeError, match=r"training mode.*Call model.eval\(\) first"):
        conv_ext.fuse(model)
    model.eval()
    model[1].train()
    with pytest.raises(RuntimeError, match="'1'"):
        conv_ext.fuse(model)


def test_fuse_does_not_modify_the_model():
    model = _randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
                          lambda: torch.randn(2, 3, 5, 5))
    before = copy.deepcopy(model.state_dict())
    conv_ext.fuse(model)
    assert isinstance(model[1], nn.BatchNorm2d)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


torchvision = pytest.importorskip("torchvision", reason="torchvision not installed")


@pytest.mark.parametrize("name, counts", [
    ("resnet18", {"conv+bn+relu": 9, "conv+bn+add+relu": 8, "conv+bn": 3}),
    ("resnet50", {"conv+bn+relu": 33, "conv+bn+add+relu": 16, "conv+bn": 4}),
    ("mobilenet_v2", {"conv+bn+relu6": 35, "conv+bn+add": 10, "conv+bn": 7}),
    ("efficientnet_b0", {"conv+bn+silu": 33, "conv+silu": 16, "conv+bn+add": 9, "conv+bn": 7}),
])
def test_fuse_torchvision(name, counts):
    model = getattr(torchvision.models, name)(num_classes=10)
    _randomize_bn(model, lambda: torch.randn(4, 3, 40, 40))
    x = torch.randn(2, 3, 40, 40)
    _check_fused(conv_ext.convert(model), x, counts, tol=dict(rtol=1e-3, atol=1e-3))


def test_compile_fused_model_without_graph_breaks():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Block(8))
    _randomize_bn(model, lambda: torch.randn(3, 3, 8, 8))
    fused = conv_ext.fuse(model)
    compiled = torch.compile(fused, fullgraph=True)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
