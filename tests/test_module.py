"""conv_ext.Conv2d as a drop-in nn.Conv2d, and conv_ext.convert."""
import copy
import io

import pytest
import torch
import torch.nn as nn

import conv_ext
from helpers import TOLERANCES, compare_modules


def _pair_of_modules(dtype=torch.float32, **kwargs):
    reference = nn.Conv2d(dtype=dtype, **kwargs)
    ours = conv_ext.Conv2d(dtype=dtype, **kwargs)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same", "valid"])
def test_padding_modes(padding_mode, padding):
    reference, ours = _pair_of_modules(in_channels=4, out_channels=6, kernel_size=3, stride=1,
                                       padding=padding, padding_mode=padding_mode,
                                       dtype=torch.float64)
    compare_modules(reference, ours, torch.randn(2, 4, 9, 8, dtype=torch.float64), torch.float64)


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)),
    dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=8, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=2, dilation=2, groups=2),
], ids=str)
def test_module_matches_nn_conv2d(kwargs):
    reference, ours = _pair_of_modules(**kwargs)
    compare_modules(reference, ours, torch.randn(2, kwargs["in_channels"], 11, 10))


def test_is_an_nn_conv2d_with_same_repr_and_parameters():
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False, padding_mode="reflect")
    torch.manual_seed(0)
    ours = conv_ext.Conv2d(3, 16, 3, stride=2, padding=1, bias=False, padding_mode="reflect")
    assert isinstance(ours, nn.Conv2d)
    # The same repr, naming conv_ext's class so print(model) shows what was converted.
    assert repr(ours) == "conv_ext." + repr(reference)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    # Same initialisation from the same seed.
    assert torch.equal(ours.weight, reference.weight)


def test_constructor_device_and_dtype():
    m = conv_ext.Conv2d(2, 3, 3, device="cpu", dtype=torch.float64)
    assert m.weight.dtype == torch.float64 and m.bias.device.type == "cpu"
    assert m(torch.randn(1, 2, 5, 5, dtype=torch.float64)).dtype == torch.float64


def test_state_dict_round_trip():
    reference = nn.Conv2d(4, 5, 3, padding=1)
    ours = conv_ext.Conv2d(4, 5, 3, padding=1)
    ours.load_state_dict(reference.state_dict())
    back = nn.Conv2d(4, 5, 3, padding=1)
    back.load_state_dict(ours.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    # Through torch.save / torch.load as well.
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    restored = conv_ext.Conv2d(4, 5, 3, padding=1)
    restored.load_state_dict(torch.load(buffer))
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(restored(x), reference(x), **TOLERANCES[torch.float32])


def test_deepcopy_and_pickle_whole_module():
    ours = conv_ext.Conv2d(2, 3, 3)
    clone = copy.deepcopy(ours)
    assert type(clone) is conv_ext.Conv2d
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(loaded(x), ours(x))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
            nn.Conv2d(8, 16, 1, stride=2), nn.ReLU(),
        )
        self.head_conv = nn.Conv2d(16, 4, 3, padding="same", padding_mode="circular")
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = self.head_conv(self.features(x))
        return self.fc(x.mean((2, 3)))


def test_convert_small_cnn():
    reference = SmallCNN()
    model = copy.deepcopy(reference)
    params_before = {n: p for n, p in model.named_parameters()}
    returned = conv_ext.convert(model)
    assert returned is model
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(type(m) is conv_ext.Conv2d for m in convs)
    # Parameters are shared, not copied: an optimizer built earlier still works.
    for n, p in model.named_parameters():
        assert p is params_before[n]
    x = torch.randn(2, 3, 16, 16)
    compare_modules(reference, model, x)


def test_convert_a_bare_conv_and_shared_modules():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    converted = conv_ext.convert(conv)
    assert type(converted) is conv_ext.Conv2d and converted.weight is conv.weight
    shared = nn.Conv2d(2, 2, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    conv_ext.convert(model)
    assert model[0] is model[2] and type(model[0]) is conv_ext.Conv2d


def test_convert_leaves_other_subclasses_alone():
    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(MyConv(2, 2, 3))
    with pytest.warns(UserWarning, match=r"left these convolutions on torch.*0 \(.*MyConv\)"):
        conv_ext.convert(model)
    assert type(model[0]) is MyConv


def test_training_step_with_optimizer():
    reference = SmallCNN()
    model = conv_ext.convert(copy.deepcopy(reference))
    opt_ref = torch.optim.SGD(reference.parameters(), lr=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, target = torch.randn(4, 3, 12, 12), torch.randint(0, 10, (4,))
    for _ in range(3):
        for m, o in ((reference, opt_ref), (model, opt)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), target).backward()
            o.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_conv2d_function_directly():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    y = conv_ext.Conv2dFunction.apply(x, w, None, [1], [1], [1], 1)
    torch.testing.assert_close(y, nn.functional.conv2d(x, w, padding=1))
