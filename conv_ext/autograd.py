"""Autograd over the conv_ext ops.

Three Functions, each the derivative of the others, so backward is itself
differentiable to any order (gradgradcheck, Hessian-vector products):

    y  = conv2d_forward(x, w) + b
    gx = conv2d_backward_input(gy, w)    (linear in gy and in w)
    gw = conv2d_backward_weight(gy, x)   (linear in gy and in x)

Each is bilinear, so its forward-mode derivative (jvp) is built from the same
Functions: d conv(x, w) = conv(dx, w) + conv(x, dw) (+ db), and likewise for
the two backward ops. That makes forward-mode AD and forward-over-reverse
(Hessian-vector products) work; forward-over-forward is refused (see
_refuse_forward_over_forward).

vmap: each Function's `vmap` folds the vmapped dimension into the batch or
the groups (conv_ext/batching.py) and calls the Function again, so transforms
outside the vmap still differentiate it. (generate_vmap_rule=True would be
simpler, but torch mis-flattens the list arguments when a generated rule
meets a jvp: vmap(jvp(...)), as in jacfwd(jacrev(...)).)

torch.compile: dynamo refuses (graph break) an autograd.Function that defines
`jvp`. The classes prefixed with an underscore are the same Functions without
jvp; `conv2d_functions()` picks them while compiling (forward-mode AD is then
unavailable, as it is for compiled code in general).
"""
import torch

from . import batching

__all__ = [
    "Conv2dFunction", "Conv2dBackwardInputFunction", "Conv2dBackwardWeightFunction",
    "conv2d_functions",
]

_ops = torch.ops.conv_ext


def conv2d_functions():
    """(forward, backward-input, backward-weight) Function classes to use
    here: the jvp-less ones under torch.compile, else the full ones."""
    if torch.compiler.is_compiling():
        return _Conv2d, _Conv2dBackwardInput, _Conv2dBackwardWeight
    return Conv2dFunction, Conv2dBackwardInputFunction, Conv2dBackwardWeightFunction


def _refuse_forward_over_forward():
    """PyTorch does not differentiate a custom Function's jvp at an outer
    forward-mode level (jvp of jvp, jacfwd of jacfwd): the cross term would
    silently be missing (the same happens with a toy Function). Refuse it."""
    stack = torch._C._functorch.get_interpreter_stack() or []
    if sum(i.key() == torch._C._functorch.TransformType.Jvp for i in stack) > 1:
        raise NotImplementedError(
            "conv_ext: nested forward-mode AD (jvp of jvp, jacfwd of jacfwd) is not supported "
            "by torch.autograd.Function; use forward-over-reverse (jvp of grad, jacfwd of "
            "jacrev) or F.conv2d")


def _add(a, b):
    """a + b where either may be None (a missing tangent)."""
    if a is None:
        return b
    return a if b is None else a + b


