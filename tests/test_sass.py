"""GPU-free performance checks of the CUDA kernels, on the machine code of the
built extension (bench/sass_check.py: cuobjdump, no GPU needed):

- a dense kernel (forward / grad-input / grad-weight implicit GEMM) must not
  spill registers (no LDL/STL);
- a float32 SIMT dense kernel's main loop must be at least 60% FFMA;
- bfloat16 / float16 / TF32 must have a kernel with HMMA for each pass.

Where the current kernels are known to fail a check, that case is marked
xfail(strict=True) in KNOWN_FAILURES below (with the measured figure), so
the test turns into an error the moment a kernel improves: then delete the
entry and the check holds from there on. Skipped where the extension was
built without CUDA or cuobjdump is missing."""
import os
import sys

import pytest
import torch

import conv_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import sass_check  # noqa: E402

PASSES = ["forward", "backward_input", "backward_weight"]
SIMT_TILES = {"small": "GemmTile<32, 32, 8, 4, 4>", "large": "GemmTile<128, 64, 8, 8, 4>",
              "huge": "GemmTile<128, 128, 8, 8, 8>"}
DTYPES = ["float", "double", "Half", "BFloat16"]


def _has_cuda_kernels():
    # Not the dispatcher's CUDA key: a CPU-only build registers a CUDA kernel
    # too (one that raises "built without CUDA support").
    return conv_ext.built_with_cuda()


@pytest.fixture(scope="module")
def kernels():
    if not _has_cuda_kernels():
        pytest.skip("conv_ext was built without CUDA kernels")
    extension = sass_check.default_extension()
    if extension is None or sass_check.find_tool("cuobjdump") is None:
        pytest.skip("no built extension or no cuobjdump (pip install nvidia-cuda-cuobjdump)")
    stats = sass_check.analyse(extension)
    assert stats, "the CUDA build has no kernels"
    return stats


def _simt_kernel(kernels, op, tile, dtype):
    found = [s for s in kernels if s.op == op and s.dtype == dtype and not s.tensor_core
             and SIMT_TILES[tile] in s.name]
    assert len(found) == 1, f"{op} {tile} {dtype}: {[s.name for s in found]}"
    return found[0]


# Measured on the sm_90 build (docs/cuda.md, "Static checks"); each entry is
# a check the current code fails, with the figure.
KNOWN_SPILLS = {
    # (op, tile, dtype): LDL + STL in the kernel
    ("forward", "huge", "float"): "268 LDL + 58 STL",
    ("forward", "huge", "Half"): "212 LDL + 51 STL",
    ("forward", "huge", "BFloat16"): "212 LDL + 51 STL",
    ("forward", "huge", "double"): "22 LDL + 22 STL",
    ("backward_input", "huge", "double"): "298 LDL + 74 STL",
    ("backward_input", "small", "double"): "1 LDL + 1 STL",
    ("backward_weight", "huge", "double"): "58 LDL + 38 STL",
    ("backward_weight", "large", "float"): "13 LDL + 7 STL",
    ("backward_weight", "large", "Half"): "13 LDL + 7 STL",
    ("backward_weight", "large", "BFloat16"): "13 LDL + 7 STL",
}
# Every fp32 SIMT main loop today: index decoding and address arithmetic
# dominate the gathers (FFMA / loop instructions).
KNOWN_LOW_FFMA = {
    ("forward", "small"): "128 / 2024 = 6%",
    ("forward", "large"): "256 / 2749 = 9%",
    ("forward", "huge"): "512 / 4380 = 12%",
    ("backward_input", "small"): "128 / 3564 = 4%",
    ("backward_input", "large"): "256 / 4526 = 6%",
    ("backward_input", "huge"): "512 / 5348 = 10%",
    ("backward_weight", "small"): "128 / 1621 = 8%",
    ("backward_weight", "large"): "256 / 1810 = 14%",
    ("backward_weight", "huge"): "512 / 2547 = 20%",
}
# Passes without a tensor-core kernel yet (the forward has one:
# conv2d_forward_mma_kernel, bf16/fp16 m16n8k16 and tf32 m16n8k8; grad-weight
# too: conv2d_backward_weight_mma_kernel).
KNOWN_NO_HMMA = {
    ("backward_input", dtype) for dtype in ("Half", "BFloat16", "tf32")
}


