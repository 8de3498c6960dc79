"""conv_ext benchmark: conv_ext's kernels against torch, layer by layer.

    python -m conv_ext.bench                                # ResNet-50 + MobileNet dw, forward, N=8
    python -m conv_ext.bench --suite resnet50 --pass train
    python -m conv_ext.bench --layer 64,56,64,3,1,1 --batch 1 --threads 1
    make bench BENCH_ARGS="--suite mobilenet --pass backward"

For every layer it times conv_ext, torch (oneDNN on CPU; cuDNN with TF32 off
on CUDA) and a second torch baseline (CPU: oneDNN disabled, i.e. PyTorch's
own kernels; CUDA: cuDNN with TF32 on, what users get by default), interleaved
round by round, best of several rounds; checks conv_ext's result against
torch's; and prints a table, then writes JSON and a PNG chart (see
docs/benchmark.md for the columns).
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import conv_ext
from conv_ext.layers import SUITES, parse_layer

__all__ = ["main", "measure_peak", "run_layer"]

PASSES = ("forward", "backward", "train")
# Work of a pass in units of the forward FLOPs: grad-input and grad-weight
# each cost as many multiply-adds as the forward.
PASS_FLOP_FACTOR = {"forward": 1, "backward": 2, "train": 3}
DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "bfloat16": torch.bfloat16, "float16": torch.float16}
# Error bound of the correctness column, relative to the largest |value| of
# torch's result (sums of C*R*S products in another order).
REL_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10,
                 torch.bfloat16: 3e-2, torch.float16: 5e-3}


class Progress:
    """A one-line progress bar on stderr (plain text, no dependency)."""

    def __init__(self, total, width=30, stream=sys.stderr):
        self.total, self.width, self.stream = total, width, stream
        self.start = time.monotonic()
        self.tty = stream.isatty()

    def update(self, done, label):
        filled = int(self.width * done / max(self.total, 1))
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                f"{elapsed:5.0f}s eta {eta:4.0f}s {label}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100)[:100])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self):
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()


def measure_peak(device, threads):
    """The machine's measured fp32 peak in GFLOP/s and how it was measured.
    CPU: conv_ext's FMA loop on `threads` threads. CUDA: an fp32 matmul with
    TF32 off (cuBLAS SGEMM), an achievable peak rather than the data sheet's."""
    if device == "cpu":
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            gflops = torch.ops.conv_ext_debug.fma_peak_cpu(20_000_000, 3)
        finally:
            torch.set_num_threads(previous)
        return gflops, f"FMA loop, {torch.ops.conv_ext_debug.simd_isa()} vectors, {threads} threads"
    n = 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    with _tf32(False):
        t = Timer("torch.mm(a, b)", globals={"a": a, "b": b, "torch": torch}).timeit(10).median
    return 2 * n ** 3 / t / 1e9, "fp32 SGEMM 8192^3, TF32 off"


class _tf32:
    """Context: torch's TF32 use for cuDNN convolutions and cuBLAS matmuls."""

    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = self.enabled
        torch.backends.cuda.matmul.allow_tf32 = self.enabled

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def _conv_args(layer):
    d = layer.dilation
    return dict(stride=[layer.stride] * 2, padding=[layer.padding] * 2,
                dilation=[d] * 2, groups=layer.groups)


def _make_functions(layer, x, w, grad_output, pass_):
    """(conv_ext function, torch function) computing the same tensors for `pass_`;
    each returns a tuple of result tensors."""
    a = _conv_args(layer)
    ops = torch.ops.conv_ext
    stride, padding, dilation, groups = a["stride"], a["padding"], a["dilation"], a["groups"]
    input_size, weight_size = list(x.shape), list(w.shape)

    def ours_forward():
        return (ops.conv2d_forward(x, w, None, stride, padding, dilation, groups),)

    def ours_backward():
        return (ops.conv2d_backward_input(grad_output, w, input_size, stride, padding, dilation, groups),
                ops.conv2d_backward_weight(grad_output, x, weight_size, stride, padding, dilation,
                                           groups))

    def ours_train():
        return ours_forward() + ours_backward()

    def torch_forward():
        return (F.conv2d(x, w, None, stride, padding, dilation, groups),)

    def torch_backward():
        # What autograd calls for F.conv2d's backward.
        gi, gw, _ = torch.ops.aten.convolution_backward(
            grad_output, x, w, None, stride, padding, dilation, False, [0, 0], groups,
            [True, True, False])
        return gi, gw

    def torch_train():
        return torch_forward() + torch_backward()

    table = {"forward": (ours_forward, torch_forward), "backward": (ours_backward, torch_backward),
             "train": (ours_train, torch_train)}
    return table[pass_]


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


