"""Runtime ISA dispatch of the CPU kernels (csrc/cpu/conv2d_cpu_isa.h): the
kernels are compiled for AVX-512, AVX2+FMA and the baseline ISA in one
library and chosen at run time. Here: choosing and forcing an ISA (debug op,
CONV_EXT_CPU_ISA), every supported copy (the portable one included) against
torch on each path with bitwise thread/batch invariance, and the built
library: no code outside the ISA namespaces uses AVX, so nothing compiled for
a wider ISA runs before the CPU check. (The fast-path test files run on every
vector ISA the CPU has through conftest.cpu_isa.)"""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import conv_ext

debug = torch.ops.conv_ext_debug
ops = torch.ops.conv_ext
ALL_ISAS = ("avx512", "avx2", "portable")


def test_supported_isas_best_first():
    isas = list(debug.cpu_isas())
    assert isas[-1] == "portable"
    assert isas == [isa for isa in ALL_ISAS if isa in isas]
    # Without CONV_EXT_CPU_ISA the best one runs.
    if not os.environ.get("CONV_EXT_CPU_ISA"):
        assert debug.simd_isa() == isas[0]


def test_set_cpu_isa_switches_and_restores():
    before = debug.simd_isa()
    try:
        for isa in debug.cpu_isas():
            debug.set_cpu_isa(isa)
            assert debug.simd_isa() == isa
        assert debug.set_cpu_isa("auto") == debug.cpu_isas()[-1]
        assert debug.simd_isa() == debug.cpu_isas()[0]
    finally:
        debug.set_cpu_isa(before)


def test_unknown_isa_is_an_error():
    before = debug.simd_isa()
    with pytest.raises(RuntimeError, match="unknown CPU ISA 'sse9'"):
        debug.set_cpu_isa("sse9")
    assert debug.simd_isa() == before


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_isa_the_cpu_lacks_is_an_error(isa):
    if isa in debug.cpu_isas():
        pytest.skip(f"this CPU has {isa}")
    with pytest.raises(RuntimeError, match=f"for {isa} were asked for, but this CPU lacks"):
        debug.set_cpu_isa(isa)


