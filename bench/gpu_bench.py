"""GPU benchmark: conv_ext's CUDA kernels against cuDNN (through F.conv2d,
torch.backends.cudnn.benchmark=True) per layer, as ratios measured in the
same run.

Configurations (measured in priority order within a time budget): float32 with TF32 off (the fair comparison for conv_ext's
CUDA-core kernels) and on (what users get by default), NCHW and
channels_last; bfloat16 NCHW and channels_last. Passes: forward for every
configuration; grad-input and grad-weight for float32 NCHW and bfloat16
NCHW. Timing: CUDA events around each call, warm-up first, median of
several repetitions; conv_ext and cuDNN interleaved layer by layer.

    python3 bench/gpu_bench.py --suite all --batch 32 --out bench/results
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import conv_ext  # noqa: E402
from conv_ext.layers import MOBILENET_DW, RESNET50, ConvLayer, parse_layer  # noqa: E402

# EfficientNet-B0's 5x5 depthwise layers (C, H, stride), for the large-kernel
# depthwise case.
EFFICIENTNET_DW5 = [ConvLayer(f"dw5_{C}x{H}_s{s}", C, H, C, 5, s, 2, C)
                    for C, H, s in [(144, 56, 2), (240, 28, 1), (480, 14, 1), (672, 14, 1),
                                    (672, 14, 2), (1152, 7, 1)]]
SUITES = {"resnet50": RESNET50, "mobilenet": MOBILENET_DW, "depthwise5": EFFICIENTNET_DW5,
          "all": RESNET50 + MOBILENET_DW + EFFICIENTNET_DW5}

_ops = torch.ops.conv_ext


def time_cuda(fn, warmup, reps):
    """Median milliseconds of fn() by CUDA events (each call timed alone)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _callables(layer, n, dtype, memory_format, pass_name):
    """(conv_ext fn, torch fn, check fn) for one layer and pass."""
    P = layer.out_size
    g = layer.groups
    params = ([layer.stride], [layer.padding], [layer.dilation], g)
    x = torch.randn(n, layer.C, layer.H, layer.H, device="cuda", dtype=dtype)
    w = torch.randn(layer.K, layer.C // g, layer.R, layer.R, device="cuda", dtype=dtype)
    gy = torch.randn(n, layer.K, P, P, device="cuda", dtype=dtype)
    x, w, gy = (t.contiguous(memory_format=memory_format) for t in (x, w, gy))
    args = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=g)
    if pass_name == "forward":
        ours = lambda: _ops.conv2d_forward(x, w, None, *params)  # noqa: E731
        theirs = lambda: F.conv2d(x, w, None, **args)  # noqa: E731
    elif pass_name == "grad_input":
        ours = lambda: _ops.conv2d_backward_input(gy, w, list(x.shape), *params)  # noqa: E731
        theirs = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
            gy, x, w, None, [layer.stride] * 2, [layer.padding] * 2, [layer.dilation] * 2,
            False, [0, 0], g, [True, False, False])[0]
    else:
        ours = lambda: _ops.conv2d_backward_weight(gy, x, list(w.shape), *params)  # noqa: E731
        theirs = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
            gy, x, w, None, [layer.stride] * 2, [layer.padding] * 2, [layer.dilation] * 2,
            False, [0, 0], g, [False, True, False])[1]

    def check():
        # Relative error against cuDNN in float64 (TF32 off), on these inputs.
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            if pass_name == "forward":
                ref = F.conv2d(x.double(), w.double(), None, **args)
            else:
                ref = torch.ops.aten.convolution_backward(
                    gy.double(), x.double(), w.double(), None, [layer.stride] * 2,
                    [layer.padding] * 2, [layer.dilation] * 2, False, [0, 0], g,
                    [pass_name == "grad_input", pass_name == "grad_weight", False])
                ref = ref[0] if pass_name == "grad_input" else ref[1]
        got = ours().double()
        return ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()

    return ours, theirs, check


