"""The fused forward op conv_ext::conv2d_fused from Python: its fake kernel
(torch.compile keeps it one call), its autograd, the functional form and the
FusedConv2d module that conv_ext.fuse() puts in place of Conv -> BatchNorm ->
activation (-> residual add) chains.

    y = conv2d_fused(x, w, b, activation="relu", residual=identity)
      == relu(conv2d(x, w, b) + identity)

The epilogue, in order: bias (part of the convolution), then a per-channel
`scale` and `shift` (output * scale + shift: a BatchNorm in inference), then
`residual` added if `residual_before_activation`, then the activation, then
`residual` added otherwise.

Autograd works, to any order: the backward recomputes the unfused chain
(conv_ext.conv2d and torch's elementwise ops) from the saved inputs and
differentiates it, so the forward keeps nothing beyond its inputs (training
through the fused op costs one extra forward; it is meant for inference).
"""
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import _autocast, _int_list, conv2d
from .ops import _conv2d_forward_fake

__all__ = ["ACTIVATIONS", "FusedConv2d", "conv2d_fused", "conv2d_fused_reference"]

# Activation name (the op's `activation` argument) -> the torch function it equals.
ACTIVATIONS = {
    "none": lambda y: y,
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
    "hardswish": F.hardswish,
}


@torch.library.register_fake("conv_ext::conv2d_fused")
def _conv2d_fused_fake(input, weight, bias, scale, shift, residual, activation,
                       residual_before_activation, stride, padding, dilation, groups):
    return _conv2d_forward_fake(input, weight, bias, stride, padding, dilation, groups)


def conv2d_fused_reference(input, weight, bias=None, scale=None, shift=None, residual=None,
                           activation="none", residual_before_activation=True, stride=1,
                           padding=0, dilation=1, groups=1, conv=conv2d):
    """The unfused chain conv2d_fused computes (differentiable; `conv` is
    conv_ext.conv2d by default, F.conv2d for a reference independent of
    conv_ext)."""
    y = conv(input, weight, bias, stride, padding, dilation, groups)
    if scale is not None:
        y = y * scale.view(1, -1, 1, 1)
    if shift is not None:
        y = y + shift.view(1, -1, 1, 1)
    if residual is not None and residual_before_activation:
        y = y + residual
    y = ACTIVATIONS[activation](y)
    if residual is not None and not residual_before_activation:
        y = y + residual
    return y


_TENSOR_ARGS = ("input", "weight", "bias", "scale", "shift", "residual")


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:6])
    ctx.options = inputs[6:]


def _backward(ctx, grad_output):
    # With create_graph (grad mode on here), the recomputation is built from
    # the saved tensors themselves, so its graph gives the second derivatives.
    create_graph = torch.is_grad_enabled()
    saved = ctx.saved_tensors
    needs = ctx.needs_input_grad[:6]
    with torch.enable_grad():
        inputs = [t if t is None or create_graph else t.detach().requires_grad_(n)
                  for t, n in zip(saved, needs)]
        out = conv2d_fused_reference(*inputs, *ctx.options)
        wanted = [t for t, n in zip(inputs, needs) if n and t is not None]
        grads = iter(torch.autograd.grad(out, wanted, grad_output, create_graph=create_graph))
    return tuple(next(grads) if n and t is not None else None
                 for t, n in zip(saved, needs)) + (None,) * 6


torch.library.register_autograd("conv_ext::conv2d_fused", _backward,
                                setup_context=_setup_context)


def conv2d_fused(input, weight, bias=None, scale=None, shift=None, residual=None,
                 activation="none", residual_before_activation=True, stride=1, padding=0,
                 dilation=1, groups=1):
    """conv2d (F.conv2d's arguments; batched 4-d input, numeric padding)
    followed by the epilogue in the same pass over the output. See the
    module docstring for the order of operations."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"conv2d_fused: unknown activation {activation!r}; expected one of "
                         f"{', '.join(ACTIVATIONS)}")
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool):
        raise TypeError(f"conv2d_fused(): argument 'groups' must be int, "
                        f"but got {type(groups).__name__}")
    input, weight, bias, scale, shift, residual = (
        _autocast(t) for t in (input, weight, bias, scale, shift, residual))
    return torch.ops.conv_ext.conv2d_fused(
        input, weight, bias, scale, shift, residual, activation, bool(residual_before_activation),
        _int_list(stride, "stride", "conv2d_fused"), _int_list(padding, "padding", "conv2d_fused"),
        _int_list(dilation, "dilation", "conv2d_fused"), groups)


class FusedConv2d(nn.Module):
    """A Conv2d with its BatchNorm folded into weight and bias, and an
    activation and optional residual add in its epilogue: what conv_ext.fuse
    puts in place of a Conv -> BatchNorm -> activation (-> add) chain.

    forward(input, residual=None). A residual whose shape differs from the
    output's (a broadcasting add) is added outside the kernel, by torch."""

    def __init__(self, weight, bias, stride, padding, dilation, groups, activation="none",
                 residual_before_activation=True, source=""):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"FusedConv2d: unknown activation {activation!r}")
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.groups = groups
        self.activation = activation
        self.residual_before_activation = residual_before_activation
        self.source = source  # what it replaced, for the repr and the fusion report

    def _output_shape(self, input):
        n, _, h, w = input.shape
        k, _, r, s = self.weight.shape
        p = (h + 2 * self.padding[0] - self.dilation[0] * (r - 1) - 1) // self.stride[0] + 1
        q = (w + 2 * self.padding[1] - self.dilation[1] * (s - 1) - 1) // self.stride[1] + 1
        return (n, k, p, q)

    def forward(self, input, residual=None):
        args = (self.stride, self.padding, self.dilation, self.groups)
        if input.dim() != 4:  # unbatched: through the batched op
            out = self.forward(input.unsqueeze(0),
                               None if residual is None else residual.unsqueeze(0))
            return out.squeeze(0)
        if residual is not None and (tuple(residual.shape) != self._output_shape(input)
                                     or residual.dtype != input.dtype):
            # A broadcasting or type-promoting add: torch does the add.
            if not self.residual_before_activation:
                return conv2d_fused(input, self.weight, self.bias, None, None, None,
                                    self.activation, True, *args) + residual
            y = conv2d_fused(input, self.weight, self.bias, None, None, None, "none", True,
                             *args) + residual
            return ACTIVATIONS[self.activation](y)
        return conv2d_fused(input, self.weight, self.bias, None, None, residual, self.activation,
                            self.residual_before_activation, *args)

    def extra_repr(self):
        k, c, r, s = self.weight.shape
        text = (f"{c * self.groups}, {k}, kernel_size=({r}, {s}), stride={self.stride}, "
                f"padding={self.padding}")
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        text += f", activation={self.activation}"
        return text