def _time_interleaved(functions, threads, rounds, min_time):
    """Best seconds per call of each function: every round times each function
    once (in turn, so drifts in clock speed or load hit them alike)."""
    timers = [Timer("fn()", globals={"fn": fn}, num_threads=threads) for fn in functions]
    numbers = []
    for timer in timers:  # calibrate: calls per measurement >= min_time
        single = timer.timeit(1).median
        numbers.append(max(1, int(min_time / max(single, 1e-9))))
    best = [math.inf] * len(functions)
    for _ in range(rounds):
        for i, (timer, number) in enumerate(zip(timers, numbers)):
            best[i] = min(best[i], timer.timeit(number).median)
    return best


def run_layer(layer, *, batch, device, dtype, pass_, threads, rounds, min_time,
              channels_last=False, baseline2=True):
    """Times and checks one layer; returns a dict of results (a row of the table)."""
    torch.manual_seed(0)
    x = torch.randn(batch, layer.C, layer.H, layer.H, device=device, dtype=dtype)
    w = torch.randn(layer.K, layer.C // layer.groups, layer.R, layer.R, device=device, dtype=dtype)
    w /= math.sqrt(w[0].numel())
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    P = layer.out_size
    grad_output = torch.randn(batch, layer.K, P, P, device=device, dtype=dtype)
    if channels_last:
        grad_output = grad_output.contiguous(memory_format=torch.channels_last)
    ours, reference = _make_functions(layer, x, w, grad_output, pass_)
    flops = layer.flops(batch) * PASS_FLOP_FACTOR[pass_]
    row = dict(layer=layer.name, C=layer.C, H=layer.H, K=layer.K, R=layer.R, stride=layer.stride,
               padding=layer.padding, groups=layer.groups, dilation=layer.dilation,
               count=layer.count, gflop=flops / 1e9)
    if device == "cpu":
        second = _in_context(reference, lambda: torch.backends.mkldnn.flags(enabled=False))
        second_name = "torch_no_onednn"
        reference_in_context = reference
    else:
        reference_in_context = _in_context(reference, lambda: _tf32(False))
        second = _in_context(reference, lambda: _tf32(True))
        second_name = "torch_tf32"
    try:
        got = ours()
    except Exception as error:  # noqa: BLE001  (reported in the table, the run goes on)
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
        return row
    want = reference_in_context()
    abs_err, rel_err = _max_error(got, want)
    row.update(max_abs_error=abs_err, max_rel_error=rel_err,
               correct=bool(rel_err <= REL_TOLERANCE[dtype]))
    del got, want
    functions = [ours, reference_in_context] + ([second] if baseline2 else [])
    times = _time_interleaved(functions, threads, rounds, min_time)
    row["conv_ext_s"], row["torch_s"] = times[0], times[1]
    row["conv_ext_gflops"] = flops / times[0] / 1e9
    row["torch_gflops"] = flops / times[1] / 1e9
    row["ratio"] = times[1] / times[0]  # > 1: conv_ext is faster
    if baseline2:
        row[f"{second_name}_s"] = times[2]
        row[f"ratio_{second_name}"] = times[2] / times[0]
    return row


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summarize(rows):
    """Geomean of the ratios over the layers, and the network-weighted ratio
    (sum of count x torch time / sum of count x conv_ext time)."""
    ok = [r for r in rows if "ratio" in r]
    summary = dict(layers=len(rows), timed=len(ok),
                   geomean_ratio=geomean([r["ratio"] for r in ok]),
                   min_ratio=min((r["ratio"] for r in ok), default=float("nan")),
                   all_correct=all(r.get("correct", False) for r in rows))
    for key in ("ratio_torch_no_onednn", "ratio_torch_tf32"):
        if any(key in r for r in ok):
            summary[f"geomean_{key}"] = geomean([r.get(key) for r in ok])
    if ok:
        summary["weighted_ratio"] = (sum(r["count"] * r["torch_s"] for r in ok)
                                     / sum(r["count"] * r["conv_ext_s"] for r in ok))
    return summary


def format_table(rows, summary, peak, second_name):
    second_label = {"torch_no_onednn": "x noDNN", "torch_tf32": "x tf32"}[second_name]
    header = (f"{'layer':<16}{'C':>5}{'H':>5}{'K':>5}{'RxS/s':>7}{'GFLOP':>8}"
              f"{'ms':>9}{'GFLOP/s':>9}{'%peak':>7}{'torch ms':>10}{'GFLOP/s':>9}"
              f"{'x torch':>9}{second_label:>9}{'max err':>10}  ok")
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = f"{r['R']}x{r['R']}/{r['stride']}" + (f"g{r['groups']}" if r["groups"] > 1 else "")
        prefix = (f"{r['layer']:<16}{r['C']:>5}{r['H']:>5}{r['K']:>5}{shape:>7}"
                  f"{r['gflop']:>8.2f}")
        if "error" in r:
            lines.append(f"{prefix}  ERROR {r['error']}")
            continue
        second = r.get(f"ratio_{second_name}")
        lines.append(
            f"{prefix}{r['conv_ext_s'] * 1e3:>9.2f}{r['conv_ext_gflops']:>9.1f}"
            f"{100 * r['conv_ext_gflops'] / peak:>7.1f}{r['torch_s'] * 1e3:>10.2f}"
            f"{r['torch_gflops']:>9.1f}{r['ratio']:>9.2f}"
            f"{(f'{second:.2f}' if second else '-'):>9}{r['max_rel_error']:>10.1e}"
            f"  {'yes' if r['correct'] else 'NO'}")
    lines.append("-" * len(header))
    second = summary.get(f"geomean_ratio_{second_name}")
    lines.append(f"{'geomean':<54}{'':>34}{summary['geomean_ratio']:>9.2f}"
                 f"{(f'{second:.2f}' if second else '-'):>9}")
    lines.append(f"min ratio {summary['min_ratio']:.2f}   network-weighted ratio "
                 f"{summary.get('weighted_ratio', float('nan')):.2f}   all correct: "
                 f"{summary['all_correct']}")
    return "\n".join(lines)


def plot(rows, path, title):
    """Bar chart of GFLOP/s per layer (conv_ext vs the torch baselines) and,
    below, the ratio to torch with the 1.0 line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "ratio" in r]
    if not rows:
        return
    names = [r["layer"] for r in rows]
    xs = range(len(rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.45 * len(rows) + 2), 8), sharex=True)
    series = [("conv_ext", "conv_ext_gflops"), ("torch", "torch_gflops")]
    second = next((k for k in ("torch_no_onednn_s", "torch_tf32_s") if k in rows[0]), None)
    width = 0.8 / (len(series) + (second is not None))
    for i, (label, key) in enumerate(series):
        top.bar([x + i * width for x in xs], [r[key] for r in rows], width, label=label)
    if second:
        top.bar([x + len(series) * width for x in xs],
                [r["gflop"] / r[second] for r in rows], width, label=second[:-2].replace("_", " "))
    top.set_ylabel("GFLOP/s")
    top.set_title(title)
    top.legend()
    bottom.bar(list(xs), [r["ratio"] for r in rows], 0.6,
               color=["tab:green" if r["ratio"] >= 1 else "tab:red" for r in rows])
    bottom.axhline(1.0, color="black", linewidth=0.8)
    bottom.set_ylabel("speed vs torch (x)")
    bottom.set_xticks(list(xs))
    bottom.set_xticklabels(names, rotation=70, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m conv_ext.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="all", choices=sorted(SUITES) + ["none"],
                        help="layer set (default: all = resnet50 + mobilenet); 'none' with --layer")
    parser.add_argument("--layer", action="append", default=[], metavar="C,H,K,R[,s,p,g,d]",
                        help="a custom layer (repeatable): channels, size, filters, kernel, "
                             "stride, padding, groups, dilation")
    parser.add_argument("--only", default=None,
                        help="comma-separated substrings: keep layers whose name contains one")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"],
                        help="default: cuda where a GPU is visible and conv_ext has CUDA "
                             "kernels, else cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--pass", dest="pass_", default="forward", choices=PASSES,
                        help="forward; backward = grad-input + grad-weight; train = all three")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch.get_num_threads())")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds; the best counts")
    parser.add_argument("--min-time", type=float, default=0.05,
                        help="seconds per timed measurement (calls are repeated up to it)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC inputs for both")
    parser.add_argument("--no-baseline2", action="store_true",
                        help="skip the second torch baseline (oneDNN off / TF32 on)")
    parser.add_argument("--out", default=os.path.join("bench", "out"),
                        help="directory for the JSON and PNG (default bench/out, not committed; "
                             "bench/results holds the committed runs)")
    parser.add_argument("--tag", default=None, help="file name stem (default: derived from args)")
    parser.add_argument("--no-plot", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    layers = [] if args.suite == "none" else list(SUITES[args.suite])
    layers += [parse_layer(spec) for spec in args.layer]
    if args.only:
        keys = args.only.split(",")
        layers = [layer for layer in layers if any(k in layer.name for k in keys)]
    if not layers:
        sys.exit("no layers selected")
    if args.device is None:
        from . import built_with_cuda
        args.device = "cuda" if torch.cuda.is_available() and built_with_cuda() else "cpu"
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device visible")
        torch.backends.cudnn.benchmark = True
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    dtype = DTYPES[args.dtype]
    second_name = "torch_no_onednn" if args.device == "cpu" else "torch_tf32"

    print(f"measuring peak ({args.device}) ...", file=sys.stderr, flush=True)
    peak, peak_how = measure_peak(args.device, threads)
    device_name = (torch.cuda.get_device_name() if args.device == "cuda"
                   else platform.processor() or platform.machine())
    print(f"conv_ext {conv_ext.__version__} ({_git_commit()}), torch {torch.__version__}, "
          f"{args.device} {device_name}, {threads} threads, {args.dtype}, pass={args.pass_}, "
          f"N={args.batch}{', channels_last' if args.channels_last else ''}; "
          f"peak {peak:.0f} GFLOP/s ({peak_how})")

    progress = Progress(len(layers))
    rows = []
    for i, layer in enumerate(layers):
        progress.update(i, layer.name)
        rows.append(run_layer(layer, batch=args.batch, device=args.device, dtype=dtype,
                              pass_=args.pass_, threads=threads, rounds=args.rounds,
                              min_time=args.min_time, channels_last=args.channels_last,
                              baseline2=not args.no_baseline2))
    progress.update(len(layers), "done")
    progress.finish()
    for r in rows:
        if "conv_ext_gflops" in r:
            r["share_of_peak"] = r["conv_ext_gflops"] / peak
    summary = summarize(rows)
    print(format_table(rows, summary, peak, second_name))

    os.makedirs(args.out, exist_ok=True)
    tag = args.tag or (f"{args.device}_{args.suite if not args.layer else 'custom'}_{args.pass_}"
                       f"_N{args.batch}_{args.dtype}_t{threads}")
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                conv_ext_commit=_git_commit(), torch=torch.__version__, device=args.device,
                device_name=device_name, threads=threads, dtype=args.dtype, pass_=args.pass_,
                batch=args.batch, channels_last=args.channels_last, rounds=args.rounds,
                min_time=args.min_time, peak_gflops=peak, peak_method=peak_how,
                baseline="torch (oneDNN)" if args.device == "cpu" else "torch (cuDNN, TF32 off)",
                baseline2=second_name, argv=sys.argv[1:] if argv is None else list(argv))
    json_path = os.path.join(args.out, tag + ".json")
    with open(json_path, "w") as f:
        json.dump(dict(meta=meta, summary=summary, layers=rows), f, indent=1)
    print(f"wrote {json_path}")
    if not args.no_plot:
        png_path = os.path.join(args.out, tag + ".png")
        plot(rows, png_path, f"conv_ext vs torch: {args.device} {args.dtype} {args.pass_} "
                             f"N={args.batch}, {threads} threads (geomean "
                             f"{summary['geomean_ratio']:.2f}x)")
        print(f"wrote {png_path}")
    return 0 if summary["all_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