# (name, dtype, memory format, TF32 for cuDNN, pass), in priority order: the
# run has a time budget and measures the most important comparisons first.
_FP32, _BF16, _NCHW, _NHWC = torch.float32, torch.bfloat16, torch.contiguous_format, torch.channels_last
MEASUREMENTS = [
    ("fp32_nchw_tf32off", _FP32, _NCHW, False, "forward"),
    ("fp32_nchw_tf32on", _FP32, _NCHW, True, "forward"),
    ("bf16_nchw", _BF16, _NCHW, False, "forward"),
    ("fp32_nchw_tf32off", _FP32, _NCHW, False, "grad_input"),
    ("fp32_nchw_tf32off", _FP32, _NCHW, False, "grad_weight"),
    ("fp32_nhwc_tf32off", _FP32, _NHWC, False, "forward"),
    ("fp32_nhwc_tf32on", _FP32, _NHWC, True, "forward"),
    ("bf16_nhwc", _BF16, _NHWC, False, "forward"),
    ("bf16_nchw", _BF16, _NCHW, False, "grad_input"),
    ("bf16_nchw", _BF16, _NCHW, False, "grad_weight"),
]
# Relative-error bounds of the per-layer check (vs float64).
CHECK_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def geomean(values):
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="all", choices=sorted(SUITES))
    parser.add_argument("--layer", action="append", default=[], help="C,H,K,R[,stride[,padding[,groups[,dilation]]]]")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--configs", default=",".join(dict.fromkeys(m[0] for m in MEASUREMENTS)))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=240, help="stop adding layers after this")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_bench: no CUDA GPU visible")
    if not conv_ext.built_with_cuda():
        sys.exit("gpu_bench: conv_ext was built without CUDA")
    layers = [parse_layer(s) for s in args.layer] or SUITES[args.suite]
    wanted = args.configs.split(",")
    measurements = [m for m in MEASUREMENTS if m[0] in wanted]
    torch.backends.cudnn.benchmark = True
    device = torch.cuda.get_device_name()
    meta = dict(device=device, torch=torch.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(), python=platform.python_version(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                batch=args.batch, warmup=args.warmup, reps=args.reps, timing="CUDA events, median")
    rows = []
    start = time.time()
    stopped_early = False
    for cname, dtype, fmt, tf32, pass_name in measurements:
        for layer in layers:
            if time.time() - start > args.max_seconds:
                stopped_early = True
                break
            torch.cuda.empty_cache()
            try:
                ours, theirs, check = _callables(layer, args.batch, dtype, fmt, pass_name)
                err = check()
                with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=tf32):
                    # Interleaved: ours, cuDNN, ours, cuDNN; the better median of each.
                    t1 = time_cuda(ours, args.warmup, args.reps)
                    t2 = time_cuda(theirs, args.warmup, args.reps)
                    t3 = time_cuda(ours, 1, args.reps)
                    t4 = time_cuda(theirs, 1, args.reps)
                t_ours, t_torch = min(t1, t3), min(t2, t4)
                flops = layer.flops(args.batch)
                row = dict(layer=layer.name, C=layer.C, H=layer.H, K=layer.K, R=layer.R,
                           stride=layer.stride, padding=layer.padding, groups=layer.groups,
                           config=cname, dtype=str(dtype).replace("torch.", ""),
                           pass_=pass_name, ms_conv_ext=t_ours, ms_cudnn=t_torch,
                           tflops_conv_ext=flops / t_ours / 1e9, tflops_cudnn=flops / t_torch / 1e9,
                           speedup=t_torch / t_ours, rel_error=err,
                           correct=bool(err <= CHECK_TOL[dtype]))
            except Exception as e:  # a failing layer is a result, not a crash of the run
                row = dict(layer=layer.name, config=cname, pass_=pass_name, error=repr(e)[:300])
            rows.append(row)
            if "error" in row:
                print(f"{layer.name:18s} {cname:18s} {pass_name:11s} ERROR {row['error']}", flush=True)
            else:
                print(f"{layer.name:18s} {cname:18s} {pass_name:11s} ours {row['ms_conv_ext']:8.3f} ms "
                      f"cudnn {row['ms_cudnn']:8.3f} ms  x{row['speedup']:.2f}  "
                      f"{row['tflops_conv_ext']:6.1f} TFLOP/s  err {row['rel_error']:.1e}"
                      f"{'' if row['correct'] else '  WRONG'}", flush=True)
    if stopped_early:
        print(f"# time budget of {args.max_seconds}s reached: later measurements skipped", file=sys.stderr)
    # Summary: geomean speedup (cuDNN time / ours) per suite, config and pass.
    groups = {}
    for row in rows:
        if "error" in row:
            continue
        suite = ("resnet50" if row["layer"].startswith("r50") else
                 "depthwise5" if row["layer"].startswith("dw5") else
                 "mobilenet" if row["layer"].startswith("dw_") else "custom")
        groups.setdefault((suite, row["config"], row["pass_"]), []).append(row["speedup"])
    summary = [dict(suite=s, config=c, pass_=p, layers=len(v), geomean_speedup=geomean(v),
                    min_speedup=min(v), max_speedup=max(v)) for (s, c, p), v in sorted(groups.items())]
    os.makedirs(args.out, exist_ok=True)
    tag = device.replace(" ", "_").replace("/", "_")
    path = os.path.join(args.out, f"gpu_bench_{tag}.json")
    with open(path, "w") as f:
        json.dump(dict(meta=meta, stopped_early=stopped_early, summary=summary, rows=rows), f, indent=1)
    print(f"\n{device}, torch {torch.__version__}, CUDA {torch.version.cuda}, batch {args.batch}")
    print("speedup = cuDNN time / conv_ext time (>1: conv_ext faster)")
    print(f"{'suite':11s} {'config':18s} {'pass':11s} {'n':>3s} {'geomean':>8s} {'min':>6s} {'max':>6s}")
    for s in summary:
        print(f"{s['suite']:11s} {s['config']:18s} {s['pass_']:11s} {s['layers']:3d} "
              f"{s['geomean_speedup']:8.2f} {s['min_speedup']:6.2f} {s['max_speedup']:6.2f}")
    wrong = [r for r in rows if "error" in r or not r.get("correct", False)]
    print(f"results: {path}; {len(rows)} measurements, {len(wrong)} wrong or failed")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
