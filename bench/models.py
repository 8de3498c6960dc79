"""Whole-model mode: torchvision architectures with random weights (nothing is
downloaded), N x 3 x 224 x 224, an inference call or a training step, timed
against torch eager in the same run, with the peak memory of each.

Each variant is a function of a deep copy of the torch model returning the
model to run: conv_ext (conv_ext.convert), conv_ext_fused (conv_ext.fuse of
the converted eval model: inference only) and torch_compile (torch.compile
of the original, default inductor settings; the first call compiles, outside
the timing).
"""
import copy
import ctypes
import gc
import re

import torch

from . import timing

__all__ = ["MODELS", "VARIANTS", "have_torchvision", "run_model"]

MODELS = ("resnet50", "resnet18", "mobilenet_v2", "efficientnet_b0", "regnet_y_400mf",
          "resnext50_32x4d", "convnext_tiny")


def _conv_ext_convert(model):
    import conv_ext
    return conv_ext.convert(model)


def _conv_ext_fused(model):
    import conv_ext
    return conv_ext.fuse(conv_ext.convert(model.eval()), inplace=True)


def _torch_compile(model):
    return torch.compile(model)


VARIANTS = {"conv_ext": _conv_ext_convert, "conv_ext_fused": _conv_ext_fused,
            "torch_compile": _torch_compile}
# Variants that only compute inference (fuse folds BatchNorm's running statistics).
INFERENCE_ONLY = ("conv_ext_fused",)

# Whole networks sum many layers' rounding differences: relative to the
# largest |value| of the reference's output (or of each parameter's gradient).
MODEL_REL_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-9}
# Below float64 the reference is the torch model in float64, and a variant
# passes if its error is within the tolerance or within this factor of torch's
# own error in the benchmarked dtype. A training step of a deep network with
# BatchNorm in training mode and random weights amplifies rounding: torch's
# float32 step differs from its float64 step by up to ~0.1 relative on
# ResNet-50 (batch statistics of near-constant channels), so a fixed 1e-3
# against torch's float32 result cannot tell a bug from rounding there.
MODEL_ERROR_FACTOR_OVER_TORCH = 4.0


