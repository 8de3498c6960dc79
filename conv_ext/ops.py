"""Python registrations for the conv_ext ops: fake (meta) kernels, so
torch.compile and FakeTensor tracing know the output shapes without running a
kernel, and vmap rules, so torch.func.vmap works over them.

The fake kernels compute shapes only; the argument checks live in the C++ ops (one
place, shared by CPU and CUDA) and run when the real kernel runs.
"""
import torch
from torch._prims_common import suggest_memory_format

from . import batching

__all__ = []


def _pair(values):
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _memory_format(a, b):
    # Same rule as conv2d_memory_format in csrc/conv2d_params.h.
    if a.dim() == 4 and a.shape[0] == 0:
        return torch.contiguous_format
    if torch.channels_last in (suggest_memory_format(a), suggest_memory_format(b)):
        return torch.channels_last
    return torch.contiguous_format


@torch.library.register_fake("conv_ext::conv2d_forward")
def _conv2d_forward_fake(input, weight, bias, stride, padding, dilation, groups):
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    n, _, h, w = input.shape
    k, _, r, s = weight.shape
    p = (h + 2 * ph - dh * (r - 1) - 1) // sh + 1
    q = (w + 2 * pw - dw * (s - 1) - 1) // sw + 1
    return input.new_empty((n, k, p, q)).contiguous(
        memory_format=_memory_format(input, weight))


@torch.library.register_fake("conv_ext::conv2d_backward_input")
def _conv2d_backward_input_fake(grad_output, weight, input_size, stride, padding,
                                dilation, groups):
    return grad_output.new_empty(input_size).contiguous(
        memory_format=_memory_format(grad_output, weight))


@torch.library.register_fake("conv_ext::conv2d_backward_weight")
def _conv2d_backward_weight_fake(grad_output, input, weight_size, stride, padding,
                                 dilation, groups):
    return grad_output.new_empty(weight_size).contiguous(
        memory_format=_memory_format(grad_output, input))



# vmap rules for direct calls of the ops (the autograd Functions have their
# own, the same folding through differentiable calls).
@torch.library.register_vmap("conv_ext::conv2d_forward")
def _conv2d_forward_vmap(info, in_dims, *args):
    return batching.forward(torch.ops.conv_ext.conv2d_forward, info, in_dims, *args)


@torch.library.register_vmap("conv_ext::conv2d_backward_input")
def _conv2d_backward_input_vmap(info, in_dims, *args):
    return batching.backward_input(torch.ops.conv_ext.conv2d_backward_input, info, in_dims, *args)


@torch.library.register_vmap("conv_ext::conv2d_backward_weight")
def _conv2d_backward_weight_vmap(info, in_dims, *args):
    return batching.backward_weight(torch.ops.conv_ext.conv2d_backward_weight, info, in_dims,
                                    *args)
