"""conv_ext's functional convolutions: F.conv1d, F.conv2d, F.conv_transpose1d
and F.conv_transpose2d's signatures and semantics over the conv_ext ops.

Every one runs the three 2-D ops (conv2d_forward, conv2d_backward_input,
conv2d_backward_weight):
  - conv1d is conv2d with H = 1 (kernel 1 x k, stride 1 x s, ...), as torch
    itself does on the CPU, so its errors name the same 4-D sizes;
  - a transposed convolution is the gradient of a convolution with respect to
    its input: its forward is conv2d_backward_input, its input gradient the
    forward conv, its weight gradient conv2d_backward_weight with the roles of
    input and grad_output swapped (autograd.py's Functions already are these
    derivatives of each other, to any order).

conv2d's checks live in the C++ ops. conv1d and the transposed convolutions
check here first what torch reports in their own terms (1-D sizes, the
transposed weight layout) so their errors read as torch's.

Each function honours __torch_function__ as torch's do, so torch.fx traces
a call as one node (symbolic_trace, torchvision's create_feature_extractor)
and tensor subclasses see it.
"""
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch.overrides import handle_torch_function, has_torch_function

from .autograd import conv2d_functions

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"]

# torch's names for dtypes in "expected scalar type X but found Y".
_SCALAR_TYPE_NAMES = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
    torch.bfloat16: "BFloat16", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


# at::ScalarType's C++ names, as torch's "Input type (X) and bias type (Y)".
_CPP_DTYPE_NAMES = {
    torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
    torch.bfloat16: "c10::BFloat16", torch.complex64: "c10::complex<float>",
    torch.complex128: "c10::complex<double>",
}


def _is_int(value):
    return isinstance(value, (numbers.Integral, torch.SymInt)) and not isinstance(value, bool)


def _int_list(value, name, fn):
    """An int, or a sequence of ints, as a list (lengths are checked later)."""
    if _is_int(value):
        return [value]
    if isinstance(value, (list, tuple, torch.Size)) and all(_is_int(v) for v in value):
        return list(value)
    raise TypeError(
        f"{fn}(): argument '{name}' must be tuple of ints, not {type(value).__name__}")


def _check_arguments(fn, input, weight, bias, groups):
    """The Python argument parser's checks of F.<fn>."""
    for value, name, position in ((input, "input", 1), (weight, "weight", 2), (bias, "bias", 3)):
        if not isinstance(value, torch.Tensor) and not (name == "bias" and value is None):
            raise TypeError(f"{fn}(): argument '{name}' (position {position}) must be Tensor, "
                            f"not {type(value).__name__}")
    if not _is_int(groups):
        raise TypeError(f"{fn}(): argument 'groups' must be int, not {type(groups).__name__}")


def _check_input_dim(fn, input, dims):
    if input.dim() not in (dims + 1, dims + 2):
        raise RuntimeError(f"Expected {dims + 1}D (unbatched) or {dims + 2}D (batched) input to "
                           f"{fn}, but got input of size: {list(input.shape)}")


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
        warnings.warn(
            "Using padding='same' with even kernel lengths and odd dilation may require a "
            "zero-padded copy of the input be created", UserWarning, stacklevel=4)
        # F.pad takes the last dimension first: (left, right, top, bottom).
        pad = []
        for e in reversed(extra):
            pad += [0, e]
        input = F.pad(input, pad)
    return input, left


def _autocast(t):
    """`t` as autocast hands it to F.conv*, which are on autocast's
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


def _expand(values, name, dims):
    """at::_convolution's expand_param_if_needed."""
    if len(values) == 1:
        return values * dims
    if len(values) != dims:
        raise RuntimeError(f"expected {name} to be a single integer value or a list of {dims} "
                           f"values to match the convolution dimensions, but got "
                           f"{name}={list(values)}")
    return values


