"""vmap rules for the three convolutions, written once for any callable with
the op's signature (the raw ops in ops.py, the autograd Functions in
autograd.py, which keeps the folded call differentiable).

The kernels know nothing of a vmapped dimension B, so each rule folds it into
a dimension the op already has:
  - only the tensor that carries the batch (input, grad_output) is vmapped:
    B goes into N, whose rows are independent;
  - otherwise B goes into the channels and the groups: B independent
    convolutions are one convolution with B times as many groups (input
    channels b*C + c, output channels b*K + k). A tensor that is not vmapped
    is expanded to B first.
Shape checks then run on the folded shapes, so an error raised under vmap
may name folded sizes. Each rule returns (output, 0): B first.
"""
__all__ = ["forward", "backward_input", "backward_weight"]


def _batch_first(t, bdim, batch_size):
    """`t` with the vmapped dimension first (expanded if it has none)."""
    if bdim is None:
        return t.unsqueeze(0).expand(batch_size, *t.shape)
    return t.movedim(bdim, 0)


def _into_channels(t):
    """(B, N, C, H, W) -> (N, B*C, H, W)."""
    b, n, c, h, w = t.shape
    return t.transpose(0, 1).reshape(n, b * c, h, w)


def _from_channels(t, batch_size):
    """(N, B*C, H, W) -> (B, N, C, H, W)."""
    n, bc, h, w = t.shape
    return t.reshape(n, batch_size, bc // batch_size, h, w).transpose(0, 1)


def _into_batch(t, bdim):
    """(..B.., N, ...) -> (B*N, ...)."""
    t = t.movedim(bdim, 0)
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def forward(conv, info, in_dims, input, weight, bias, stride, padding, dilation, groups):
    input_bdim, weight_bdim, bias_bdim = in_dims[:3]
    B = info.batch_size
    if weight_bdim is None and bias_bdim is None:
        out = conv(_into_batch(input, input_bdim), weight, bias, stride, padding, dilation, groups)
        return out.reshape(B, out.shape[0] // B, *out.shape[1:]), 0
    x = _into_channels(_batch_first(input, input_bdim, B))
    w = _batch_first(weight, weight_bdim, B)
    w = w.reshape(B * w.shape[1], *w.shape[2:])
    b = None if bias is None else _batch_first(bias, bias_bdim, B).reshape(-1)
    out = conv(x, w, b, stride, padding, dilation, groups * B)
    return _from_channels(out, B), 0


def backward_input(conv_backward_input, info, in_dims, grad_output, weight, input_size, stride,
                   padding, dilation, groups):
    grad_output_bdim, weight_bdim = in_dims[:2]
    B = info.batch_size
    n, c, h, w = input_size
    if weight_bdim is None:
        out = conv_backward_input(_into_batch(grad_output, grad_output_bdim), weight,
                                  [B * n, c, h, w], stride, padding, dilation, groups)
        return out.reshape(B, n, *out.shape[1:]), 0
    gy = _into_channels(_batch_first(grad_output, grad_output_bdim, B))
    wt = _batch_first(weight, weight_bdim, B)
    wt = wt.reshape(B * wt.shape[1], *wt.shape[2:])
    out = conv_backward_input(gy, wt, [n, B * c, h, w], stride, padding, dilation, groups * B)
    return _from_channels(out, B), 0


def backward_weight(conv_backward_weight, info, in_dims, grad_output, input, weight_size, stride,
                    padding, dilation, groups):
    grad_output_bdim, input_bdim = in_dims[:2]
    B = info.batch_size
    gy = _into_channels(_batch_first(grad_output, grad_output_bdim, B))
    x = _into_channels(_batch_first(input, input_bdim, B))
    k = weight_size[0]
    out = conv_backward_weight(gy, x, [B * k, *weight_size[1:]], stride, padding, dilation,
                               groups * B)
    return out.reshape(B, k, *out.shape[1:]), 0
