"""One layer, one pass: conv_ext's op against torch's on the same fresh
random tensors; the result checked, then both timed (see timing.py).

Baselines per device:
- CPU: torch as it runs (oneDNN for almost every shape) and, second, torch
  with oneDNN disabled (PyTorch's own kernels). conv_ext is timed once.
- CUDA, float32: torch with TF32 off (the exact comparison) and with TF32 on
  (torch's default); conv_ext is timed under each flag, since it reads it.
- CUDA, other dtypes: torch only.
Each row names the backend torch chose (torch._C._select_conv_backend: e.g.
Mkldnn, Cudnn, CudaDepthwise2d, Slow2d), so a row says which baseline it beat.
"""
import contextlib
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import gpu_info, timing

__all__ = ["PASSES", "PASS_FLOP_FACTOR", "DTYPES", "run_layer", "baselines"]

# grad_input / grad_weight alone; backward = both; train = all three.
PASSES = ("forward", "grad_input", "grad_weight", "backward", "train")
# Work of a pass in units of the forward FLOPs: grad-input and grad-weight
# each cost as many multiply-adds as the forward.
PASS_FLOP_FACTOR = {"forward": 1, "grad_input": 1, "grad_weight": 1, "backward": 2, "train": 3}
DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "bfloat16": torch.bfloat16, "float16": torch.float16}
# Error bound of the correctness column, relative to the largest |value| of
# torch's result (sums of C*R*S products in another order).
REL_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10,
                 torch.bfloat16: 3e-2, torch.float16: 5e-3}


@dataclass(frozen=True)
class Baseline:
    key: str                  # row keys: f"{key}_s", f"ratio_{key}" (primary: torch_s, ratio)
    label: str                # table column
    context: object           # () -> context manager the torch call runs in
    times_conv_ext: bool      # the context changes conv_ext's choice too: time it under it


def _onednn_off():
    return torch.backends.mkldnn.flags(enabled=False)


# mkldnn.flags() sets oneDNN's TF32 flag too, and torch warns that it is for Intel GPUs.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


def baselines(device, dtype):
    """The torch baselines of a run, primary first."""
    if device == "cpu":
        return [Baseline("torch", "torch", contextlib.nullcontext, False),
                Baseline("torch_no_onednn", "x noDNN", _onednn_off, False)]
    if dtype == torch.float32:
        return [Baseline("torch", "torch", lambda: timing.tf32(False), True),
                Baseline("torch_tf32", "x tf32", lambda: timing.tf32(True), True)]
    return [Baseline("torch", "torch", contextlib.nullcontext, False)]


def _pass_functions(layer, x, w, grad_output, pass_):
    """(conv_ext function, torch function) computing the same tensors for
    `pass_`; each returns a tuple of result tensors."""
    a = layer.conv_args()
    stride, padding, dilation, groups = a["stride"], a["padding"], a["dilation"], a["groups"]
    ops = torch.ops.conv_ext
    want = {"forward": (True, False, False), "grad_input": (False, True, False),
            "grad_weight": (False, False, True), "backward": (False, True, True),
            "train": (True, True, True)}[pass_]

    def ours():
        out = ()
        if want[0]:
            out += (ops.conv2d_forward(x, w, None, stride, padding, dilation, groups),)
        if want[1]:
            out += (ops.conv2d_backward_input(grad_output, w, list(x.shape), stride, padding,
                                              dilation, groups),)
        if want[2]:
            out += (ops.conv2d_backward_weight(grad_output, x, list(w.shape), stride, padding,
                                               dilation, groups),)
        return out

    def theirs():
        out = ()
        if want[0]:
            out += (F.conv2d(x, w, None, stride, padding, dilation, groups),)
        if want[1] or want[2]:
            # What autograd calls for F.conv2d's backward.
            gi, gw, _ = torch.ops.aten.convolution_backward(
                grad_output, x, w, None, stride, padding, dilation, False, [0, 0], groups,
                [want[1], want[2], False])
            out += tuple(t for t in (gi, gw) if t is not None)
        return out

    return ours, theirs


def _in_context(fn, make_context):
    def wrapped():
        with make_context():
            return fn()
    return wrapped