def _check_common(input, weight, groups, stride, padding, dilation, output_padding):
    """The checks of at::_convolution and check_shape_forward that do not
    depend on `transposed`, in torch's order. Returns the expanded
    (stride, padding, dilation, output_padding)."""
    dims = weight.dim() - 2
    if dims <= 0:
        raise RuntimeError("weight should have at least three dimensions")
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    stride = _expand(stride, "stride", dims)
    padding = _expand(padding, "padding", dims)
    dilation = _expand(dilation, "dilation", dims)
    output_padding = _expand(output_padding, "output_padding", dims)
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    if any(p < 0 for p in output_padding):
        raise RuntimeError("negative output_padding is not supported")
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    w = list(weight.shape)
    if weight.dim() != input.dim():
        raise RuntimeError(f"Expected {weight.dim()}-dimensional input for {weight.dim()}-"
                           f"dimensional weight {w}, but got {input.dim()}-dimensional input of "
                           f"size {list(input.shape)} instead")
    if w[0] < groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be at least {groups} at "
                           f"dimension 0, but got weight of size {w} instead")
    if w[0] % groups != 0:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} "
                           f"at dimension 0, but got weight of size [{w}] instead")
    return stride, padding, dilation, output_padding


def _check_conv1d_shape(input, weight, bias, groups, padding, dilation):
    """check_shape_forward's non-transposed checks in 1-D terms (the rest,
    on the H = 1 problem, the conv2d op makes with torch's messages)."""
    w, x = list(weight.shape), list(input.shape)
    if x[1] != w[1] * groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {w}, expected input{x} to "
                           f"have {w[1] * groups} channels, but got {x[1]} channels instead")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != w[0]):
        raise RuntimeError(f"Given weight of size {w}, expected bias to be 1-dimensional with "
                           f"{w[0]} elements, but got bias of size {list(bias.shape)} instead")
    padded = x[2] + 2 * padding[0]
    extent = dilation[0] * (w[2] - 1) + 1
    if padded < extent:
        raise RuntimeError(f"Calculated padded input size per channel: ({padded}). Kernel size: "
                           f"({extent}). Kernel size can't be greater than actual input size")


def _check_transposed_channels(input, weight, bias, groups):
    """check_shape_forward's transposed checks (in the problem's own dims)."""
    w, x = list(weight.shape), list(input.shape)
    if x[1] != w[0]:
        raise RuntimeError(f"Given transposed=1, weight of size {w}, expected input{x} to have "
                           f"{w[0]} channels, but got {x[1]} channels instead")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != w[1] * groups):
        raise RuntimeError(f"Given transposed=1, weight of size {w}, expected bias to be "
                           f"1-dimensional with {w[1] * groups} elements, but got bias of size "
                           f"{list(bias.shape)} instead")


