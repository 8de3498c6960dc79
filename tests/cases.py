"""Case lists shared by several test modules (test modules import these, not
each other's lists)."""

# The parameter space every backend is compared with torch on (CPU kernels,
# CUDA kernels, their CPU emulation):
# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
CONFIGS = [
    (2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1),                 # plain 3x3, pad 1
    (2, 4, 9, 7, 6, 3, 3, 2, 1, 1, 1),                 # stride 2, odd sizes
    (1, 4, 10, 11, 5, 1, 1, 1, 0, 1, 1),               # 1x1
    (2, 6, 9, 9, 6, 3, 3, 1, 1, 1, 6),                 # depthwise
    (2, 6, 12, 12, 12, 5, 5, 2, 2, 1, 6),              # depthwise multiplier 2, stride 2
    (2, 6, 8, 10, 4, 3, 3, 1, 1, 1, 2),                # groups 2
    (1, 3, 16, 16, 4, 7, 7, 2, 3, 1, 1),               # first-layer 7x7 s2 p3
    (1, 2, 13, 14, 3, 11, 11, 1, 5, 1, 1),             # 11x11
    (1, 2, 12, 12, 3, 3, 3, 1, 2, 2, 1),               # dilation 2
    (2, 4, 11, 9, 4, 3, 2, (2, 3), (1, 0), (1, 2), 2),  # everything asymmetric
    (2, 3, 5, 5, 2, 5, 5, 1, 0, 1, 1),                 # kernel == input: 1x1 output
    (1, 2, 4, 4, 3, 3, 3, 3, 2, 1, 1),                 # stride > kernel reach
    (0, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1),                 # empty batch
    (2, 3, 6, 6, 4, 2, 4, 1, (1, 2), 1, 1),            # even kernel sizes
    (1, 1, 7, 7, 1, 3, 3, 1, 1, 3, 1),                 # single channel, dilation 3
]


def config_id(config):
    """Test id of a CONFIGS-style tuple."""
    return "N{}C{}H{}W{}K{}R{}S{}-s{}-p{}-d{}-g{}".format(*config).replace(" ", "")


# gradcheck / gradgradcheck in float64 (x: 2 x 4 x H x W, w: 4 x 4/groups x 3 x 2).
GRADCHECK_CONFIGS = [
    dict(stride=1, padding=1, dilation=1, groups=1),
    dict(stride=2, padding=(1, 0), dilation=1, groups=2),
    dict(stride=(1, 2), padding=2, dilation=(2, 1), groups=1),
    dict(stride=1, padding=1, dilation=1, groups=4),     # depthwise
    dict(stride=2, padding=1, dilation=1, groups=4),     # depthwise, strided
    dict(stride=1, padding="same", dilation=1, groups=1),
]