class _Conv2d(torch.autograd.Function):
    """conv2d(input, weight, bias, stride, padding, dilation, groups) with
    list arguments (stride etc. as lists of 1 or 2 ints, padding numeric)."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups):
        return _ops.conv2d_forward(input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(input, weight)
        ctx.conv_params = (stride, padding, dilation, groups)
        ctx.output_shape = output.shape

    @staticmethod
    def vmap(info, in_dims, *args):
        return batching.forward(conv2d_functions()[0].apply, info, in_dims, *args)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        params = ctx.conv_params
        _, backward_input, backward_weight = conv2d_functions()
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = backward_input.apply(grad_output, weight, list(input.shape), *params)
        if ctx.needs_input_grad[1]:
            grad_weight = backward_weight.apply(grad_output, input, list(weight.shape), *params)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum((0, 2, 3))
        return grad_input, grad_weight, grad_bias, None, None, None, None


class _Conv2dBackwardInput(torch.autograd.Function):
    """grad_input = conv2d_backward_input(grad_output, weight)."""

    @staticmethod
    def forward(grad_output, weight, input_size, stride, padding, dilation, groups):
        return _ops.conv2d_backward_input(
            grad_output, weight, input_size, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, weight, input_size, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(grad_output, weight)
        ctx.input_size = input_size
        ctx.conv_params = (stride, padding, dilation, groups)

    @staticmethod
    def vmap(info, in_dims, *args):
        return batching.backward_input(conv2d_functions()[1].apply, info, in_dims, *args)

    @staticmethod
    def backward(ctx, grad_grad_input):
        grad_output, weight = ctx.saved_tensors
        params = ctx.conv_params
        forward, _, backward_weight = conv2d_functions()
        d_grad_output = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad_output = forward.apply(grad_grad_input, weight, None, *params)
        if ctx.needs_input_grad[1]:
            d_weight = backward_weight.apply(
                grad_output, grad_grad_input, list(weight.shape), *params)
        return d_grad_output, d_weight, None, None, None, None, None


class _Conv2dBackwardWeight(torch.autograd.Function):
    """grad_weight = conv2d_backward_weight(grad_output, input)."""

    @staticmethod
    def forward(grad_output, input, weight_size, stride, padding, dilation, groups):
        return _ops.conv2d_backward_weight(
            grad_output, input, weight_size, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, input, weight_size, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(grad_output, input)
        ctx.weight_size = weight_size
        ctx.conv_params = (stride, padding, dilation, groups)

    @staticmethod
    def vmap(info, in_dims, *args):
        return batching.backward_weight(conv2d_functions()[2].apply, info, in_dims, *args)

    @staticmethod
    def backward(ctx, grad_grad_weight):
        grad_output, input = ctx.saved_tensors
        params = ctx.conv_params
        forward, backward_input, _ = conv2d_functions()
        d_grad_output = d_input = None
        if ctx.needs_input_grad[0]:
            d_grad_output = forward.apply(input, grad_grad_weight, None, *params)
        if ctx.needs_input_grad[1]:
            d_input = backward_input.apply(
                grad_output, grad_grad_weight, list(input.shape), *params)
        return d_grad_output, d_input, None, None, None, None, None


class Conv2dFunction(_Conv2d):
    """conv2d with backward and forward-mode (jvp) derivatives."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        _Conv2d.setup_context(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1])

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t, *_):
        _refuse_forward_over_forward()
        input, weight = ctx.saved_tensors
        params = ctx.conv_params
        tangent = None
        if input_t is not None:
            tangent = Conv2dFunction.apply(input_t, weight, None, *params)
        if weight_t is not None:
            tangent = _add(tangent, Conv2dFunction.apply(input, weight_t, None, *params))
        if bias_t is not None:
            bias_t = bias_t.reshape(1, -1, 1, 1)
            tangent = bias_t.expand(ctx.output_shape).clone() if tangent is None \
                else tangent + bias_t
        return tangent


class Conv2dBackwardInputFunction(_Conv2dBackwardInput):
    """conv2d_backward_input with backward and forward-mode derivatives."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        _Conv2dBackwardInput.setup_context(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1])

    @staticmethod
    def jvp(ctx, grad_output_t, weight_t, *_):
        _refuse_forward_over_forward()
        grad_output, weight = ctx.saved_tensors
        args = (ctx.input_size, *ctx.conv_params)
        tangent = None
        if grad_output_t is not None:
            tangent = Conv2dBackwardInputFunction.apply(grad_output_t, weight, *args)
        if weight_t is not None:
            tangent = _add(tangent, Conv2dBackwardInputFunction.apply(grad_output, weight_t, *args))
        return tangent


class Conv2dBackwardWeightFunction(_Conv2dBackwardWeight):
    """conv2d_backward_weight with backward and forward-mode derivatives."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        _Conv2dBackwardWeight.setup_context(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1])

    @staticmethod
    def jvp(ctx, grad_output_t, input_t, *_):
        _refuse_forward_over_forward()
        grad_output, input = ctx.saved_tensors
        args = (ctx.weight_size, *ctx.conv_params)
        tangent = None
        if grad_output_t is not None:
            tangent = Conv2dBackwardWeightFunction.apply(grad_output_t, input, *args)
        if input_t is not None:
            tangent = _add(tangent, Conv2dBackwardWeightFunction.apply(grad_output, input_t, *args))
        return tangent
