"""Static performance table of conv_ext's CUDA kernels, from the built
extension's machine code (SASS): no GPU needed.

    python bench/sass_check.py [path/to/_C*.so] [--json] [--filter SUBSTR]

Per kernel: registers, shared memory and local memory (spill space) from
`cuobjdump -res-usage`; from the SASS, the spill loads/stores (LDL/STL) of
the whole kernel, and for its *main loop* (the backward branch whose body
holds the most multiply-adds) its length, FFMA/DFMA/HFMA2/HMMA counts and
the multiply-add share. These are static counts of the loop body, not
executed counts: a proxy for how much of the inner loop is index arithmetic
instead of math. tests/test_sass.py turns the table into checks.

cuobjdump comes from the pip package nvidia-cuda-cuobjdump (in the Makefile
DEPS), or a CUDA toolkit on PATH / CUDA_HOME.
"""
import argparse
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Multiply-add instructions: what the main loop is for.
MATH_OPS = ("FFMA", "DFMA", "HFMA2", "HMMA", "DMMA")


def find_tool(name):
    """cuobjdump/nvdisasm: PATH, the pip wheels (nvidia/*/bin), CUDA_HOME."""
    found = shutil.which(name)
    if found:
        return found
    candidates = []
    for entry in sys.path:
        candidates += glob.glob(os.path.join(entry, "nvidia", "*", "bin", name))
        candidates += glob.glob(os.path.join(entry, "nvidia", "cuda_*", "bin", name))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", name))
    candidates += glob.glob(f"/usr/local/cuda*/bin/{name}")
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def default_extension():
    paths = sorted(glob.glob(os.path.join(ROOT, "conv_ext", "_C*.so")))
    return paths[0] if paths else None


def demangle(names):
    if not names or not shutil.which("c++filt"):
        return list(names)
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return out[: len(names)]


@dataclass
class KernelStats:
    mangled: str
    name: str = ""            # demangled, namespaces dropped
    op: str = ""              # forward / backward_input / backward_weight / depthwise_* / other
    dtype: str = ""           # float / double / Half / BFloat16 / "" (none in the name)
    registers: int = 0
    shared_bytes: int = 0
    local_bytes: int = 0      # per-thread local memory (spill space, local arrays)
    spill_loads: int = 0      # LDL in the whole kernel
    spill_stores: int = 0     # STL in the whole kernel
    instructions: int = 0
    loop_length: int = 0      # the main loop's instructions
    loop_math: int = 0        # its multiply-adds (any of MATH_OPS)
    loop_ffma: int = 0
    loop_spills: int = 0      # LDL/STL inside the main loop
    hmma: int = 0             # HMMA in the whole kernel
    loop_top: dict = field(default_factory=dict)  # most frequent other opcodes of the loop

    @property
    def math_share(self):
        return self.loop_math / self.loop_length if self.loop_length else 0.0

    @property
    def spills(self):
        return self.spill_loads + self.spill_stores

    @property
    def dense(self):
        return self.op in ("forward", "backward_input", "backward_weight")

    @property
    def tensor_core(self):
        return "mma" in self.name.split("<")[0] or "tensor" in self.name.split("<")[0]


def _sass_functions(text):
    """Yields (mangled name, [(address, instruction)])."""
    name, body = None, []
    for line in text.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            if name:
                yield name, body
            name, body = m.group(1), []
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m and name:
            ins = re.sub(r"^@!?U?P[T0-9]+\s+", "", m.group(2).strip())
            body.append((int(m.group(1), 16), ins))
    if name:
        yield name, body


def _opcode(ins):
    return ins.split()[0].split(".")[0]


def _main_loop(body):
    """The body of the backward branch with the most multiply-adds (ties: the
    shortest), as a Counter of opcodes, or None for a kernel without loops."""
    best = None
    for addr, ins in body:
        if not ins.startswith("BRA"):
            continue
        target = re.search(r"0x([0-9a-f]+)", ins)
        if not target or int(target.group(1), 16) >= addr:
            continue
        start = int(target.group(1), 16)
        ops = collections.Counter(_opcode(x) for a, x in body if start <= a <= addr)
        length = sum(ops.values())
        math = sum(ops[k] for k in MATH_OPS)
        if best is None or math > best[0] or (math == best[0] and length < best[1]):
            best = (math, length, ops)
    return best[2] if best else None


def _resource_usage(text):
    """{mangled name: (registers, shared bytes, local bytes)} from -res-usage."""
    usage = {}
    name = None
    for line in text.splitlines():
        m = re.search(r"Function (\S+?):?\s*$", line.strip())
        if m and "REG:" not in line:
            name = m.group(1).rstrip(":")
            continue
        m = re.search(r"REG:(\d+)", line)
        if m and name:
            shared = re.search(r"SHARED:(\d+)", line)
            local = re.search(r"LOCAL:(\d+)", line)
            usage[name] = (int(m.group(1)), int(shared.group(1)) if shared else 0,
                           int(local.group(1)) if local else 0)
            name = None
    return usage


