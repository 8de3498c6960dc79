"""The warp-level primitives of csrc/cuda/conv2d_warp_primitives.cuh (mma.sync
m16n8k16 bf16/fp16 and m16n8k8 tf32, ldmatrix x1/x2/x4 and .trans, cp.async
with commit/wait groups and zero-fill, warp shuffles, cvt.rna.tf32) run
through the CPU emulation (tests/cuda_emulation/warp_emulation.h) by the test
kernels of tests/cuda_emulation/warp_primitive_tests.cpp, each checked
against a plain matmul or sum in float64. The fragment layouts are the PTX
ISA's; a kernel built on a wrong layout gets a wrong product here."""
import pytest
import torch



def _tf32_round(x):
    """cvt.rna.tf32.f32 in torch: 10 mantissa bits, ties away from zero."""
    bits = x.view(torch.int32).to(torch.int64)
    finite = (bits & 0x7F800000) != 0x7F800000
    rounded = ((bits + 0x1000) & ~0x1FFF) & 0xFFFFFFFF
    out = torch.where(finite, rounded, bits & 0xFFFFFFFF)
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


def _matmul64(a, b, c):
    return a.double() @ b.double() + c.double()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mma_m16n8k16_direct_fragments(emu, dtype):
    # Three warps in one block, each its own product: fragments by the
    # documented layout, the warps' rendezvous kept apart.
    A = torch.randn(3, 16, 16).to(dtype)
    B = torch.randn(3, 16, 8).to(dtype)
    C = torch.randn(3, 16, 8)
    D = emu.mma_m16n8k16(A, B, C, -1)
    # Products of 16-bit inputs are exact in float64; one rounding to float.
    torch.testing.assert_close(D.double(), _matmul64(A, B, C), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", [0, 1, 2], ids=["x4_x2", "x4trans_x2trans", "x1"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mma_m16n8k16_with_ldmatrix(emu, dtype, mode):
    A = torch.randn(1, 16, 16).to(dtype)
    B = torch.randn(1, 16, 8).to(dtype)
    C = torch.randn(1, 16, 8)
    D = emu.mma_m16n8k16(A, B, C, mode)
    torch.testing.assert_close(D.double(), _matmul64(A, B, C), rtol=1e-6, atol=1e-5)


def test_mma_m16n8k16_operand_positions(emu):
    # One nonzero in A and B at a time pins every element's place in the
    # fragments (a random product could hide a symmetric swap).
    for (i, k, j) in [(0, 0, 0), (15, 15, 7), (3, 9, 5), (8, 1, 2), (12, 14, 6)]:
        A = torch.zeros(1, 16, 16, dtype=torch.bfloat16)
        B = torch.zeros(1, 16, 8, dtype=torch.bfloat16)
        A[0, i, k], B[0, k, j] = 2.0, 3.0
        for mode in (-1, 0, 1, 2):
            D = emu.mma_m16n8k16(A, B, torch.zeros(1, 16, 8), mode)
            expected = torch.zeros(1, 16, 8)
            expected[0, i, j] = 6.0
            assert torch.equal(D, expected), (i, k, j, mode)


def test_mma_m16n8k8_tf32_rounds_like_cvt_rna(emu):
    A, B, C = torch.randn(2, 16, 8), torch.randn(2, 8, 8), torch.randn(2, 16, 8)
    D = emu.mma_m16n8k8_tf32(A, B, C, False)
    At, Bt = _tf32_round(A).view(torch.float32), _tf32_round(B).view(torch.float32)
    torch.testing.assert_close(D.double(), _matmul64(At, Bt, C), rtol=1e-6, atol=1e-5)
    # tf32 is coarser than float32: the exact float32 product differs by ~1e-3.
    assert (D.double() - _matmul64(A, B, C)).abs().max() > 1e-5


def test_mma_m16n8k8_tf32_with_ldmatrix(emu):
    A = _tf32_round(torch.randn(1, 16, 8)).view(torch.float32)
    B = _tf32_round(torch.randn(1, 8, 8)).view(torch.float32)
    C = torch.randn(1, 16, 8)
    D = emu.mma_m16n8k8_tf32(A, B, C, True)
    torch.testing.assert_close(D.double(), _matmul64(A, B, C), rtol=1e-6, atol=1e-5)


def test_mma_tf32_truncates_unrounded_operands(emu):
    # Without cvt.rna the tensor core ignores the low 13 bits (truncation).
    A = torch.randn(1, 16, 8)
    B = torch.randn(1, 8, 8)
    D = emu.mma_m16n8k8_tf32(A, B, torch.zeros(1, 16, 8), True)
    trunc = lambda x: (x.view(torch.int32) & ~0x1FFF).view(torch.float32)  # noqa: E731
    torch.testing.assert_close(D.double(), trunc(A).double() @ trunc(B).double(),
                               rtol=1e-6, atol=1e-5)


def test_cvt_rna_tf32(emu):
    one = 1.0
    tie = torch.tensor([0x3F801000, 0xBF801000 - 2**32, 0x3F803000], dtype=torch.int32).view(torch.float32)
    x = torch.cat([torch.randn(200), tie, torch.tensor([0.0, -0.0, one, float("inf"),
                                                         -float("inf"), 3.4e38, 1e-40])])
    got = emu.cvt_rna_tf32(x)
    assert torch.equal(got, _tf32_round(x))
    # Ties go away from zero: 1 + 2^-11 -> 1 + 2^-10, and its negative alike.
    assert got[200].item() == 0x3F802000 and got[201].view(torch.float32).item() < -1.0
    assert torch.isnan(emu.cvt_rna_tf32(torch.tensor([float("nan")])).view(torch.float32)).all()


def test_warp_shuffles(emu):
    x = torch.randn(64)  # two warps
    y = torch.randn(64, dtype=torch.float64)
    for src in (0, 13, 31):
        out, out64 = emu.shuffles(x, y, src)
        warps = x.view(2, 32).double()
        total = warps.sum(1, keepdim=True)
        torch.testing.assert_close(out[:, 0].view(2, 32).double(), total.expand(2, 32),
                                   rtol=1e-5, atol=1e-5)
        # shfl_down: lane 0 holds the warp's sum.
        torch.testing.assert_close(out.view(2, 32, 3)[:, 0, 1].double(), total[:, 0],
                                   rtol=1e-5, atol=1e-5)
        assert torch.equal(out.view(2, 32, 3)[:, :, 2], x.view(2, 32)[:, src:src + 1].expand(2, 32))
        assert torch.equal(out64.view(2, 32), y.view(2, 32).flip(1))  # lane ^ 31


@pytest.mark.parametrize("bytes_", [16, 8, 4])
@pytest.mark.parametrize("threads", [32, 64])
def test_cp_async_waited_copies_with_zero_fill(emu, bytes_, threads):
    src = torch.randn(2, 8, 8)
    out = emu.cp_async_stages(src, bytes_, 5, 0, threads)
    expected = src.clone()
    expected[:, 5:] = 0  # rows past valid_rows: zero-fill, source not read
    assert torch.equal(out, expected)


def test_cp_async_wait_group_leaves_newest_groups_pending(emu):
    # wait_group 1 retires stage 0 only; stage 1 reads as NaN until waited.
    src = torch.randn(2, 8, 8)
    out = emu.cp_async_stages(src, 16, 8, 1, 32)
    assert torch.equal(out[0], src[0])
    assert torch.isnan(out[1]).all()


def test_cp_async_missing_wait_reads_nan(emu):
    # The emulation's guarantee: a kernel that forgets the wait sees NaN.
    out = emu.cp_async_stages(torch.randn(2, 8, 8), 16, 8, 2, 32)
    assert torch.isnan(out).all()
