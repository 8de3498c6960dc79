"""Benchmark layer sets (shapes only), shared by the CPU and GPU benchmarks.

ResNet-50 v1.5: the 23 distinct conv shapes (oneDNN benchdnn
`shapes_resnet_50_v1_5`); MobileNet v1/v2: the depthwise 3x3 layers
(oneDNN `shapes_mobilenet_dw`).
"""
from dataclasses import dataclass

__all__ = ["ConvLayer", "RESNET50", "MOBILENET_DW", "SUITES", "parse_layer"]


@dataclass(frozen=True)
class ConvLayer:
    name: str
    C: int           # input channels
    H: int           # input height = width
    K: int           # output channels
    R: int           # kernel height = width
    stride: int = 1
    padding: int = 0
    groups: int = 1
    dilation: int = 1
    count: int = 1   # occurrences in the network

    @property
    def out_size(self):
        return (self.H + 2 * self.padding - self.dilation * (self.R - 1) - 1) // self.stride + 1

    def flops(self, n):
        """Multiply-adds x 2 of one forward pass at batch size n."""
        return 2 * n * self.K * self.out_size ** 2 * (self.C // self.groups) * self.R * self.R


_R50 = [  # C, H, K, R, stride, pad, count
    (3, 224, 64, 7, 2, 3, 1), (64, 56, 256, 1, 1, 0, 4), (64, 56, 64, 1, 1, 0, 1),
    (64, 56, 64, 3, 1, 1, 3), (256, 56, 64, 1, 1, 0, 2), (256, 56, 512, 1, 2, 0, 1),
    (256, 56, 128, 1, 1, 0, 1), (128, 56, 128, 3, 2, 1, 1), (128, 28, 512, 1, 1, 0, 4),
    (512, 28, 128, 1, 1, 0, 3), (128, 28, 128, 3, 1, 1, 3), (512, 28, 1024, 1, 2, 0, 1),
    (512, 28, 256, 1, 1, 0, 1), (256, 28, 256, 3, 2, 1, 1), (256, 14, 1024, 1, 1, 0, 6),
    (1024, 14, 256, 1, 1, 0, 5), (256, 14, 256, 3, 1, 1, 5), (1024, 14, 2048, 1, 2, 0, 1),
    (1024, 14, 512, 1, 1, 0, 1), (512, 14, 512, 3, 2, 1, 1), (512, 7, 2048, 1, 1, 0, 3),
    (2048, 7, 512, 1, 1, 0, 2), (512, 7, 512, 3, 1, 1, 2),
]
RESNET50 = [ConvLayer(f"r50_{i + 1:02d}", C, H, K, R, s, p, 1, 1, n)
            for i, (C, H, K, R, s, p, n) in enumerate(_R50)]

_MOBILENET = [  # C, H, stride (v1 first, then the v2 additions)
    (32, 112, 1), (64, 112, 2), (128, 56, 1), (128, 56, 2), (256, 28, 1), (256, 28, 2),
    (512, 14, 1), (512, 14, 2), (1024, 7, 1),
    (96, 112, 2), (144, 56, 1), (192, 28, 1), (384, 14, 1), (576, 14, 2), (960, 7, 1),
]
MOBILENET_DW = [ConvLayer(f"dw_{C}x{H}_s{s}", C, H, C, 3, s, 1, C) for C, H, s in _MOBILENET]

SUITES = {"resnet50": RESNET50, "mobilenet": MOBILENET_DW, "all": RESNET50 + MOBILENET_DW}


def parse_layer(spec):
    """A custom layer from 'C,H,K,R[,stride[,padding[,groups[,dilation]]]]'."""
    values = [int(v) for v in spec.split(",")]
    if not 4 <= len(values) <= 8:
        raise ValueError(f"layer spec {spec!r}: expected C,H,K,R[,stride[,padding[,groups[,dilation]]]]")
    return ConvLayer(f"custom_{spec.replace(',', '_')}", *values)