def _classify(name):
    base = name.split("<")[0]
    op = "other"
    for key, label in (("depthwise_forward", "depthwise_forward"),
                       ("depthwise_backward_input", "depthwise_backward_input"),
                       ("depthwise_backward_weight", "depthwise_backward_weight"),
                       ("backward_input", "backward_input"),
                       ("backward_weight", "backward_weight"),
                       ("forward", "forward")):
        if key in base:
            op = label
            break
    args = name[len(base):]
    dtype = ""
    for key, label in (("BFloat16", "BFloat16"), ("Half", "Half"), ("double", "double"),
                       ("float", "float")):
        if re.search(r"\b" + key + r"\b", args):
            dtype = label
            break
    return op, dtype


def analyse(extension, cuobjdump=None):
    """KernelStats of every kernel in the extension's sm_XX cubins."""
    cuobjdump = cuobjdump or find_tool("cuobjdump")
    if cuobjdump is None:
        raise FileNotFoundError("cuobjdump not found (pip install nvidia-cuda-cuobjdump)")
    sass = subprocess.run([cuobjdump, "-sass", extension], capture_output=True, text=True,
                          check=True).stdout
    usage = _resource_usage(subprocess.run([cuobjdump, "-res-usage", extension],
                                           capture_output=True, text=True, check=True).stdout)
    stats = []
    seen = set()
    for mangled, body in _sass_functions(sass):
        # A kernel template instantiated in several translation units (one
        # per op, csrc/cuda/conv2d_cuda_<op>.cu) is in several cubins, the
        # same code each time: count it once.
        if mangled in seen:
            continue
        seen.add(mangled)
        s = KernelStats(mangled=mangled, instructions=len(body))
        s.registers, s.shared_bytes, s.local_bytes = usage.get(mangled, (0, 0, 0))
        ops = collections.Counter(_opcode(x) for _, x in body)
        s.spill_loads, s.spill_stores, s.hmma = ops["LDL"], ops["STL"], ops["HMMA"]
        loop = _main_loop(body)
        if loop:
            s.loop_length = sum(loop.values())
            s.loop_math = sum(loop[k] for k in MATH_OPS)
            s.loop_ffma = loop["FFMA"]
            s.loop_spills = loop["LDL"] + loop["STL"]
            s.loop_top = dict(collections.Counter(
                {k: v for k, v in loop.items() if k not in MATH_OPS}).most_common(6))
        stats.append(s)
    for s, name in zip(stats, demangle([s.mangled for s in stats])):
        name = re.sub(r"\(.*\)$", "", name)
        name = re.sub(r"conv_ext::cuda::|c10::|void ", "", name)
        s.name = name.strip()
        s.op, s.dtype = _classify(s.name)
    return stats


def short_name(s):
    """Kernel name without its dtype argument, e.g.
    conv2d_forward_gemm_kernel<GemmTile<128, 128, 8, 8, 8>>."""
    return re.sub(r"<(float|double|Half|BFloat16)(, ?)?", "<", s.name).replace("<>", "")


def format_table(stats):
    header = (f"{'kernel':78s} {'dtype':8s} {'reg':>4s} {'smem':>6s} {'LDL':>4s} {'STL':>4s} "
              f"{'loop':>5s} {'FFMA':>5s} {'math%':>6s} {'HMMA':>5s}")
    lines = [header, "-" * len(header)]
    for s in sorted(stats, key=lambda s: (s.op, short_name(s), s.dtype)):
        lines.append(f"{short_name(s)[:78]:78s} {s.dtype:8s} {s.registers:4d} {s.shared_bytes:6d} "
                     f"{s.spill_loads:4d} {s.spill_stores:4d} {s.loop_length:5d} {s.loop_ffma:5d} "
                     f"{100 * s.math_share:5.0f}% {s.hmma:5d}")
    spilling = sum(1 for s in stats if s.spills)
    lines.append(f"{len(stats)} kernels; {spilling} with spills "
                 f"({sum(s.spills for s in stats)} LDL/STL); "
                 f"{sum(1 for s in stats if s.hmma)} with HMMA")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extension", nargs="?", default=default_extension())
    parser.add_argument("--json", action="store_true", help="one JSON object per kernel")
    parser.add_argument("--filter", default="", help="only kernels whose name contains this")
    parser.add_argument("--no-gpu-only", action="store_true",
                        help="print nothing where a GPU is visible (make bench measures there)")
    args = parser.parse_args(argv)
    if args.no_gpu_only:
        try:
            import torch
            if torch.cuda.is_available():
                return 0
        except ImportError:
            pass
    if not args.extension:
        print("no built extension (conv_ext/_C*.so): run make build", file=sys.stderr)
        return 2
    try:
        stats = analyse(args.extension)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    stats = [s for s in stats if args.filter in s.name]
    if not stats:
        print("no CUDA kernels in", args.extension, "(built without CUDA?)")
        return 0
    if args.json:
        for s in stats:
            print(json.dumps(dict(asdict(s), math_share=s.math_share)))
    else:
        print(format_table(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