def _run_python(code, isa):
    env = dict(os.environ, CONV_EXT_CPU_ISA=isa)
    root = os.path.dirname(os.path.dirname(os.path.abspath(conv_ext.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_environment_variable_forces_an_isa():
    # One subprocess for both cases: a forced ISA runs, an unknown one is a
    # clear error at the first convolution (not at import).
    isa = debug.cpu_isas()[-2] if len(debug.cpu_isas()) > 1 else "portable"
    code = """
        import torch, conv_ext
        print(torch.ops.conv_ext_debug.simd_isa())
        x, w = torch.randn(1, 8, 5, 5), torch.randn(4, 8, 3, 3)
        assert torch.equal(conv_ext.conv2d(x, w), conv_ext.conv2d(x, w))
    """
    result = _run_python(code, isa)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [isa]
    bad = _run_python("""
        import torch, conv_ext
        try:
            conv_ext.conv2d(torch.randn(1, 8, 5, 5), torch.randn(4, 8, 3, 3))
        except RuntimeError as e:
            print(e)
    """, "avx3")
    assert bad.returncode == 0, bad.stderr
    assert "CONV_EXT_CPU_ISA=avx3" in bad.stdout and "unknown CPU ISA" in bad.stdout


@pytest.fixture(params=ALL_ISAS)
def each_isa(request):
    if request.param not in debug.cpu_isas():
        pytest.skip(f"this CPU lacks {request.param}")
    before = debug.set_cpu_isa(request.param)
    try:
        yield request.param
    finally:
        debug.set_cpu_isa(before)


# One case per CPU path, odd sizes: (N, C, H, W, K, R, S, stride, padding, dilation, groups)
PATH_CASES = {
    "pointwise": (2, 19, 7, 9, 21, 1, 1, 1, 0, 1, 1),
    "first_layer": (2, 3, 13, 11, 10, 5, 5, 2, 2, 1, 1),
    "dense": (2, 21, 9, 11, 19, 3, 3, 1, 1, 1, 1),
    "dense_wide_rows": (2, 35, 6, 40, 33, 3, 3, 1, 1, 1, 1),  # whole transpose blocks
    "dense_strided_dilated": (3, 10, 12, 9, 13, 3, 2, (2, 1), (2, 0), (1, 2), 1),
    "depthwise": (2, 20, 11, 13, 20, 3, 3, 2, 1, 1, 20),
    # sliding-window tiles: two-row tiles on 13-wide rows, kernel wider than a tile
    "depthwise_window": (2, 20, 11, 13, 20, 7, 9, 1, (3, 4), 1, 20),
    "grouped": (2, 12, 8, 7, 18, 3, 3, 1, 1, 1, 3),
    # 4 per group (ResNeXt), stride 2: groups fill whole vectors on every ISA
    "grouped_whole_vectors_s2": (2, 32, 9, 11, 32, 3, 3, 2, 1, 1, 8),
}


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", PATH_CASES.values(), ids=PATH_CASES.keys())
def test_each_isa_matches_torch_and_is_bitwise_invariant(each_isa, case, layout):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    args = (pair(stride), pair(padding), pair(dilation), groups)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(N, C, H, W).contiguous(memory_format=fmt)
    w = (torch.randn(K, C // groups, R, S) / (C // groups * R * S) ** 0.5).contiguous(memory_format=fmt)
    b = torch.randn(K)
    y = ops.conv2d_forward(x, w, b, *args)
    gy = torch.randn_like(y)
    gx = ops.conv2d_backward_input(gy, w, list(x.shape), *args)
    gw = ops.conv2d_backward_weight(gy, x, list(w.shape), *args)
    # float64 torch as the reference for all three
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    y64 = F.conv2d(x64, w64, b.double(), stride, padding, dilation, groups)
    gx64, gw64 = torch.autograd.grad(y64, (x64, w64), gy.double())
    for got, want in ((y, y64), (gx, gx64), (gw, gw64)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    # Bitwise: one thread, and image by image.
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(ops.conv2d_forward(x, w, b, *args), y)
        assert torch.equal(ops.conv2d_backward_input(gy, w, list(x.shape), *args), gx)
        assert torch.equal(ops.conv2d_backward_weight(gy, x, list(w.shape), *args), gw)
    finally:
        torch.set_num_threads(saved)
    for i in range(N):
        assert torch.equal(ops.conv2d_forward(x[i:i + 1], w, b, *args), y[i:i + 1])


def test_isas_agree_closely():
    # The copies differ only in vector width (summation order), so results
    # agree to rounding, not bitwise.
    x, w = torch.randn(2, 24, 10, 10), torch.randn(20, 24, 3, 3) / 15
    before = debug.simd_isa()
    try:
        results = []
        for isa in debug.cpu_isas():
            debug.set_cpu_isa(isa)
            results.append(conv_ext.conv2d(x, w, padding=1))
    finally:
        debug.set_cpu_isa(before)
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=1e-5, atol=1e-5)


def _functions_with_vector_code(library):
    """{function name: (VEX/EVEX instructions, instructions on zmm registers)}
    of the library's code, from objdump (VEX/EVEX mnemonics start with v)."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", library],
                         capture_output=True, text=True, check=True).stdout
    header = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    counts, name = {}, None
    for line in out.splitlines():
        m = header.match(line)
        if m:
            name = m.group(1)
            continue
        fields = line.split("\t")
        if name is not None and len(fields) > 1 and fields[1].startswith("v"):
            vex, zmm = counts.get(name, (0, 0))
            counts[name] = (vex + 1, zmm + ("%zmm" in fields[1]))
    return counts


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
@pytest.mark.skipif(not re.match(r"(x86_64|i\d86|AMD64)", os.uname().machine), reason="x86 only")
def test_no_vector_code_outside_the_isa_namespaces():
    # Inline functions and templates of torch and the standard library are
    # compiled in every ISA's translation unit; the linker keeps one copy.
    # They must all be baseline code, or a CPU without AVX-512 could run an
    # AVX-512 copy (conv2d_cpu_isa_prelude.h). Likewise static initialisers.
    counts = _functions_with_vector_code(conv_ext._C.__file__)
    in_isa = lambda name, isa: f"conv_ext::cpu::{isa}::" in name  # noqa: E731
    if any(in_isa(n, "portable") for n in counts):
        pytest.skip("built with an -march that has AVX (CONV_EXT_MARCH): the baseline is AVX")
    # (amx: the AMX tiles' translation unit, AVX-512 + AMX, conv2d_cpu_amx.h;
    # avx512bf16: the vdpbf16ps forward, conv2d_cpu_avx512bf16.h)
    isas = ("avx2", "avx512", "amx", "avx512bf16")
    outside = sorted(n for n in counts if not any(in_isa(n, isa) for isa in isas))
    assert outside == [], f"AVX code outside conv_ext::cpu::avx2/avx512/amx/avx512bf16: {outside[:10]}"
    # And each copy is what its name says: zmm registers in avx512 only.
    assert any(in_isa(n, "avx512") and zmm for n, (_, zmm) in counts.items())
    assert any(in_isa(n, "avx2") for n in counts)
    assert not any(in_isa(n, "avx2") and zmm for n, (_, zmm) in counts.items())
