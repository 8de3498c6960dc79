"""conv_ext.conv2d: F.conv2d's signature and semantics over the conv_ext ops.

This layer only does what F.conv2d's C++ front end does before the
convolution proper: autocast, argument normalisation, unbatched input, and
string padding. Every other check is done by the op itself.
"""
import numbers

import torch
import torch.nn.functional as F

from .autograd import conv2d_functions

__all__ = ["conv2d"]


def _int_list(value, name):
    """An int, or a sequence of ints, as a list (lengths are checked by the op)."""
    if isinstance(value, (numbers.Integral, torch.SymInt)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple, torch.Size)) and all(
            isinstance(v, (numbers.Integral, torch.SymInt)) and not isinstance(v, bool)
            for v in value):
        return list(value)
    raise TypeError(
        f"conv2d(): argument '{name}' must be tuple of ints, but got {type(value).__name__}")


def _check_tensor(value, name, position, optional=False):
    if optional and value is None:
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"conv2d(): argument '{name}' (position {position}) must be Tensor, "
                        f"not {type(value).__name__}")


def _same_padding(input, weight, stride, dilation, groups):
    """Resolve padding='same' as torch does: symmetric padding where the
    total is even, else one extra row/column of zeros on the bottom/right.
    Returns (input, padding)."""
    if weight.dim() <= 2:
        raise RuntimeError("weight should have at least three dimensions")
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    if weight.dim() != input.dim():
        raise RuntimeError(
            f"Expected {weight.dim()}-dimensional input for {weight.dim()}-dimensional weight"
            f"{list(weight.shape)}, but got {input.dim()}-dimensional input of size "
            f"{list(input.shape)} instead")
    dims = weight.dim() - 2
    for name, values in (("stride", stride), ("dilation", dilation)):
        if len(values) not in (1, dims):
            raise RuntimeError(f"{name} cannot broadcast to {dims} dimensions")
    if any(s != 1 for s in stride):
        raise RuntimeError("padding='same' is not supported for strided convolutions")
    left, extra = [], []
    for i in range(dims):
        d = dilation[0] if len(dilation) == 1 else dilation[i]
        total = d * (weight.shape[i + 2] - 1)
        left.append(total // 2)
        extra.append(total - 2 * (total // 2))
    if any(extra):
        # F.pad takes the last dimension first: (left, right, top, bottom).
        pad = []
        for e in reversed(extra):
            pad += [0, e]
        input = F.pad(input, pad)
    return input, left


def _autocast(t):
    """`t` as autocast hands it to F.conv2d, which is on autocast's
    lower-precision list for CPU and CUDA: floating-point tensors other than
    float64 are cast to the autocast dtype of their device."""
    if t is None or t.device.type not in ("cpu", "cuda"):
        return t
    device_type = t.device.type
    if not torch.is_autocast_enabled(device_type):
        return t
    dtype = torch.get_autocast_dtype(device_type)
    if t.is_floating_point() and t.dtype not in (torch.float64, dtype):
        return t.to(dtype)
    return t


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Drop-in for torch.nn.functional.conv2d (same arguments, results,
    gradients and errors), computed by conv_ext's kernels."""
    _check_tensor(input, "input", 1)
    _check_tensor(weight, "weight", 2)
    _check_tensor(bias, "bias", 3, optional=True)
    if not isinstance(groups, (numbers.Integral, torch.SymInt)) or isinstance(groups, bool):
        raise TypeError(f"conv2d(): argument 'groups' must be int, but got {type(groups).__name__}")
    input, weight, bias = _autocast(input), _autocast(weight), _autocast(bias)
    if input.dim() not in (3, 4):
        raise RuntimeError("Expected 3D (unbatched) or 4D (batched) input to conv2d, "
                           f"but got input of size: {list(input.shape)}")
    is_batched = input.dim() == 4
    if not is_batched:
        input = input.unsqueeze(0)
    stride = _int_list(stride, "stride")
    dilation = _int_list(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0]
        elif padding == "same":
            input, padding = _same_padding(input, weight, stride, dilation, groups)
        else:
            raise RuntimeError(f"Invalid padding string: '{padding}'")
    else:
        padding = _int_list(padding, "padding")
    conv2d_function = conv2d_functions()[0]
    output = conv2d_function.apply(input, weight, bias, stride, padding, dilation, groups)
    return output if is_batched else output.squeeze(0)
