"""conv_ext.convert on a real architecture: ResNet-18 (He et al., 2016),
written here as torchvision builds it (no torchvision dependency), converted
and compared with the original, forward and backward."""
import copy

import pytest
import torch
import torch.nn as nn

import conv_ext


class BasicBlock(nn.Module):
    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, in_channels = [], 64
        for channels, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers.append(nn.Sequential(BasicBlock(in_channels, channels, stride),
                                        BasicBlock(channels, channels)))
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def run(model, x, target):
    model.zero_grad()
    out = model(x)
    nn.functional.cross_entropy(out, target).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype,layout,size", [(torch.float32, "contiguous", 64),
                                               (torch.float64, "channels_last", 32)])
def test_resnet18_converted_matches_original(dtype, layout, size):
    torch.manual_seed(0)
    original = ResNet18().to(dtype)
    converted = conv_ext.convert(copy.deepcopy(original))
    convs = [m for m in converted.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and all(type(m) is conv_ext.Conv2d for m in convs)
    assert not any(type(m) is conv_ext.Conv2d for m in original.modules())
    x = torch.randn(2, 3, size, size, dtype=dtype)
    if layout == "channels_last":
        original = original.to(memory_format=torch.channels_last)
        converted = converted.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 10, (2,))
    for mode in ("train", "eval"):
        getattr(original, mode)()
        getattr(converted, mode)()
        out, grads = run(converted, x, target)
        want_out, want_grads = run(original, x, target)
        # Looser than for one conv: 20 convs deep, and training-mode batch norm
        # over few values (2 x 1 x 1 in layer4 at 32x32) amplifies rounding.
        tol = dict(rtol=1e-7, atol=1e-7) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(out, want_out, **tol)
        assert grads.keys() == want_grads.keys()
        for name in grads:
            torch.testing.assert_close(grads[name], want_grads[name], **tol,
                                       msg=lambda m: f"{mode} grad {name}: {m}")
        for a, b in zip(converted.buffers(), original.buffers()):   # BN running stats
            torch.testing.assert_close(a, b, **tol)
