"""conv_ext benchmark: conv_ext's kernels against torch, layer by layer or
whole torchvision models, ratios measured in the same run.

    python -m bench                                     # resnet50 + mobilenet, forward, N=8
    python -m bench --suite convnext,replknet --pass train
    python -m bench --suite all --batch 1               # every suite at N=1
    python -m bench --layer 64,56,64,3,1,1 --threads 1
    python -m bench --layer C=1,H=161,W=700,K=32,R=5,S=20,stride=2
    python -m bench --model resnet50,mobilenet_v2 --pass train
    python -m bench --device cuda --batch 32 --pass grad_input
(`python -m conv_ext.bench`, `python bench/run.py` and `make bench
BENCH_ARGS=...` run the same.) Suites, columns and baselines:
docs/benchmark.md.
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

import torch

from . import cases, models, per_layer, report, timing

__all__ = ["main", "parse_args"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=_ROOT, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _load():
    """The machine's load average, quoted with any figure (others' builds skew
    timings)."""
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:
        return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="default",
                        help=f"comma-separated layer sets: {', '.join(cases.SUITES)}; "
                             "default = resnet50,mobilenet; all; none (with --layer)")
    parser.add_argument("--layer", action="append", default=[], metavar="SPEC",
                        help="a custom layer (repeatable): C,H,K,R[,stride,padding,groups,"
                             "dilation], or key=value items (C,H,W,K,R,S,stride,padding,"
                             "dilation,groups; pairs as AxB)")
    parser.add_argument("--only", default=None,
                        help="comma-separated substrings: keep layers whose name contains one")
    parser.add_argument("--model", default=None,
                        help=f"whole-model mode: comma-separated torchvision models "
                             f"({', '.join(models.MODELS)}) or 'all'; needs torchvision")
    parser.add_argument("--variant", default="conv_ext",
                        help=f"whole-model mode: variants against torch eager "
                             f"({', '.join(models.VARIANTS)})")
    parser.add_argument("--image-size", type=int, default=224,
                        help="whole-model mode: input height and width")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"],
                        help="default: cuda where a GPU is visible and conv_ext has CUDA "
                             "kernels, else cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(per_layer.DTYPES))
    parser.add_argument("--pass", dest="pass_", default="forward",
                        choices=per_layer.PASSES + ("inference",),
                        help="layers: forward, grad_input, grad_weight, backward (both "
                             "gradients) or train (all three); models: inference (= forward) "
                             "or train (a training step)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch.get_num_threads())")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds; the best counts")
    parser.add_argument("--min-time", type=float, default=0.05,
                        help="CPU: seconds per timed measurement (calls repeated up to it)")
    parser.add_argument("--calls", type=int, default=20,
                        help="CUDA: calls per captured graph (timed by replaying it)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC inputs for both")
    parser.add_argument("--no-baseline2", action="store_true",
                        help="skip the second torch baseline (oneDNN off / TF32 on)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop starting new layers after this many seconds")
    parser.add_argument("--out", default=os.path.join("bench", "out"),
                        help="directory for the JSON and PNG (default bench/out, not committed; "
                             "bench/results holds the committed runs)")
    parser.add_argument("--tag", default=None, help="file name stem (default: derived from args)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.pass_ == "inference":
        args.pass_ = "forward"
    return args


def _device(args):
    if args.device is None:
        import conv_ext
        return "cuda" if torch.cuda.is_available() and conv_ext.built_with_cuda() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible")
    return args.device


def _meta(args, device, threads, peak=None, peak_how=None):
    import conv_ext
    device_name = (torch.cuda.get_device_name() if device == "cuda"
                   else platform.processor() or platform.machine())
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                conv_ext=conv_ext.__version__, conv_ext_commit=_git_commit(),
                torch=torch.__version__, device=device, device_name=device_name,
                threads=threads, load_average=_load(), dtype=args.dtype, pass_=args.pass_,
                batch=args.batch, channels_last=args.channels_last, rounds=args.rounds,
                argv=args.argv)
    if device == "cpu":
        meta["isa"] = timing.cpu_isa()
    else:
        from . import gpu_info
        meta.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    calls_per_graph=args.calls, kernel_registers=gpu_info.register_counts())
    if peak is not None:
        meta.update(peak_gflops=peak, peak_method=peak_how)
    return meta


def _headline(meta):
    text = (f"conv_ext {meta['conv_ext']} ({meta['conv_ext_commit']}), torch {meta['torch']}, "
            f"{meta['device']} {meta['device_name']}"
            f"{', ISA ' + meta['isa'] if 'isa' in meta else ''}, {meta['threads']} threads, "
            f"load {meta['load_average']}, {meta['dtype']}, pass={meta['pass_']}, "
            f"N={meta['batch']}{', channels_last' if meta['channels_last'] else ''}")
    if "peak_gflops" in meta:
        text += f"; peak {meta['peak_gflops']:.0f} GFLOP/s ({meta['peak_method']})"
    return text


def _run_models(args, device, threads):
    if not models.have_torchvision():
        print("whole-model mode skipped: torchvision is not installed "
              "(pip install torchvision, matching torch)")
        return 0
    names = list(models.MODELS) if args.model == "all" else args.model.split(",")
    variants = tuple(args.variant.split(","))
    for name in names + list(variants):
        if name not in models.MODELS and name not in models.VARIANTS:
            sys.exit(f"unknown model or variant {name!r}")
    pass_ = "train" if args.pass_ == "train" else "inference"
    meta = _meta(args, device, threads)
    meta.update(pass_=pass_, mode="models", variants=list(variants), image_size=args.image_size)
    print(_headline(meta))
    progress = report.Progress(len(names))
    rows = []
    for i, name in enumerate(names):
        progress.update(i, name)
        rows.append(models.run_model(name, batch=args.batch, device=device,
                                     dtype=per_layer.DTYPES[args.dtype], pass_=pass_,
                                     threads=threads, rounds=args.rounds,
                                     min_time=args.min_time, channels_last=args.channels_last,
                                     variants=variants, image_size=args.image_size))
    progress.update(len(names), "done")
    progress.finish()
    print(models.format_model_table(rows, variants))
    summary = dict(geomean_ratio=report.geomean([r["ratio"] for r in rows]),
                   all_correct=all(r["correct"] for r in rows))
    print(f"geomean x torch {summary['geomean_ratio']:.2f}   all correct: {summary['all_correct']}")
    os.makedirs(args.out, exist_ok=True)
    tag = args.tag or f"{device}_models_{pass_}_N{args.batch}_{args.dtype}_t{threads}"
    path = os.path.join(args.out, tag + ".json")
    report.write_json(path, meta, summary, rows)
    print(f"wrote {path}")
    return 0 if summary["all_correct"] else 1


def main(argv=None):
    args = parse_args(argv)
    device = _device(args)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if args.model:
        return _run_models(args, device, threads)

    try:
        selected = cases.select(args.suite)
    except ValueError as error:
        sys.exit(str(error))
    selected += [("custom", cases.parse_layer(spec)) for spec in args.layer]
    if args.only:
        keys = args.only.split(",")
        selected = [(s, layer) for s, layer in selected if any(k in layer.name for k in keys)]
    if not selected:
        sys.exit("no layers selected")
    dtype = per_layer.DTYPES[args.dtype]

    print(f"measuring peak ({device}) ...", file=sys.stderr, flush=True)
    peak, peak_how = timing.measure_peak(device, threads)
    meta = _meta(args, device, threads, peak, peak_how)
    meta["baselines"] = {b.key: b.label for b in per_layer.baselines(device, dtype)}
    print(_headline(meta))

    progress = report.Progress(len(selected))
    rows, start = [], time.monotonic()
    for i, (suite, layer) in enumerate(selected):
        if args.max_seconds is not None and time.monotonic() - start > args.max_seconds:
            print(f"time budget of {args.max_seconds:.0f}s reached: {len(selected) - i} "
                  "layers left out", file=sys.stderr)
            meta["stopped_early"] = True
            break
        progress.update(i, layer.name)
        rows.append(per_layer.run_layer(
            layer, batch=args.batch, device=device, dtype=dtype, pass_=args.pass_,
            threads=threads, rounds=args.rounds,
            min_time=args.min_time, calls=args.calls,
            channels_last=args.channels_last, baseline2=not args.no_baseline2, suite=suite,
            kernel_info=device == "cuda"))
    progress.update(len(rows), "done")
    progress.finish()
    for r in rows:
        if "conv_ext_gflops" in r:
            r["share_of_peak"] = r["conv_ext_gflops"] / peak
    summary = report.summarize(rows)
    print(report.format_table(rows, summary, peak))

    os.makedirs(args.out, exist_ok=True)
    suites = "custom" if args.suite == "none" else args.suite.replace(",", "+")
    tag = args.tag or (f"{device}_{suites}_{args.pass_}_N{args.batch}_{args.dtype}"
                       f"{'_cl' if args.channels_last else ''}_t{threads}")
    json_path = os.path.join(args.out, tag + ".json")
    report.write_json(json_path, meta, summary, rows)
    print(f"wrote {json_path}")
    if not args.no_plot:
        png_path = os.path.join(args.out, tag + ".png")
        report.plot(rows, png_path, f"conv_ext vs torch: {device} {args.dtype} {args.pass_} "
                                    f"N={args.batch}, {threads} threads (geomean "
                                    f"{summary['geomean_ratio']:.2f}x)")
        print(f"wrote {png_path}")
    return 0 if summary["all_correct"] else 1
