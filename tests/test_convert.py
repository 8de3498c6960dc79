"""conv_ext.convert on whole models (a U-Net-style encoder/decoder with
ConvTranspose2d, a 1-D TCN), what it reports, and the tools that walk a
converted model: torch.fx, torchvision's create_feature_extractor,
torch.export, torch.jit.script (refused with a clear message)."""
import copy
import logging

import pytest
import torch
import torch.nn as nn

import conv_ext
from helpers import TOLERANCES


class TinyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.bottom = nn.Conv2d(16, 16, 3, padding=1)
        self.up4 = nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1)   # 4x4 stride 2
        self.up2 = nn.ConvTranspose2d(32, 8, 2, stride=2)               # 2x2 stride 2
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        b = torch.relu(self.bottom(e2))
        u = self.up4(b)                                   # back to e2's resolution x 2
        u = torch.cat([u[..., ::2, ::2], e2], 1)
        return self.head(self.up2(u) + e1)


class TCN(nn.Module):
    """Dilated causal 1-D convolutions, a depthwise causal conv (kernel 4,
    groups = C) and a transposed upsampling, as in audio / sequence models."""

    def __init__(self, c=8):
        super().__init__()
        self.inp = nn.Conv1d(2, c, 1)
        self.dilated = nn.ModuleList(nn.Conv1d(c, c, 3, padding=2 * d, dilation=d) for d in (1, 2, 4))
        self.depthwise = nn.Conv1d(c, c, 4, padding=3, groups=c)
        self.up = nn.ConvTranspose1d(c, 3, 4, stride=2, padding=1)

    def forward(self, x):
        length = x.shape[-1]
        h = self.inp(x)
        for conv in self.dilated:
            h = h + torch.relu(conv(h)[..., :length])
        h = self.depthwise(h)[..., :length]
        return self.up(h)


def _check_same(reference, model, x):
    tol = TOLERANCES[torch.float32]
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y = reference(x_ref), model(x_ours)
    torch.testing.assert_close(y, y_ref, **tol)
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y.backward(g)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **tol)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **tol, msg=name)


@pytest.mark.parametrize("cls,shape,count", [(TinyUNet, (2, 3, 16, 16), 6), (TCN, (2, 2, 50), 6)])
def test_converted_model_equals_original(cls, shape, count):
    reference = cls()
    model = copy.deepcopy(reference)
    returned, report = conv_ext.convert(model, report=True)
    assert returned is model and report.count == count and not report.left_alone
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    assert len(convs) == count
    assert all(type(m).__module__ == "conv_ext.modules" for m in convs)
    _check_same(reference, model, torch.randn(*shape))


def test_repr_names_conv_ext():
    model = conv_ext.convert(TinyUNet())
    text = repr(model)
    assert "(up4): conv_ext.ConvTranspose2d(16, 16, kernel_size=(4, 4), stride=(2, 2)" in text
    assert "(head): conv_ext.Conv2d(8, 2, kernel_size=(1, 1)" in text
    assert "conv_ext.Conv1d(2, 8, kernel_size=(1,)" in repr(conv_ext.convert(TCN()))


def test_convert_reports_and_warns_about_what_it_leaves(caplog):
    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Conv3d(2, 2, 1), MyConv(2, 2, 1),
                          nn.LazyConv2d(2, 1), nn.ConvTranspose3d(2, 2, 1), nn.Conv1d(2, 2, 1))
    with caplog.at_level(logging.INFO, logger="conv_ext"):
        with pytest.warns(UserWarning) as record:
            _, report = conv_ext.convert(model, report=True)
    message = str(record[0].message)
    for name in ("1 (Conv3d)", "2 (", "MyConv)", "3 (LazyConv2d)", "4 (ConvTranspose3d)"):
        assert name in message
    assert report.count == 2 and set(report.converted) == {"0", "5"}
    assert set(report.left_alone) == {"1", "2", "3", "4"}
    assert "converted 2 module(s)" in caplog.text
    # Converting again changes nothing and says nothing new about ours.
    with pytest.warns(UserWarning):
        _, again = conv_ext.convert(model, report=True)
    assert again.count == 0 and set(again.left_alone) == {"1", "2", "3", "4"}


def test_convert_is_silent_when_everything_converts(recwarn):
    conv_ext.convert(TCN())
    assert not [w for w in recwarn if "conv_ext" in str(w.message)]


def test_fx_symbolic_trace_of_converted_model():
    model = conv_ext.convert(TinyUNet())
    traced = torch.fx.symbolic_trace(model)
    targets = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    assert targets.count(conv_ext.conv2d) == 4 and targets.count(conv_ext.conv_transpose2d) == 2
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(traced(x), model(x))
    tcn = conv_ext.convert(TCN())
    x1 = torch.randn(1, 2, 20)
    torch.testing.assert_close(torch.fx.symbolic_trace(tcn)(x1), tcn(x1))


def test_fx_traces_functional_calls_in_user_code():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, 3, 3))

        def forward(self, x):
            return conv_ext.conv_transpose2d(conv_ext.conv2d(x, self.w), self.w)

    m = M()
    traced = torch.fx.symbolic_trace(m)
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(traced(x), m(x))


def test_create_feature_extractor_on_converted_resnet():
    models = pytest.importorskip("torchvision.models")
    feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")
    reference = models.resnet18(num_classes=10).eval()
    model = conv_ext.convert(copy.deepcopy(reference))
    nodes = {"layer2": "c3", "layer4": "c5"}
    ours = feature_extraction.create_feature_extractor(model, return_nodes=nodes)
    theirs = feature_extraction.create_feature_extractor(reference, return_nodes=nodes)
    x = torch.randn(1, 3, 64, 64)
    got, expected = ours(x), theirs(x)
    for key in nodes.values():
        torch.testing.assert_close(got[key], expected[key], rtol=1e-3, atol=1e-3)


def test_jit_script_refused_with_what_to_use_instead():
    model = conv_ext.convert(nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU()))
    with pytest.raises(RuntimeError, match=r"conv_ext.Conv2d cannot be compiled by "
                                           r"torch.jit.script.*torch.compile, torch.export"):
        torch.jit.script(model)
    traced = torch.jit.trace(model, torch.randn(1, 2, 5, 5))
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(traced(x), model(x))


def test_torch_export_of_converted_models():
    for model, x in ((conv_ext.convert(TinyUNet()), torch.randn(1, 3, 8, 8)),
                     (conv_ext.convert(TCN()), torch.randn(1, 2, 20))):
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), model(x))