def _check_transposed_shape(input, weight, groups, stride, padding, dilation, output_padding):
    """slow_conv_transpose2d's checks, on 2-D sizes (a 1-D problem is lifted
    to H = 1 before, as torch does). Returns the output size (N, K, P, Q)."""
    w, x = list(weight.shape), list(input.shape)
    if w[2] <= 0 or w[3] <= 0:
        raise RuntimeError(f"kernel size should be greater than zero, but got kernel_height: "
                           f"{w[2]} kernel_width: {w[3]}")
    if dilation[0] <= 0 or dilation[1] <= 0:
        raise RuntimeError(f"dilation should be greater than zero, but got dilation_height: "
                           f"{dilation[0]}, dilation_width: {dilation[1]}")
    if not all(op < s or op < d for op, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(
            "output padding must be smaller than either stride or dilation, but got "
            f"output_padding_height: {output_padding[0]} output_padding_width: "
            f"{output_padding[1]} stride_height: {stride[0]} stride_width: {stride[1]} "
            f"dilation_height: {dilation[0]} dilation_width: {dilation[1]}")
    if x[0] != 0 and x[1] != 0 and (x[2] <= 0 or x[3] <= 0):
        raise RuntimeError("Only zero batch or zero channel inputs are supported, but got "
                           f"input shape: {x}")
    size = [(x[i + 2] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w[i + 2] - 1)
            + output_padding[i] + 1 for i in range(2)]
    if size[0] < 1 or size[1] < 1:
        raise RuntimeError(f"Given input size per channel: ({x[2]} x {x[3]}). Calculated output "
                           f"size per channel: ({size[0]} x {size[1]}). Output size is too small")
    if input.dtype != weight.dtype:
        raise RuntimeError(f"expected scalar type {_SCALAR_TYPE_NAMES.get(input.dtype, input.dtype)}"
                           f" but found {_SCALAR_TYPE_NAMES.get(weight.dtype, weight.dtype)}")
    return [x[0], w[1] * groups, *size]


def _dtype_error(input, weight, bias):
    """torch's error for a dtype mismatch on the CPU, in its order: the bias
    first, then the weight (None where the op's own message is torch's)."""
    if bias is not None and bias.dtype != input.dtype:
        return RuntimeError(f"Input type ({_CPP_DTYPE_NAMES.get(input.dtype, input.dtype)}) and "
                            f"bias type ({_CPP_DTYPE_NAMES.get(bias.dtype, bias.dtype)}) should be "
                            "the same")
    if weight.dtype != input.dtype and input.device.type == "cpu":
        return RuntimeError(f"expected scalar type {_SCALAR_TYPE_NAMES.get(input.dtype, input.dtype)}"
                            f" but found {_SCALAR_TYPE_NAMES.get(weight.dtype, weight.dtype)}")
    return None


def _raise_mismatch(input, weight, bias, stride, padding, dilation, groups):
    """For operands of different dtypes: the op's shape checks come first (as
    in torch), then torch's dtype message instead of the op's."""
    try:
        torch.ops.conv_ext.conv2d_forward(input, weight, bias, stride, padding, dilation, groups)
    except RuntimeError as op_error:
        error = _dtype_error(input, weight, bias)
        if error is None or "should be the same" not in str(op_error):
            raise
    else:
        error = _dtype_error(input, weight, bias)
    raise error


def _gauss(real_conv, input, weight, bias):
    """A complex convolution from three real ones (Gauss's trick, as torch's
    complex_convolution): with x = a + ib, w = c + id,
        x * w = (ac - bd) + i((a + b)(c + d) - ac - bd).
    The bias rides on two of them: t1 = ac + Re b, t3 = (a+b)(c+d) + Re b + Im b.
    Built of differentiable real calls, so autograd gives the complex
    gradients (and double backward) from the real kernels."""
    a, b = input.real, input.imag
    c, d = weight.real, weight.imag
    t1 = real_conv(a, c, None if bias is None else bias.real)
    t2 = real_conv(b, d, None)
    t3 = real_conv(a + b, c + d, None if bias is None else bias.real + bias.imag)
    return torch.complex(t1 - t2, t3 - t1 - t2)


def _conv(fn, dims, input, weight, bias, stride, padding, dilation, groups):
    """conv1d (dims 1) and conv2d (dims 2)."""
    _check_arguments(fn, input, weight, bias, groups)
    if input.is_complex() and weight.dtype == input.dtype and (bias is None or
                                                               bias.dtype == input.dtype):
        return _gauss(lambda x, w, b: _conv(fn, dims, x, w, b, stride, padding, dilation, groups),
                      input, weight, bias)
    input, weight, bias = _autocast(input), _autocast(weight), _autocast(bias)
    _check_input_dim(fn, input, dims)
    is_batched = input.dim() == dims + 2
    if not is_batched:
        input = input.unsqueeze(0)
    stride = _int_list(stride, "stride", fn)
    dilation = _int_list(dilation, "dilation", fn)
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0]
        elif padding == "same":
            input, padding = _same_padding(input, weight, stride, dilation, groups)
        else:
            raise RuntimeError(f"Invalid padding string: '{padding}'")
    else:
        padding = _int_list(padding, "padding", fn)
    if dims == 1:
        stride, padding, dilation, _ = _check_common(input, weight, groups, stride, padding,
                                                     dilation, [0])
        _check_conv1d_shape(input, weight, bias, groups, padding, dilation)
        input, weight = input.unsqueeze(2), weight.unsqueeze(2)
        stride, padding, dilation = [1, *stride], [0, *padding], [1, *dilation]
    if weight.dtype != input.dtype or (bias is not None and bias.dtype != input.dtype):
        _raise_mismatch(input, weight, bias, stride, padding, dilation, groups)
    output = conv2d_functions()[0].apply(input, weight, bias, stride, padding, dilation, groups)
    if input.shape[1] == 0:
        # No input channels: torch returns no output channels either (N x 0 x P x Q), and a
        # zero bias gradient, which the slice gives.
        output = output[:, :0]
    if dims == 1:
        output = output.squeeze(2)
    return output if is_batched else output.squeeze(0)


