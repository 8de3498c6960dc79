"""Benchmark cases: convolution layer descriptions (shapes only) and the named
suites built from public layer lists.

A layer has separate heights and widths for the input (H, W) and filter
(R, S), per-axis stride, padding and dilation, and groups; the batch size is
the run's (--batch). Sources of each suite are named beside it; where a public
list is long, a subset is taken, and the comment says which.
"""
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ConvLayer", "SUITES", "DEFAULT_SUITES", "parse_layer", "from_benchdnn",
           "from_deepbench", "select"]


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


@dataclass(frozen=True)
class ConvLayer:
    name: str
    C: int                 # input channels
    H: int                 # input height
    W: int                 # input width
    K: int                 # output channels
    R: int                 # filter height
    S: int                 # filter width
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    count: int = 1         # occurrences in the network

    @classmethod
    def make(cls, name, C, H, K, R, stride=1, padding=0, groups=1, dilation=1, *, W=None, S=None,
             count=1):
        """Square by default: W = H and S = R unless given; stride, padding
        and dilation are an int or an (h, w) pair."""
        return cls(name, C, H, H if W is None else W, K, R, R if S is None else S, _pair(stride),
                   _pair(padding), _pair(dilation), groups, count)

    def conv_args(self):
        """Keyword arguments of F.conv2d (and the ops' stride..groups)."""
        return dict(stride=list(self.stride), padding=list(self.padding),
                    dilation=list(self.dilation), groups=self.groups)

    def input_shape(self, n):
        return (n, self.C, self.H, self.W)

    def weight_shape(self):
        return (self.K, self.C // self.groups, self.R, self.S)

    def output_shape(self, n):
        # torch's own shape rule (on meta tensors: no memory, no kernel), so
        # the output-size formula is not written once more here.
        x = torch.empty(self.input_shape(n), device="meta")
        w = torch.empty(self.weight_shape(), device="meta")
        return tuple(F.conv2d(x, w, None, **self.conv_args()).shape)

    def flops(self, n):
        """Multiply-adds x 2 of one forward pass at batch size n."""
        _, K, P, Q = self.output_shape(n)
        return 2 * n * K * P * Q * (self.C // self.groups) * self.R * self.S

    def describe(self):
        """Short filter text for tables: 3x3/2, 1x7, 3x3 d6, 3x3 g32."""
        text = f"{self.R}x{self.S}"
        sh, sw = self.stride
        if (sh, sw) != (1, 1):
            text += f"/{sh}" if sh == sw else f"/{sh}x{sw}"
        dh, dw = self.dilation
        if (dh, dw) != (1, 1):
            text += f" d{dh}" if dh == dw else f" d{dh}x{dw}"
        if self.groups > 1:
            text += " dw" if self.groups == self.C == self.K else f" g{self.groups}"
        return text


def parse_layer(spec):
    """A custom layer from 'C,H,K,R[,stride[,padding[,groups[,dilation]]]]'
    (square), or with key=value items for the rest, e.g.
    'C=1,H=161,W=700,K=32,R=5,S=20,stride=2x2' (pairs as AxB)."""
    items = spec.split(",")
    if all("=" not in item for item in items):
        values = [int(v) for v in items]
        if not 4 <= len(values) <= 8:
            raise ValueError(f"layer spec {spec!r}: expected "
                             "C,H,K,R[,stride[,padding[,groups[,dilation]]]]")
        return ConvLayer.make(f"custom_{spec.replace(',', '_')}", *values)
    fields = {}
    for item in items:
        key, _, value = item.partition("=")
        parts = tuple(int(v) for v in value.split("x"))
        fields[key.strip()] = parts if len(parts) > 1 else parts[0]
    try:
        return ConvLayer.make(f"custom_{spec.replace(',', '_').replace('=', '')}", **fields)
    except TypeError as error:
        raise ValueError(f"layer spec {spec!r}: {error}") from None


# oneDNN benchdnn problem descriptors, e.g.
# 'g32mb128_ic512oc512_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1_n"resnext_101:conv3*3"'.
# Missing w-values default to the h-values; dilation dh counts from 0 (dh0 =
# no dilation); '*N' after the name is the count in the network.
_BENCHDNN_TOKEN = re.compile(r"(mb|ic|ih|iw|oc|oh|ow|kh|kw|sh|sw|ph|pw|dh|dw|g)(\d+)")


def from_benchdnn(descriptor):
    shape, _, name = descriptor.partition('n"')
    v = {key: int(value) for key, value in _BENCHDNN_TOKEN.findall(shape)}
    name, _, count = name.rstrip('"').partition("*")
    name = name.replace(":", "_").replace("/", "_")
    layer = ConvLayer(name, v["ic"], v["ih"], v.get("iw", v["ih"]), v["oc"], v["kh"],
                      v.get("kw", v["kh"]), (v.get("sh", 1), v.get("sw", v.get("sh", 1))),
                      (v.get("ph", 0), v.get("pw", v.get("ph", 0))),
                      (v.get("dh", 0) + 1, v.get("dw", v.get("dh", 0)) + 1), v.get("g", 1),
                      int(count or 1))
    _, _, P, Q = layer.output_shape(1)
    if (P, Q) != (v.get("oh", P), v.get("ow", Q)):
        raise ValueError(f"{descriptor}: output {P}x{Q}, not the descriptor's")
    return layer


def from_deepbench(problem, name):
    """A layer from a DeepBench conv_problems.h tuple, in its order:
    (w, h, c, n, k, filter_w, filter_h, pad_w, pad_h, stride_w, stride_h); n
    is left out (the run's --batch applies)."""
    w, h, c, _n, k, s, r, pad_w, pad_h, stride_w, stride_h = problem
    return ConvLayer(name, c, h, w, k, r, s, (stride_h, stride_w), (pad_h, pad_w))


# ResNet-50 v1.5: the 23 distinct conv shapes (oneDNN benchdnn
# shapes_resnet_50_v1_5; the same in LIBXSMM's run_resnet50b.sh).
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
RESNET50 = [ConvLayer.make(f"r50_{i + 1:02d}", C, H, K, R, s, p, count=n)
            for i, (C, H, K, R, s, p, n) in enumerate(_R50)]


def _depthwise(prefix, C, H, R, stride, count=1):
    return ConvLayer.make(f"{prefix}_{C}x{H}_s{stride}", C, H, C, R, stride, R // 2, C,
                          count=count)


# MobileNet v1/v2 depthwise 3x3 (oneDNN shapes_mobilenet_dw; v1 first, then the
# v2 additions).
_MOBILENET = [(32, 112, 1), (64, 112, 2), (128, 56, 1), (128, 56, 2), (256, 28, 1), (256, 28, 2),
              (512, 14, 1), (512, 14, 2), (1024, 7, 1),
              (96, 112, 2), (144, 56, 1), (192, 28, 1), (384, 14, 1), (576, 14, 2), (960, 7, 1)]
MOBILENET_DW = [_depthwise("dw", C, H, 3, s) for C, H, s in _MOBILENET]

# EfficientNet-B0's 5x5 depthwise layers (torchvision efficientnet_b0: the
# expanded widths of the k5 stages).
EFFICIENTNET_DW5 = [_depthwise("dw5", C, H, 5, s) for C, H, s in
                    [(144, 56, 2), (240, 28, 1), (480, 14, 1), (672, 14, 1), (672, 14, 2),
                     (1152, 7, 1)]]

# ConvNeXt-T's 7x7 depthwise layers: dims 96, 192, 384, 768 at 56, 28, 14, 7,
# depths 3, 3, 9, 3 (facebookresearch/ConvNeXt convnext.py).
CONVNEXT_DW7 = [_depthwise("cnx_dw7", C, H, 7, 1, n)
                for C, H, n in [(96, 56, 3), (192, 28, 3), (384, 14, 9), (768, 7, 3)]]

# RepLKNet-31B's large depthwise kernels: 31x31 at 128 channels and 56x56,
# 29x29 at 256 and 28x28, 27x27 at 512 and 14x14, 13x13 at 1024 and 7x7
# (DingXiaoH/RepLKNet-pytorch replknet.py; depths 2, 2, 18, 2).
REPLKNET_31B = [_depthwise(f"rlk_dw{R}", C, H, R, 1, n)
                for C, H, R, n in [(128, 56, 31, 2), (256, 28, 29, 2), (512, 14, 27, 18),
                                   (1024, 7, 13, 2)]]

# Grouped (not depthwise) convolutions: ResNeXt-50 32x4d and RegNetY-400MF
# (their distinct grouped 3x3 layers, read from torchvision's models), and
# ShuffleNet v1 with g=3 (the paper's Table 1: the 1x1 group convolutions of
# the stride-1 units, bottleneck = out/4).
_RESNEXT50 = [(128, 56, 1, 3), (256, 56, 2, 1), (256, 28, 1, 3), (512, 28, 2, 1), (512, 14, 1, 5),
              (1024, 14, 2, 1), (1024, 7, 1, 2)]
_REGNET_Y_400MF = [(48, 112, 2, 6, 1), (104, 56, 2, 13, 1), (104, 28, 1, 13, 2),
                   (208, 28, 2, 26, 1), (208, 14, 1, 26, 5), (440, 14, 2, 55, 1),
                   (440, 7, 1, 55, 5)]
_SHUFFLENET_G3 = [(240, 28), (480, 14), (960, 7)]
GROUPED = (
    [ConvLayer.make(f"rx50_{C}x{H}_s{s}", C, H, C, 3, s, 1, 32, count=n)
     for C, H, s, n in _RESNEXT50]
    + [ConvLayer.make(f"regy_{C}x{H}_s{s}", C, H, C, 3, s, 1, g, count=n)
       for C, H, s, g, n in _REGNET_Y_400MF]
    + [layer for C, H in _SHUFFLENET_G3 for layer in (
        ConvLayer.make(f"shuf_{C}to{C // 4}x{H}", C, H, C // 4, 1, 1, 0, 3),
        ConvLayer.make(f"shuf_{C // 4}to{C}x{H}", C // 4, H, C, 1, 1, 0, 3))])

# oneDNN benchdnn topologies (oneapi-src/oneDNN tests/benchdnn/inputs/conv/,
# read at commit 515bfba6): descriptor lines as published, a subset each.
_BENCHDNN = {
    # shapes_googlenet_v1 (8 of 57) and shapes_googlenet_v3 (8 of 42: the
    # stem, 5x5, stride 2 and the 1x7/7x1/1x3/3x1 filters).
    "googlenet": [
        'g1mb96ic3ih224iw224oc64oh112ow112kh7kw7sh2sw2ph3pw3n"googlenet_v1:conv1/7x7_s2"',
        'mb96ic64ih56oc192oh56kh3ph1n"googlenet_v1:conv2/3x3"',
        'mb96ic96ih28oc128oh28kh3ph1n"googlenet_v1:inception_3a/3x3"',
        'mb96ic16ih28oc32oh28kh5ph2n"googlenet_v1:inception_3a/5x5"',
        'mb96ic480ih14oc192oh14kh1ph0n"googlenet_v1:inception_4a/1x1"',
        'mb96ic16ih14oc48oh14kh5ph2n"googlenet_v1:inception_4a/5x5"',
        'mb96ic512ih4oc128oh4kh1ph0n"googlenet_v1:loss1/conv"',
        'mb96ic832ih7oc384oh7kh1ph0n"googlenet_v1:inception_5b/1x1"',
        'g1mb22ic3ih299iw299oc32oh149ow149kh3kw3ph0pw0sh2sw2n"googlenet_v3:conv_conv2d"',
        'g1mb22ic80ih73iw73oc192oh71ow71kh3kw3ph0pw0sh1sw1n"googlenet_v3:conv_4_4_conv2d"',
        'g1mb22ic48ih35iw35oc64oh35ow35kh5kw5ph2pw2sh1sw1n"googlenet_v3:mixed_tower_conv_1_conv2d*3"',
        'g1mb22ic288ih35iw35oc384oh17ow17kh3kw3ph0pw0sh2sw2n"googlenet_v3:mixed_3_conv_conv2d"',
        'g1mb22ic128ih17iw17oc128oh17ow17kh1kw7ph0pw3sh1sw1n"googlenet_v3:mixed_4_tower_conv_1_conv2d*2"',
        'g1mb22ic128ih17iw17oc192oh17ow17kh7kw1ph3pw0sh1sw1n"googlenet_v3:mixed_4_tower_conv_2_conv2d"',
        'g1mb22ic384ih8iw8oc384oh8ow8kh1kw3ph0pw1sh1sw1n"googlenet_v3:mixed_9_tower_mixed_conv_conv2d*4"',
        'g1mb22ic384ih8iw8oc384oh8ow8kh3kw1ph1pw0sh1sw1n"googlenet_v3:mixed_9_tower_mixed_conv_1_conv2d*4"',
    ],
    # shapes_vgg_19: all 9.
    "vgg": [
        'mb64ic3ih224oc64oh224kh3ph1n"vgg_19:conv1_1"',
        'mb64ic64ih224oc64oh224kh3ph1n"vgg_19:conv1_2"',
        'mb64ic64ih112oc128oh112kh3ph1n"vgg_19:conv2_1"',
        'mb64ic128ih112oc128oh112kh3ph1n"vgg_19:conv2_2"',
        'mb64ic128ih56oc256oh56kh3ph1n"vgg_19:conv3_1"',
        'mb64ic256ih56oc256oh56kh3ph1n"vgg_19:conv3_2*3"',
        'mb64ic256ih28oc512oh28kh3ph1n"vgg_19:conv4_1"',
        'mb64ic512ih28oc512oh28kh3ph1n"vgg_19:conv4_2*3"',
        'mb64ic512ih14oc512oh14kh3ph1n"vgg_19:conv5_1*4"',
    ],
    # shapes_yolov2: all 14 (inputs carry their padding: ph0).
    "yolo": [
        'mb16_g1ic3oc32_ih610oh608kh3sh1dh0ph0_iw610ow608kw3sw1dw0pw0_n"yolov2:conv1*6"',
        'mb16_g1ic32oc64_ih306oh304kh3sh1dh0ph0_iw306ow304kw3sw1dw0pw0_n"yolov2:conv2*9"',
        'mb16_g1ic64oc128_ih154oh152kh3sh1dh0ph0_iw154ow152kw3sw1dw0pw0_n"yolov2:conv3*18"',
        'mb16_g1ic128oc64_ih152oh152kh1sh1dh0ph0_iw152ow152kw1sw1dw0pw0_n"yolov2:conv4*9"',
        'mb16_g1ic128oc256_ih78oh76kh3sh1dh0ph0_iw78ow76kw3sw1dw0pw0_n"yolov2:conv5*18"',
        'mb16_g1ic256oc128_ih76oh76kh1sh1dh0ph0_iw76ow76kw1sw1dw0pw0_n"yolov2:conv6*9"',
        'mb16_g1ic256oc512_ih40oh38kh3sh1dh0ph0_iw40ow38kw3sw1dw0pw0_n"yolov2:conv7*27"',
        'mb16_g1ic512oc256_ih38oh38kh1sh1dh0ph0_iw38ow38kw1sw1dw0pw0_n"yolov2:conv8*18"',
        'mb16_g1ic512oc1024_ih21oh19kh3sh1dh0ph0_iw21ow19kw3sw1dw0pw0_n"yolov2:conv9*27"',
        'mb16_g1ic1024oc512_ih19oh19kh1sh1dh0ph0_iw19ow19kw1sw1dw0pw0_n"yolov2:conv10*18"',
        'mb16_g1ic1024oc1024_ih21oh19kh3sh1dh0ph0_iw21ow19kw3sw1dw0pw0_n"yolov2:conv11*18"',
        'mb16_g1ic512oc64_ih38oh38kh1sh1dh0ph0_iw38ow38kw1sw1dw0pw0_n"yolov2:conv12*9"',
        'mb16_g1ic1280oc1024_ih21oh19kh3sh1dh0ph0_iw21ow19kw3sw1dw0pw0_n"yolov2:conv13*9"',
        'mb16_g1ic1024oc425_ih19oh19kh1sh1dh0ph0_iw19ow19kw1sw1dw0pw0_n"yolov2:conv14*9"',
    ],
    # shapes_unet: all 13 (K=2..64 at up to 572x572, 2x2 stride-2 filters).
    "unet": [
        'mb1_g1ic1oc16_ih572oh570kh3sh1dh0ph0_iw572ow570kw3sw1dw0pw0_n"unet:conv1"',
        'mb1_g1ic16oc16_ih570oh568kh3sh1dh0ph0_iw570ow568kw3sw1dw0pw0_n"unet:conv2"',
        'mb1_g1ic16oc32_ih284oh282kh3sh1dh0ph0_iw284ow282kw3sw1dw0pw0_n"unet:conv3"',
        'mb1_g1ic32oc32_ih282oh280kh3sh1dh0ph0_iw282ow280kw3sw1dw0pw0_n"unet:conv4"',
        'mb1_g1ic32oc64_ih140oh138kh3sh1dh0ph0_iw140ow138kw3sw1dw0pw0_n"unet:conv5"',
        'mb1_g1ic64oc64_ih138oh136kh3sh1dh0ph0_iw138ow136kw3sw1dw0pw0_n"unet:conv6"',
        'mb1_g1ic32oc64_ih272oh136kh2sh2dh0ph0_iw272ow136kw2sw2dw0pw0_n"unet:conv7"',
        'mb1_g1ic64oc32_ih272oh270kh3sh1dh0ph0_iw272ow270kw3sw1dw0pw0_n"unet:conv8"',
        'mb1_g1ic32oc32_ih270oh268kh3sh1dh0ph0_iw270ow268kw3sw1dw0pw0_n"unet:conv9"',
        'mb1_g1ic16oc32_ih536oh268kh2sh2dh0ph0_iw536ow268kw2sw2dw0pw0_n"unet:conv10"',
        'mb1_g1ic32oc16_ih536oh534kh3sh1dh0ph0_iw536ow534kw3sw1dw0pw0_n"unet:conv11"',
        'mb1_g1ic16oc16_ih534oh532kh3sh1dh0ph0_iw534ow532kw3sw1dw0pw0_n"unet:conv12"',
        'mb1_g1ic16oc2_ih532oh532kh1sh1dh0ph0_iw532ow532kw1sw1dw0pw0_n"unet:conv13"',
    ],
    # shapes_densnet: 12 of 36 (every third: K=12 at 32, 16 and 8).
    "densenet": [
        'mb1_g1ic16oc12_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1_n"densenet:conv1"',
        'mb1_g1ic52oc12_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1_n"densenet:conv4"',
        'mb1_g1ic88oc12_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1_n"densenet:conv7"',
        'mb1_g1ic124oc12_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1_n"densenet:conv10"',
        'mb1_g1ic160oc12_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1_n"densenet:conv13"',
        'mb1_g1ic196oc12_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1_n"densenet:conv16"',
        'mb1_g1ic232oc12_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1_n"densenet:conv19"',
        'mb1_g1ic268oc12_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1_n"densenet:conv22"',
        'mb1_g1ic304oc12_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1_n"densenet:conv25"',
        'mb1_g1ic340oc12_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1_n"densenet:conv28"',
        'mb1_g1ic376oc12_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1_n"densenet:conv31"',
        'mb1_g1ic412oc12_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1_n"densenet:conv34"',
    ],
    # shapes_ssd_300_voc0712: 14 of 31 (the dilated fc6, the stride-2 and
    # unpadded tails, small-K detection heads).
    "ssd": [
        'mb32_ic3oc64_ih300kh3oh300ph1n"ssd_300_voc0712:conv1_1"',
        'mb32_ic64oc128_ih150kh3oh150ph1n"ssd_300_voc0712:conv2_1"',
        'mb32_ic256oc256_ih75kh3oh75ph1n"ssd_300_voc0712:conv3_2*2"',
        'mb32_ic512oc512_ih38kh3oh38ph1n"ssd_300_voc0712:conv4_2*2"',
        'mb32_ic512oc1024_ih19kh3oh19ph6dh5n"ssd_300_voc0712:fc6"',
        'mb32_ic1024oc1024_ih19kh1oh19ph0n"ssd_300_voc0712:fc7"',
        'mb32_ic256oc512_ih19kh3oh10sh2ph1_n"ssd_300_voc0712:conv6_2"',
        'mb32_ic128oc256_ih10kh3oh5sh2ph1_n"ssd_300_voc0712:conv7_2"',
        'mb32_ic128oc256_ih5kh3oh3ph0_n"ssd_300_voc0712:conv8_2"',
        'mb32_ic128oc256_ih3kh3oh1ph0_n"ssd_300_voc0712:conv9_2"',
        'mb32_ic512oc16_ih38kh3oh38ph1n"ssd_300_voc0712:conv4_3_norm_mbox_loc"',
        'mb32_ic512oc84_ih38kh3oh38ph1n"ssd_300_voc0712:conv4_3_norm_mbox_conf"',
        'mb32_ic1024oc126_ih19kh3oh19ph1n"ssd_300_voc0712:fc7_mbox_conf"',
        'mb32_ic256oc84_ih3kh3oh3ph1_n"ssd_300_voc0712:conv8_2_mbox_conf"',
    ],
    # shapes_resnext_101: the 6 grouped (g32) layers and 6 of the 18 others.
    "resnext": [
        'mb128_ic3oc64_ih224oh112kh7sh2dh0ph3_iw224ow112kw7sw2dw0pw3_n"resnext_101:conv1*1"',
        'g32mb128_ic512oc512_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1_n"resnext_101:conv3*3"',
        'mb128_ic512oc256_ih56oh56kh1sh1dh0ph0_iw56ow56kw1sw1dw0pw0_n"resnext_101:conv5*3"',
        'g32mb128_ic1024oc1024_ih56oh28kh3sh2dh0ph1_iw56ow28kw3sw2dw0pw1_n"resnext_101:conv8*1"',
        'mb128_ic1024oc512_ih28oh28kh1sh1dh0ph0_iw28ow28kw1sw1dw0pw0_n"resnext_101:conv10*4"',
        'g32mb128_ic1024oc1024_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1_n"resnext_101:conv12*3"',
        'g32mb128_ic2048oc2048_ih28oh14kh3sh2dh0ph1_iw28ow14kw3sw2dw0pw1_n"resnext_101:conv14*1"',
        'mb128_ic2048oc1024_ih14oh14kh1sh1dh0ph0_iw14ow14kw1sw1dw0pw0_n"resnext_101:conv16*23"',
        'g32mb128_ic2048oc2048_ih14oh14kh3sh1dh0ph1_iw14ow14kw3sw1dw0pw1_n"resnext_101:conv18*22"',
        'g32mb128_ic4096oc4096_ih14oh7kh3sh2dh0ph1_iw14ow7kw3sw2dw0pw1_n"resnext_101:conv20*1"',
        'mb128_ic4096oc2048_ih7oh7kh1sh1dh0ph0_iw7ow7kw1sw1dw0pw0_n"resnext_101:conv22*3"',
        'g32mb128_ic4096oc4096_ih7oh7kh3sh1dh0ph1_iw7ow7kw3sw1dw0pw1_n"resnext_101:conv24*2"',
    ],
}

# DeepBench (baidu-research/DeepBench code/kernels/conv_problems.h) as
# published: (w, h, c, n, k, filter_w, filter_h, pad_w, pad_h, stride_w,
# stride_h). 16 of its distinct shapes: every speech layer (non-square
# inputs, filters and strides), the face-recognition and OCR layers, and one
# of each vision kind (the ResNet/VGG ones are in other suites already).
_DEEPBENCH = [
    ("ds2_conv1", (700, 161, 1, 4, 32, 20, 5, 0, 0, 2, 2)),
    ("ds2_conv2", (341, 79, 32, 4, 32, 10, 5, 0, 0, 2, 2)),
    ("speech_c1", (700, 161, 1, 16, 64, 5, 5, 1, 1, 2, 2)),
    ("speech_c2", (350, 80, 64, 16, 64, 3, 3, 1, 1, 1, 1)),
    ("speech_c3", (350, 80, 64, 16, 128, 5, 5, 1, 1, 2, 2)),
    ("speech_c4", (175, 40, 128, 16, 128, 3, 3, 1, 1, 1, 1)),
    ("speech_c5", (175, 40, 128, 16, 256, 5, 5, 1, 1, 2, 2)),
    ("speech_c6", (84, 20, 256, 16, 256, 3, 3, 1, 1, 1, 1)),
    ("speech_c7", (84, 20, 256, 16, 512, 5, 5, 1, 1, 2, 2)),
    ("speech_c8", (42, 10, 512, 16, 512, 3, 3, 1, 1, 1, 1)),
    ("device_speech", (151, 40, 1, 1, 32, 20, 5, 8, 8, 8, 2)),
    ("ocr_c1", (480, 48, 1, 16, 16, 3, 3, 1, 1, 1, 1)),
    ("ocr_c3", (120, 12, 32, 16, 64, 3, 3, 1, 1, 1, 1)),
    ("face_c1", (108, 108, 3, 8, 64, 3, 3, 1, 1, 2, 2)),
    ("face_c3", (27, 27, 128, 8, 128, 3, 3, 1, 1, 1, 1)),
    ("inception_5x5", (7, 7, 832, 16, 128, 5, 5, 2, 2, 1, 1)),
]

SUITES = {
    "resnet50": RESNET50,
    "mobilenet": MOBILENET_DW,
    "efficientnet": EFFICIENTNET_DW5,
    "convnext": CONVNEXT_DW7,
    "replknet": REPLKNET_31B,
    "grouped": GROUPED,
    **{name: [from_benchdnn(d) for d in lines] for name, lines in _BENCHDNN.items()},
    "deepbench": [from_deepbench(problem, f"db_{name}") for name, problem in _DEEPBENCH],
}
DEFAULT_SUITES = ("resnet50", "mobilenet")


def select(names):
    """(suite name, layer) pairs for a comma-separated list of suite names;
    'default' is resnet50 + mobilenet, 'all' every suite."""
    chosen = []
    for name in names.split(","):
        if name == "default":
            chosen += DEFAULT_SUITES
        elif name == "all":
            chosen += SUITES
        elif name in SUITES:
            chosen.append(name)
        elif name != "none":
            raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}, default, all")
    return [(suite, layer) for suite in dict.fromkeys(chosen) for layer in SUITES[suite]]
