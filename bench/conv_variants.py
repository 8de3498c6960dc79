"""Benchmark of conv_ext's transposed and 1-D convolutions against torch.

    python -m bench.conv_variants                       # both suites, forward
    python -m bench.conv_variants --suite conv1d --pass train --threads 2
    python -m bench.conv_variants --json out.json

Suites:
  transposed  U-Net / pix2pix decoder layers: ConvTranspose2d 2x2 and 4x4,
              stride 2, 64-512 channels (issue 12's target: >= 1.0x torch).
  conv1d      the depthwise causal conv1d of Mamba-style blocks (kernel 4,
              padding 3, groups = C; target >= 2x torch) and wav2vec-style
              dense front-end layers.

conv_ext and torch are timed interleaved, round by round (best round of
each), so a loaded machine slows both alike; the ratio column is
torch time / conv_ext time (above 1: conv_ext is faster). Each result is
checked against torch's. (Standalone beside the conv2d harness of
bench/cli.py, whose layers are conv2d-only; its timing rule is the same.)
"""
import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

import conv_ext


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str          # "conv_transpose2d" or "conv1d"
    C: int
    K: int
    size: int          # H = W (2-D) or L (1-D)
    kernel: int
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    groups: int = 1
    batch: int = 1


TRANSPOSED = [
    Layer("unet_up_512_2x2", "conv_transpose2d", 512, 256, 32, 2, 2, batch=2),
    Layer("unet_up_256_2x2", "conv_transpose2d", 256, 128, 64, 2, 2, batch=2),
    Layer("unet_up_128_2x2", "conv_transpose2d", 128, 64, 128, 2, 2, batch=2),
    Layer("pix2pix_up_512_4x4", "conv_transpose2d", 512, 256, 16, 4, 2, 1, batch=2),
    Layer("pix2pix_up_256_4x4", "conv_transpose2d", 256, 128, 32, 4, 2, 1, batch=2),
    Layer("pix2pix_up_128_4x4", "conv_transpose2d", 128, 64, 64, 4, 2, 1, batch=2),
]
CONV1D = [
    *[Layer(f"dw_causal_C{c}_L{n}", "conv1d", c, c, n, 4, 1, 3, groups=c)
      for c, n in ((1024, 2048), (1024, 4096), (1024, 8192), (2048, 4096), (4096, 2048))],
    Layer("wav2vec_conv0", "conv1d", 1, 512, 16000, 10, 5),
    Layer("wav2vec_conv1", "conv1d", 512, 512, 3199, 3, 2),
    Layer("tcn_64_k3_L16k", "conv1d", 64, 64, 16384, 3, 1, 1),
]
SUITES = {"transposed": TRANSPOSED, "conv1d": CONV1D, "all": TRANSPOSED + CONV1D}


def _tensors(layer, dtype):
    if layer.kind == "conv_transpose2d":
        x = torch.randn(layer.batch, layer.C, layer.size, layer.size, dtype=dtype)
        w = torch.randn(layer.C, layer.K // layer.groups, layer.kernel, layer.kernel, dtype=dtype)
        kwargs = dict(stride=layer.stride, padding=layer.padding,
                      output_padding=layer.output_padding, groups=layer.groups)
        return x, w, kwargs, conv_ext.conv_transpose2d, F.conv_transpose2d
    x = torch.randn(layer.batch, layer.C, layer.size, dtype=dtype)
    w = torch.randn(layer.K, layer.C // layer.groups, layer.kernel, dtype=dtype)
    kwargs = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)
    return x, w, kwargs, conv_ext.conv1d, F.conv1d


def _step(fn, x, w, kwargs, pass_, grad_output):
    if pass_ == "forward":
        with torch.no_grad():
            return lambda: fn(x, w, **kwargs)
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()

    def train():
        y = fn(xr, wr, **kwargs)
        return torch.autograd.grad(y, (xr, wr), grad_output)
    return train


def _best_times(functions, rounds, min_time):
    """Interleaved: each round times every function once (repeating a call
    until min_time has passed), keeping each function's best round."""
    best = [float("inf")] * len(functions)
    for f in functions:
        f()  # warm-up
    for _ in range(rounds):
        for i, f in enumerate(functions):
            calls, start = 0, time.perf_counter()
            while True:
                f()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            best[i] = min(best[i], elapsed / calls)
    return best


def run_layer(layer, pass_, dtype, rounds, min_time):
    x, w, kwargs, ours, theirs = _tensors(layer, dtype)
    with torch.no_grad():
        expected = theirs(x, w, **kwargs)
        got = ours(x, w, **kwargs)
    error = ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()
    grad_output = torch.randn_like(expected)
    t_ours, t_torch = _best_times(
        [_step(ours, x, w, kwargs, pass_, grad_output),
         _step(theirs, x, w, kwargs, pass_, grad_output)], rounds, min_time)
    return dict(layer=asdict(layer), pass_=pass_, ours_ms=t_ours * 1e3, torch_ms=t_torch * 1e3,
                ratio=t_torch / t_ours, max_rel_error=error, correct=error < 1e-4)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="all")
    parser.add_argument("--pass", dest="pass_", choices=("forward", "train"), default="forward")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.2)
    parser.add_argument("--only", default="", help="substring of the layer names to run")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'layer':26s} {'conv_ext ms':>11s} {'torch ms':>9s} {'ratio':>6s}  ok")
    for layer in SUITES[args.suite]:
        if args.only not in layer.name:
            continue
        row = run_layer(layer, args.pass_, torch.float32, args.rounds, args.min_time)
        rows.append(row)
        print(f"{layer.name:26s} {row['ours_ms']:11.3f} {row['torch_ms']:9.3f} "
              f"{row['ratio']:6.2f}  {'yes' if row['correct'] else 'NO'}", flush=True)
    if args.json:
        meta = dict(threads=args.threads, pass_=args.pass_, torch=torch.__version__,
                    machine=platform.processor() or platform.machine(),
                    load=os.getloadavg(), time=time.strftime("%Y-%m-%d %H:%M:%S"))
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