def _conv_transpose(fn, dims, input, weight, bias, stride, padding, output_padding, groups,
                    dilation):
    """conv_transpose1d (dims 1) and conv_transpose2d (dims 2)."""
    _check_arguments(fn, input, weight, bias, groups)
    if input.is_complex() and weight.dtype == input.dtype:
        return _gauss(lambda x, w, b: _conv_transpose(fn, dims, x, w, b, stride, padding,
                                                      output_padding, groups, dilation),
                      input, weight, None if bias is None else bias.to(input.dtype))
    input, weight, bias = _autocast(input), _autocast(weight), _autocast(bias)
    _check_input_dim(fn, input, dims)
    is_batched = input.dim() == dims + 2
    if not is_batched:
        input = input.unsqueeze(0)
    params = [_int_list(v, name, fn) for v, name in (
        (stride, "stride"), (padding, "padding"), (dilation, "dilation"),
        (output_padding, "output_padding"))]
    if dims == 2:
        # F.conv_transpose2d's parser reads one int as that int twice.
        params = [v * 2 if len(v) == 1 else v for v in params]
    stride, padding, dilation, output_padding = _check_common(input, weight, groups, *params)
    _check_transposed_channels(input, weight, bias, groups)
    if dims == 1:
        input, weight = input.unsqueeze(2), weight.unsqueeze(2)
        stride, padding = [1, *stride], [0, *padding]
        dilation, output_padding = [1, *dilation], [0, *output_padding]
    output_size = _check_transposed_shape(input, weight, groups, stride, padding, dilation,
                                          output_padding)
    # The grad-input op computes rows (columns) 0..Hc-1 for a padding p and an
    # input size Hc whose convolution has H outputs: Hc <= base + s - 1, with
    # base = Ho - output_padding. output_padding >= stride (allowed when
    # dilation > stride) needs more rows: run with t less padding, where rows
    # are shifted by t and 2t more fit, and keep rows t..t+Ho-1; rows past
    # the uncropped output (t capped at p) are zeros, padded on.
    shift, computed = [], []
    for i in range(2):
        base = output_size[2 + i] - output_padding[i]
        t = max(0, min(output_padding[i] - stride[i] + 1, padding[i]))
        shift.append(t)
        computed.append(min(output_size[2 + i] + 2 * t, base + 2 * t + stride[i] - 1))
    output = conv2d_functions()[1].apply(
        input, weight, [*output_size[:2], *computed], stride,
        [p - t for p, t in zip(padding, shift)], dilation, groups)
    if shift[0] or shift[1]:
        output = output[:, :, shift[0]:shift[0] + output_size[2], shift[1]:shift[1] + output_size[3]]
    missing = [shift[i] + output_size[2 + i] - computed[i] for i in range(2)]
    if missing[0] > 0 or missing[1] > 0:
        output = F.pad(output, [0, max(0, missing[1]), 0, max(0, missing[0])])
    if bias is not None:
        output = output + bias.to(output.dtype).reshape(-1, 1, 1)
    if dims == 1:
        output = output.squeeze(2)
    return output if is_batched else output.squeeze(0)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Drop-in for torch.nn.functional.conv1d, computed by conv_ext's 2-D
    kernels with H = 1."""
    if has_torch_function((input, weight, bias)):
        return handle_torch_function(conv1d, (input, weight, bias),
                                     input, weight, bias, stride, padding, dilation, groups)
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Drop-in for torch.nn.functional.conv2d (same arguments, results,
    gradients and errors), computed by conv_ext's kernels."""
    if has_torch_function((input, weight, bias)):
        return handle_torch_function(conv2d, (input, weight, bias),
                                     input, weight, bias, stride, padding, dilation, groups)
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Drop-in for torch.nn.functional.conv_transpose1d."""
    if has_torch_function((input, weight, bias)):
        return handle_torch_function(conv_transpose1d, (input, weight, bias),
                                     input, weight, bias, stride, padding, output_padding, groups, dilation)
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Drop-in for torch.nn.functional.conv_transpose2d: the gradient of a
    convolution with respect to its input (weight laid out as
    (C_in, C_out / groups, kH, kW)), computed by conv_ext's kernels."""
    if has_torch_function((input, weight, bias)):
        return handle_torch_function(conv_transpose2d, (input, weight, bias),
                                     input, weight, bias, stride, padding, output_padding, groups, dilation)
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)