def _max_error(got, want):
    """(max |got - want|, that relative to max |want|) over all result tensors."""
    abs_err, scale = 0.0, 0.0
    for g, e in zip(got, want):
        abs_err = max(abs_err, (g.double() - e.double()).abs().max().item())
        scale = max(scale, e.double().abs().max().item())
    return abs_err, abs_err / scale if scale > 0 else abs_err


def _torch_backend(layer, x, w, make_context):
    """The convolution backend torch picks for this call (private API: None
    where this torch lacks it)."""
    a = layer.conv_args()
    try:
        with make_context():
            backend = torch._C._select_conv_backend(x, w, None, a["stride"], a["padding"],
                                                    a["dilation"], False, [0, 0], a["groups"],
                                                    None)
    except (AttributeError, RuntimeError, TypeError):
        return None
    return str(backend).rsplit(".", 1)[-1]


def run_layer(layer, *, batch, device, dtype, pass_, threads=None, rounds=5, min_time=0.05,
              calls=20, channels_last=False, baseline2=True, suite=None, kernel_info=False):
    """Checks and times one layer; returns a dict of results (a row of the table)."""
    torch.manual_seed(0)
    x = torch.randn(layer.input_shape(batch), device=device, dtype=dtype)
    w = torch.randn(layer.weight_shape(), device=device, dtype=dtype)
    w /= math.sqrt(w[0].numel())
    grad_output = torch.randn(layer.output_shape(batch), device=device, dtype=dtype)
    if channels_last:
        x, w, grad_output = (t.contiguous(memory_format=torch.channels_last)
                             for t in (x, w, grad_output))
    ours, theirs = _pass_functions(layer, x, w, grad_output, pass_)
    flops = layer.flops(batch) * PASS_FLOP_FACTOR[pass_]
    row = dict(suite=suite, layer=layer.name, C=layer.C, H=layer.H, W=layer.W, K=layer.K,
               R=layer.R, S=layer.S, stride=list(layer.stride), padding=list(layer.padding),
               dilation=list(layer.dilation), groups=layer.groups, filter=layer.describe(),
               count=layer.count, gflop=flops / 1e9)
    chosen = baselines(device, dtype)[:None if baseline2 else 1]
    primary = chosen[0]
    for baseline in chosen:
        row[f"{baseline.key}_backend"] = _torch_backend(layer, x, w, baseline.context)
    try:
        got = _in_context(ours, primary.context)()
    except Exception as error:  # noqa: BLE001  (reported in the table, the run goes on)
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
        return row
    want = _in_context(theirs, primary.context)()
    abs_err, rel_err = _max_error(got, want)
    row.update(max_abs_error=abs_err, max_rel_error=rel_err,
               correct=bool(rel_err <= REL_TOLERANCE[dtype]))
    del got, want

    # The functions to time, in order, and where each time goes in the row.
    functions, keys = [], []
    for baseline in chosen:
        if baseline is primary or baseline.times_conv_ext:
            functions.append(_in_context(ours, baseline.context))
            keys.append("conv_ext_s" if baseline is primary else f"conv_ext_{baseline.key}_s")
        functions.append(_in_context(theirs, baseline.context))
        keys.append(f"{baseline.key}_s")
    times, row["timing"] = timing.time_interleaved(functions, device=device, threads=threads,
                                                   rounds=rounds, min_time=min_time,
                                                   calls=calls)
    row.update(zip(keys, times))
    row["conv_ext_gflops"] = flops / row["conv_ext_s"] / 1e9
    row["torch_gflops"] = flops / row["torch_s"] / 1e9
    row["ratio"] = row["torch_s"] / row["conv_ext_s"]  # > 1: conv_ext is faster
    for baseline in chosen[1:]:
        ours_s = row.get(f"conv_ext_{baseline.key}_s", row["conv_ext_s"])
        row[f"ratio_{baseline.key}"] = row[f"{baseline.key}_s"] / ours_s
    if kernel_info and device == "cuda":
        row["conv_ext_kernels"] = gpu_info.kernel_names(_in_context(ours, primary.context))
        row["torch_kernels"] = gpu_info.kernel_names(_in_context(theirs, primary.context))
        row["registers"] = gpu_info.registers_of(row["conv_ext_kernels"])
    return row
