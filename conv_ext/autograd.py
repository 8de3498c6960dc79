"""Autograd over the conv_ext ops.

Three Functions, each the derivative of the others, so backward is itself
differentiable to any order (gradgradcheck, Hessian-vector products):

    y  = conv2d_forward(x, w) + b
    gx = conv2d_backward_input(gy, w)    (linear in gy and in w)
    gw = conv2d_backward_weight(gy, x)   (linear in gy and in x)
"""
import torch

__all__ = ["Conv2dFunction", "Conv2dBackwardInputFunction", "Conv2dBackwardWeightFunction"]

_ops = torch.ops.conv_ext


class Conv2dFunction(torch.autograd.Function):
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

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        params = ctx.conv_params
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = Conv2dBackwardInputFunction.apply(
                grad_output, weight, list(input.shape), *params)
        if ctx.needs_input_grad[1]:
            grad_weight = Conv2dBackwardWeightFunction.apply(
                grad_output, input, list(weight.shape), *params)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum((0, 2, 3))
        return grad_input, grad_weight, grad_bias, None, None, None, None


class Conv2dBackwardInputFunction(torch.autograd.Function):
    """grad_input = conv2d_backward_input(grad_output, weight)."""

    @staticmethod
    def forward(grad_output, weight, input_size, stride, padding, dilation, groups):
        return _ops.conv2d_backward_input(
            grad_output, weight, input_size, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, weight, input_size, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(grad_output, weight)
        ctx.conv_params = (stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_grad_input):
        grad_output, weight = ctx.saved_tensors
        params = ctx.conv_params
        d_grad_output = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad_output = Conv2dFunction.apply(grad_grad_input, weight, None, *params)
        if ctx.needs_input_grad[1]:
            d_weight = Conv2dBackwardWeightFunction.apply(
                grad_output, grad_grad_input, list(weight.shape), *params)
        return d_grad_output, d_weight, None, None, None, None, None


class Conv2dBackwardWeightFunction(torch.autograd.Function):
    """grad_weight = conv2d_backward_weight(grad_output, input)."""

    @staticmethod
    def forward(grad_output, input, weight_size, stride, padding, dilation, groups):
        return _ops.conv2d_backward_weight(
            grad_output, input, weight_size, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, input, weight_size, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(grad_output, input)
        ctx.conv_params = (stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_grad_weight):
        grad_output, input = ctx.saved_tensors
        params = ctx.conv_params
        d_grad_output = d_input = None
        if ctx.needs_input_grad[0]:
            d_grad_output = Conv2dFunction.apply(input, grad_grad_weight, None, *params)
        if ctx.needs_input_grad[1]:
            d_input = Conv2dBackwardInputFunction.apply(
                grad_output, grad_grad_weight, list(input.shape), *params)
        return d_grad_output, d_input, None, None, None, None, None
