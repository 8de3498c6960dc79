"""Timing: best seconds per call of several functions measured in turn, and
the machine's measured fp32 peak.

CPU: torch.utils.benchmark.Timer, functions interleaved round by round (so
drifts in clock speed or load hit them alike), best round. CUDA: kernels, not
Python dispatch: each function's calls are captured once in a CUDA graph of
`calls` launches, and the graphs are replayed in turn, timed by CUDA events.
"""
import contextlib
import math

import torch
from torch.utils.benchmark import Timer

__all__ = ["time_interleaved", "measure_peak", "cpu_isa"]


def _debug_op(name):
    """conv_ext's debug/benchmark op `name`: one place that knows where those
    live (the conv_ext op namespace today; a debug namespace or module later)."""
    import conv_ext
    for owner in (getattr(conv_ext, "debug", None), getattr(torch.ops, "conv_ext_debug", None),
                  torch.ops.conv_ext):
        function = getattr(owner, name, None) if owner is not None else None
        if function is not None:
            return function
    raise AttributeError(f"conv_ext has no debug op {name!r}")


def cpu_isa():
    """The SIMD ISA conv_ext's CPU kernels run with (e.g. 'avx512', 'avx2')."""
    return str(_debug_op("simd_isa")())


def measure_peak(device, threads):
    """The machine's measured fp32 peak in GFLOP/s and how it was measured.
    CPU: conv_ext's FMA loop on `threads` threads. CUDA: an fp32 matmul with
    TF32 off (cuBLAS SGEMM), an achievable peak rather than the data sheet's."""
    if device == "cpu":
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            gflops = _debug_op("fma_peak_cpu")(20_000_000, 3)
        finally:
            torch.set_num_threads(previous)
        return gflops, f"FMA loop, {cpu_isa()} vectors, {threads} threads"
    n = 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    with tf32(False):
        seconds = _time_cuda_graphs([lambda: torch.mm(a, b)], calls=5, rounds=3)[0]
    return 2 * n ** 3 / seconds / 1e9, "fp32 SGEMM 8192^3, TF32 off"


@contextlib.contextmanager
def tf32(enabled):
    """torch's TF32 use for cuDNN convolutions and cuBLAS matmuls (and what
    conv_ext reads to choose TF32 for float32)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)

    def set_flags(cudnn, matmul):
        # Allowed even after torch.testing's disable_global_flags() froze them.
        with getattr(torch.backends, "__allow_nonbracketed_mutation")():
            torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul
    set_flags(enabled, enabled)
    try:
        yield
    finally:
        set_flags(*saved)


def time_interleaved(functions, *, device, threads=None, rounds=5, min_time=0.05, calls=20,
                     graph=True):
    """Best seconds per call of each function (a list of zero-argument
    callables), measured in turn round by round. Returns (seconds list, how).
    graph=False on CUDA: events around `calls` back-to-back calls (for what
    cannot be captured, e.g. a training step; includes dispatch where the GPU
    waits for it)."""
    if device == "cuda" and not graph:
        return _time_cuda_events(functions, calls, rounds), f"CUDA events over {calls} calls"
    if device == "cuda":
        try:
            return _time_cuda_graphs(functions, calls, rounds), f"CUDA graph of {calls} calls"
        except RuntimeError as error:  # capture refused: time launches instead
            return (_time_cuda_events(functions, calls, rounds),
                    f"CUDA events over {calls} calls (graph capture failed: "
                    f"{str(error).splitlines()[0][:80]})")
    return _time_cpu(functions, threads, rounds, min_time), "best round, interleaved"


def _time_cpu(functions, threads, rounds, min_time):
    timers = [Timer("fn()", globals={"fn": fn}, num_threads=threads or torch.get_num_threads())
              for fn in functions]
    numbers = []
    for timer in timers:  # calibrate: calls per measurement >= min_time
        single = timer.timeit(1).median
        numbers.append(max(1, int(min_time / max(single, 1e-9))))
    best = [math.inf] * len(functions)
    for _ in range(rounds):
        for i, (timer, number) in enumerate(zip(timers, numbers)):
            best[i] = min(best[i], timer.timeit(number).median)
    return best


def _warm_up(fn, times=3):
    # On a side stream, as torch's CUDA graph notes ask (cuDNN's benchmark mode
    # autotunes on the first calls, which must not happen during capture).
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(times):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()


def _time_cuda_graphs(functions, calls, rounds):
    graphs = []
    for fn in functions:
        _warm_up(fn)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graphs.append(graph)
    try:
        return _best_of_rounds([graph.replay for graph in graphs], rounds, calls)
    finally:
        for graph in graphs:  # free each graph's memory pool now, not at garbage collection
            graph.reset()


def _time_cuda_events(functions, calls, rounds):
    for fn in functions:
        _warm_up(fn)

    def repeated(fn):
        def run():
            for _ in range(calls):
                fn()
        return run
    return _best_of_rounds([repeated(fn) for fn in functions], rounds, calls)


def _best_of_rounds(runs, rounds, calls):
    best = [math.inf] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            best[i] = min(best[i], start.elapsed_time(end) / 1e3 / calls)
    return best