def have_torchvision():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def _peak_memory(step, device):
    """{kind: bytes} by which one call of step() raised memory use over what
    was in use before it. CUDA: torch's allocator peak. CPU: 'rss', the
    resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs
    after returning freed heap to the system): everything, oneDNN's and
    conv_ext's own buffers included; and 'allocator', the peak of torch's CPU
    allocator traced by the profiler (tensors only)."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return dict(allocator=torch.cuda.max_memory_allocated() - before)
    peaks = {}
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        step()
        peaks["rss"] = (_status_kib("VmHWM") - before) * 1024
    except OSError:
        pass
    gc.collect()
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
    except AttributeError:  # the profiler's raw events moved
        return peaks
    in_use = peak = 0
    for _, nbytes in events:
        in_use += nbytes
        peak = max(peak, in_use)
    peaks["allocator"] = peak
    return peaks


def _status_kib(field):
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def _step(model, x, train):
    if not train:
        def infer():
            with torch.no_grad():
                return (model(x),)
        return infer

    def train_step():
        model.zero_grad(set_to_none=True)
        # The same dropout masks in every model and call (MobileNetV2,
        # EfficientNet: Dropout before the classifier), or the outputs
        # compared would differ by the masks, not by the convolutions.
        torch.manual_seed(0)
        out = model(x)
        out.float().square().mean().backward()
        return (out.detach(),) + tuple(p.grad for p in model.parameters() if p.grad is not None)
    return train_step


def _max_rel_error(got, want):
    """The largest error of got against want, each tensor's relative to its
    largest |value|, but never to less than 1e-3 of the largest |value| of
    all: some gradients are zero up to rounding (the bias of a BatchNorm whose
    output feeds another BatchNorm's statistics), and noise of 1e-17 against
    a scale of 1e-17 is no error."""
    scales = [e.double().abs().max().item() for e in want]
    floor = 1e-3 * max(scales, default=0.0)
    worst = 0.0
    for g, e, scale in zip(got, want, scales):
        err = (g.double() - e.double()).abs().max().item()
        scale = max(scale, floor)
        worst = max(worst, err / scale if scale > 0 else err)
    return worst


def run_model(name, *, batch, device, dtype, pass_, threads=None, rounds=3, min_time=0.05,
              channels_last=False, variants=("conv_ext",), image_size=224):
    """Checks and times one model; returns a dict of results."""
    import torchvision
    torch.manual_seed(0)
    train = pass_ == "train"
    reference = getattr(torchvision.models, name)(weights=None).to(device=device, dtype=dtype)
    x = torch.randn(batch, 3, image_size, image_size, device=device, dtype=dtype)
    if channels_last:
        reference = reference.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if train and any(v in INFERENCE_ONLY for v in variants):
        raise ValueError(f"variants {INFERENCE_ONLY} are inference only")
    if not train:
        reference.eval()
    models = {"torch": reference}
    models.update((v, VARIANTS[v](copy.deepcopy(reference))) for v in variants)
    for model in models.values():
        model.train(train)
    steps = {key: _step(model, x, train) for key, model in models.items()}
    row = dict(model=name, batch=batch, image_size=image_size,
               pass_="train" if train else "inference", channels_last=channels_last)
    tolerance = MODEL_REL_TOLERANCE.get(dtype, 1e-2)
    if dtype == torch.float64:
        want = steps["torch"]()
        allowed = tolerance
    else:
        reference64 = copy.deepcopy(reference).to(torch.float64)
        want = _step(reference64, x.to(torch.float64), train)()
        del reference64
        row["torch_rel_error"] = _max_rel_error(steps["torch"](), want)
        allowed = max(tolerance, MODEL_ERROR_FACTOR_OVER_TORCH * row["torch_rel_error"])
    row["max_rel_error"] = max(_max_rel_error(steps[v](), want) for v in variants)
    row["correct"] = bool(row["max_rel_error"] <= allowed)
    del want
    times, row["timing"] = timing.time_interleaved(list(steps.values()), device=device,
                                                   threads=threads, rounds=rounds,
                                                   min_time=min_time, calls=3, graph=False)
    for key, seconds in zip(steps, times):
        row[f"{key}_s"] = seconds
        row[f"{key}_peak_bytes"] = _peak_memory(steps[key], device)
    # The memory figure compared: the resident set where measured, else the allocator's.
    memory_kind = "rss" if "rss" in row["torch_peak_bytes"] else "allocator"
    row["memory_kind"] = memory_kind
    for v in variants:
        row[f"ratio_{v}"] = row["torch_s"] / row[f"{v}_s"]  # > 1: the variant is faster
        theirs = row["torch_peak_bytes"].get(memory_kind)
        ours = row[f"{v}_peak_bytes"].get(memory_kind)
        if theirs and ours is not None:
            row[f"memory_ratio_{v}"] = ours / theirs
    row["ratio"] = row[f"ratio_{variants[0]}"]
    return row


def format_model_table(rows, variants):
    header = f"{'model':<18}{'pass':<11}{'torch ms':>10}"
    for v in variants:
        header += f"{v + ' ms':>16}{'x torch':>9}{'peak MB':>9}{'x mem':>7}"
    header += (f"{'torch MB':>10}{'max err':>10}{'torch err':>10}  ok"
               "   (peak MB: memory growth of one call; err: against float64)")
    lines = [header, "-" * len(header)]
    for r in rows:
        line = f"{r['model']:<18}{r['pass_']:<11}{r['torch_s'] * 1e3:>10.1f}"
        for v in variants:
            peak = r[f"{v}_peak_bytes"].get(r["memory_kind"])
            line += (f"{r[f'{v}_s'] * 1e3:>16.1f}{r[f'ratio_{v}']:>9.2f}"
                     f"{(f'{peak / 2**20:.0f}' if peak is not None else '-'):>9}"
                     f"{(f'{r[m]:.2f}' if (m := f'memory_ratio_{v}') in r else '-'):>7}")
        peak = r["torch_peak_bytes"].get(r["memory_kind"])
        line += (f"{(f'{peak / 2**20:.0f}' if peak is not None else '-'):>10}"
                 f"{r['max_rel_error']:>10.1e}"
                 f"{(f'{r[e]:.1e}' if (e := 'torch_rel_error') in r else '-'):>10}"
                 f"  {'yes' if r['correct'] else 'NO'}")
        lines.append(line)
    return "\n".join(lines)