def _xfail_if(known, key, reason):
    return pytest.param(*key, marks=pytest.mark.xfail(strict=True, reason=reason)) \
        if key in known else pytest.param(*key)


@pytest.mark.parametrize(
    "op,tile,dtype",
    [_xfail_if(KNOWN_SPILLS, (op, tile, dtype), "spills today: %s" % KNOWN_SPILLS.get((op, tile, dtype)))
     for op in PASSES for tile in SIMT_TILES for dtype in DTYPES])
def test_dense_kernel_does_not_spill(kernels, op, tile, dtype):
    s = _simt_kernel(kernels, op, tile, dtype)
    assert s.spills == 0, f"{s.name}: {s.spill_loads} LDL, {s.spill_stores} STL"


@pytest.mark.parametrize(
    "op,tile",
    [_xfail_if(KNOWN_LOW_FFMA, (op, tile), "main loop FFMA share today: %s" % KNOWN_LOW_FFMA.get((op, tile)))
     for op in PASSES for tile in SIMT_TILES])
def test_fp32_simt_main_loop_is_mostly_ffma(kernels, op, tile):
    s = _simt_kernel(kernels, op, tile, "float")
    assert s.loop_length > 0
    share = s.loop_ffma / s.loop_length
    assert share >= 0.6, f"{s.name}: {s.loop_ffma} FFMA of {s.loop_length} ({share:.0%})"


@pytest.mark.parametrize(
    "op,dtype",
    [_xfail_if(KNOWN_NO_HMMA, (op, dtype), "no tensor-core kernel of this pass yet (grad-input at "
               "stride 1 runs on the forward's)")
     for op in PASSES for dtype in ["Half", "BFloat16", "tf32"]])
def test_tensor_core_kernel_per_pass(kernels, op, dtype):
    # TF32 runs float inputs on a tensor-core kernel (HMMA on tf32 operands).
    want = "float" if dtype == "tf32" else dtype
    found = [s for s in kernels if s.op == op and s.dtype == want and s.hmma > 0]
    assert found, f"no {op} kernel for {dtype} with HMMA"
    for s in found:
        assert s.loop_spills == 0, f"{s.name}: {s.loop_spills} LDL/STL in the main loop"


# Tensor-core kernels that spill outside their main loop today (per-tile
# state reloaded once per tile), with the figure: the compiler keeps the
# TF32 128 x 64 forward at 168 registers (3 blocks per SM) rather than 202
# without spills (__launch_bounds__(128, 1)); which is faster needs a GPU.
KNOWN_TC_SPILLS = {
    ("forward", "MmaTile<128, 64, 2, 2, 3, 64>", "float"): "4 LDL + 3 STL, 168 registers",
}
TC_FORWARD_TILES = ["MmaTile<128, 64, 2, 2, 3, 64>", "MmaTile<128, 64, 2, 2, 3, 128>",
                    "MmaTile<128, 128, 2, 4, 3, 64>", "MmaTile<64, 64, 2, 2, 4, 64>"]


@pytest.mark.parametrize(
    "op,tile,dtype",
    [_xfail_if(KNOWN_TC_SPILLS, ("forward", tile, dtype),
               "spills today: %s" % KNOWN_TC_SPILLS.get(("forward", tile, dtype)))
     for tile in TC_FORWARD_TILES for dtype in ["float", "Half", "BFloat16"]])
def test_tensor_core_forward_tiles_do_not_spill(kernels, op, tile, dtype):
    found = [s for s in kernels if s.op == op and s.dtype == dtype and s.hmma > 0 and tile in s.name]
    assert len(found) == 1, f"{op} {tile} {dtype}: {[s.name for s in found]}"
    assert found[0].spills == 0, f"{found[0].name}: {found[0].spills} LDL/STL"


def test_table_prints(kernels, capsys):
    # The table `make bench` prints without a GPU.
    text = sass_check.format_table(kernels)
    assert "conv2d_forward_gemm_kernel" in text and "kernels;" in text
