"""Bad input: the same exception type as F.conv2d and, where torch has one,
the same message. Each case is also run through F.conv2d, so a test fails
if torch's own behaviour drifts from what we copy."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import conv_ext

x = torch.randn(1, 4, 5, 5)
w = torch.randn(6, 4, 3, 3)

# (description, kwargs for conv2d, exception type, regex)
CASES = [
    ("2-d input", dict(input=torch.randn(4, 5), weight=w), RuntimeError,
     r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[4, 5\]"),
    ("5-d input", dict(input=torch.randn(1, 1, 4, 5, 5), weight=w), RuntimeError,
     r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d"),
    ("3-d weight, padding same", dict(input=x, weight=torch.randn(6, 4, 3), padding="same"),
     RuntimeError, r"Expected 3-dimensional input for 3-dimensional weight"),
    ("channel mismatch", dict(input=x, weight=torch.randn(6, 3, 3, 3)), RuntimeError,
     r"Given groups=1, weight of size \[6, 3, 3, 3\], expected input\[1, 4, 5, 5\] to have 3 "
     r"channels, but got 4 channels instead"),
    ("groups not dividing out channels", dict(input=x, weight=w, groups=4), RuntimeError,
     r"Given groups=4, expected weight to be divisible by 4 at dimension 0"),
    ("groups not dividing in channels", dict(input=x, weight=torch.randn(6, 2, 3, 3), groups=3),
     RuntimeError, r"expected input\[1, 4, 5, 5\] to have 6 channels, but got 4 channels instead"),
    ("groups zero", dict(input=x, weight=w, groups=0), RuntimeError,
     r"non-positive groups is not supported"),
    ("groups negative", dict(input=x, weight=w, groups=-2), RuntimeError,
     r"non-positive groups is not supported"),
    ("groups larger than out channels", dict(input=x, weight=torch.randn(2, 1, 3, 3), groups=4),
     RuntimeError, r"expected weight to be at least 4 at dimension 0"),
    ("kernel larger than padded input", dict(input=x, weight=torch.randn(6, 4, 7, 7)), RuntimeError,
     r"Calculated padded input size per channel: \(5 x 5\). Kernel size: \(7 x 7\). "
     r"Kernel size can't be greater than actual input size"),
    ("dilated kernel larger than input", dict(input=x, weight=w, dilation=3), RuntimeError,
     r"Kernel size: \(7 x 7\). Kernel size can't be greater than actual input size"),
    ("padding same with stride", dict(input=x, weight=w, padding="same", stride=2), RuntimeError,
     r"padding='same' is not supported for strided convolutions"),
    ("unknown padding string", dict(input=x, weight=w, padding="full"), RuntimeError,
     r"Invalid padding string: 'full'"),
    ("negative padding", dict(input=x, weight=w, padding=-1), RuntimeError,
     r"negative padding is not supported"),
    ("negative padding in tuple", dict(input=x, weight=w, padding=(1, -1)), RuntimeError,
     r"negative padding is not supported"),
    ("zero stride", dict(input=x, weight=w, stride=0), RuntimeError,
     r"non-positive stride is not supported"),
    ("negative stride", dict(input=x, weight=w, stride=(1, -2)), RuntimeError,
     r"non-positive stride is not supported"),
    ("zero dilation", dict(input=x, weight=w, dilation=0), RuntimeError,
     r"dilation should be greater than zero"),
    ("stride of length 3", dict(input=x, weight=w, stride=(1, 1, 1)), RuntimeError,
     r"expected stride to be a single integer value or a list of 2 values to match the "
     r"convolution dimensions, but got stride=\[1, 1, 1\]"),
    ("padding of length 3", dict(input=x, weight=w, padding=(1, 1, 1)), RuntimeError,
     r"expected padding to be a single integer value or a list of 2 values"),
    ("dilation of length 3", dict(input=x, weight=w, dilation=(1, 1, 1)), RuntimeError,
     r"expected dilation to be a single integer value or a list of 2 values"),
    ("input/weight dtype mismatch", dict(input=x.double(), weight=w), RuntimeError, r""),
    ("input/bias dtype mismatch", dict(input=x, weight=w, bias=torch.randn(6).double()),
     RuntimeError, r"Input type \(float\) and bias type \(double\) should be the same"),
    ("bias of the wrong size", dict(input=x, weight=w, bias=torch.randn(5)), RuntimeError,
     r"Given weight of size \[6, 4, 3, 3\], expected bias to be 1-dimensional with 6 elements, "
     r"but got bias of size \[5\] instead"),
    ("bias of the wrong rank", dict(input=x, weight=w, bias=torch.randn(6, 1)), RuntimeError,
     r"expected bias to be 1-dimensional with 6 elements, but got bias of size \[6, 1\]"),
    ("float stride", dict(input=x, weight=w, stride=2.5), TypeError, r"stride"),
    ("input not a tensor", dict(input=None, weight=w), TypeError, r"input"),
    ("zero-size kernel", dict(input=x, weight=torch.randn(6, 4, 0, 3)), RuntimeError,
     r"kernel size should be greater than zero"),
    ("empty spatial input", dict(input=torch.randn(2, 4, 0, 5), weight=torch.randn(6, 4, 1, 1), padding=1),
     RuntimeError, r"Only zero batch or zero channel inputs are supported"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_error_as_torch(case):
    _, kwargs, error, regex = case
    with pytest.raises(error, match=regex):
        F.conv2d(**kwargs)
    with pytest.raises(error, match=regex):
        conv_ext.conv2d(**kwargs)


def test_weight_rank_mismatch():
    # (torch reports a stride-length error here, as F.conv2d's defaults are
    # 2-element lists; the rank mismatch is the real fault.)
    with pytest.raises(RuntimeError, match="Expected 3-dimensional input for 3-dimensional weight"):
        conv_ext.conv2d(x, torch.randn(6, 4, 3))


def test_dtype_mismatch_message():
    # torch's CPU message and order: the bias is checked before the weight.
    with pytest.raises(RuntimeError, match=r"expected scalar type Double but found Float"):
        conv_ext.conv2d(x.double(), w)
    with pytest.raises(RuntimeError, match=r"Input type \(double\) and bias type \(float\) "
                                           r"should be the same"):
        conv_ext.conv2d(x.double(), w, torch.randn(6))


def test_integer_dtypes_are_refused_clearly():
    # torch computes integer convolutions on the CPU; conv_ext refuses them
    # (NotImplementedError is a RuntimeError) instead of giving wrong numbers.
    with pytest.raises(NotImplementedError, match="expected a floating-point tensor"):
        conv_ext.conv2d(x.long(), w.long())
    with pytest.raises(RuntimeError, match="expected a floating-point tensor"):
        conv_ext.conv2d(x.int(), w.int())


def test_order_of_checks_follows_torch():
    # Several faults at once: the first one torch reports is the one we report.
    combos = [
        dict(input=x, weight=w, padding=-1, groups=0),
        dict(input=x, weight=w, stride=0, padding=-1),
        dict(input=x, weight=w, stride=0, dilation=0),
        dict(input=x, weight=w.double(), groups=5),
        dict(input=x, weight=w.double(), bias=torch.randn(3)),
        dict(input=x, weight=torch.randn(6, 4, 9, 9), bias=torch.randn(2)),
    ]
    for kwargs in combos:
        with pytest.raises(RuntimeError) as theirs:
            F.conv2d(**kwargs)
        with pytest.raises(RuntimeError) as ours:
            conv_ext.conv2d(**kwargs)
        first_words = " ".join(str(theirs.value).split()[:4])
        assert str(ours.value).startswith(first_words), (kwargs, theirs.value, ours.value)


@pytest.mark.parametrize("kwargs", [
    dict(padding=2**40),
    dict(padding=(0, 2**62)),
    dict(dilation=2**62),
], ids=str)
def test_absurd_sizes_raise_and_do_not_crash(kwargs):
    with pytest.raises(RuntimeError):
        conv_ext.conv2d(x, w, **kwargs)


def test_absurd_stride_is_fine():
    # A huge stride is legal: one output position.
    out = conv_ext.conv2d(x, w, stride=2**62)
    torch.testing.assert_close(out, F.conv2d(x, w, stride=2**62))


@pytest.mark.parametrize("kwargs,regex", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), "in_channels must be divisible"),
    (dict(in_channels=4, out_channels=3, kernel_size=3, groups=2), "out_channels must be divisible"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding_mode="wrap"), "padding_mode must be"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding="same"),
     "padding='same' is not supported for strided convolutions"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding="full"), "Invalid padding string"),
], ids=str)
def test_module_constructor_errors(kwargs, regex):
    with pytest.raises(ValueError, match=regex):
        nn.Conv2d(**kwargs)
    with pytest.raises(ValueError, match=regex):
        conv_ext.Conv2d(**kwargs)


@pytest.mark.skipif(conv_ext.built_with_cuda() or not torch.cuda.is_available(),
                    reason="needs a GPU and a build without CUDA")
def test_cuda_tensor_without_cuda_build_says_how_to_rebuild():
    with pytest.raises(RuntimeError, match="built without CUDA"):
        conv_ext.conv2d(x.cuda(), w.cuda())
