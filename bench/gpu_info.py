"""What ran on the GPU: kernel names of a call (torch's profiler) and each
conv_ext kernel's register count (cuobjdump on the built extension, where the
CUDA toolkit has it). Both are best effort: an empty answer, never an error."""
import functools
import glob
import os
import re
import shutil
import subprocess

import torch

__all__ = ["kernel_names", "register_counts", "registers_of"]


def kernel_names(fn):
    """Names of the GPU kernels one call of fn launches, in order."""
    from torch.profiler import ProfilerActivity, profile
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
    except Exception:  # noqa: BLE001  (no CUPTI, profiler busy: the row just lacks names)
        return []
    names = [event.name for event in prof.events()
             if str(getattr(event, "device_type", "")).endswith("CUDA")]
    return list(dict.fromkeys(names))


def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    path = os.path.join(home, "bin", "cuobjdump")
    return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=None)
def register_counts():
    """{demangled kernel name: registers per thread} of conv_ext's CUDA kernels
    (the first architecture listed for each), or {} where cuobjdump is absent."""
    import conv_ext
    tool = _cuobjdump()
    libraries = glob.glob(os.path.join(os.path.dirname(conv_ext.__file__), "_C*.so"))
    if not tool or not libraries:
        return {}
    try:
        text = subprocess.run([tool, "--dump-resource-usage", libraries[0]], capture_output=True,
                              text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    counts, function = {}, None
    for line in text.splitlines():
        match = re.search(r"Function (\S+):", line)
        if match:
            function = match.group(1)
            continue
        match = re.search(r"REG:(\d+)", line)
        if match and function:
            counts.setdefault(function, int(match.group(1)))
            function = None
    return dict(zip(_demangle(list(counts)), counts.values()))


def _demangle(names):
    if not names or not shutil.which("c++filt"):
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                         text=True).stdout.split("\n")
    return out[:len(names)] if len(out) >= len(names) else names


def registers_of(names):
    """{kernel: registers} for the kernels in `names` found in the build."""
    table = register_counts()
    return {name: table[name] for name in names if name in table}
