"""Autocast: conv_ext.conv2d casts like F.conv2d (conv2d is on autocast's
lower-precision list on CPU and CUDA): float32 arguments are cast to the
autocast dtype, float64 ones are left alone, gradients of float32 leaves come
back in float32."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import conv_ext

LOW_PRECISION = [torch.bfloat16, torch.float16]


def assert_close_scaled(got, want, rel=2e-2):
    """Closeness for low-precision results: the two sum in different orders,
    so allow `rel` of the largest magnitude (a few units in the last place of
    bf16 / fp16 after a long sum)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = want.abs().max().item() + 1e-6
    torch.testing.assert_close(got.double(), want.double(), rtol=rel, atol=rel * scale)


def run_both(device, dtype, x, w, b, **kwargs):
    """Forward and backward of conv_ext and of F.conv2d under autocast."""
    results = []
    for fn in (conv_ext.conv2d, F.conv2d):
        leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
        with torch.autocast(device, dtype=dtype):
            out = fn(*leaves, **kwargs)
        grads = torch.autograd.grad(out.float().square().sum(), leaves)
        results.append((out, *grads))
    return results


def check_autocast(device, dtype):
    x = torch.randn(2, 6, 9, 8, device=device)
    w = torch.randn(8, 3, 3, 3, device=device)
    b = torch.randn(8, device=device)
    got, want = run_both(device, dtype, x, w, b, stride=(2, 1), padding=1, groups=2)
    assert got[0].dtype == want[0].dtype == dtype
    for name, g, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, want):
        assert g.dtype == e.dtype, name
        assert_close_scaled(g, e)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_cpu_autocast_matches_torch(dtype):
    check_autocast("cpu", dtype)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_cpu_autocast_leaves_float64_alone(dtype):
    x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=dtype):
        out = conv_ext.conv2d(x, w)
        # A float64 input with a float32 weight: the weight is cast, the input
        # is not, and the mismatch is refused as torch refuses it.
        with pytest.raises(RuntimeError) as got:
            conv_ext.conv2d(x, w.float())
        with pytest.raises(RuntimeError) as want:
            F.conv2d(x, w.float())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.conv2d(x, w))
    assert type(got.value) is type(want.value)


def test_cpu_autocast_disabled_region_and_module():
    # A module under autocast computes in bf16; autocast(enabled=False)
    # inside restores float32, as for nn.Conv2d.
    torch.manual_seed(0)
    ref = nn.Conv2d(3, 4, 3, padding=1)
    mod = conv_ext.convert(nn.Sequential(ref))[0]
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mod(x).dtype == ref(x).dtype == torch.bfloat16
        assert_close_scaled(mod(x), ref(x))
        with torch.autocast("cpu", enabled=False):
            assert mod(x).dtype == torch.float32
    assert mod(x).dtype == torch.float32


def test_autocast_of_other_device_does_not_cast_cpu_tensors():
    if not torch.cuda.is_available():
        pytest.skip("needs torch's CUDA autocast, which only runs with a GPU")
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with torch.autocast("cuda", dtype=torch.float16):
        assert conv_ext.conv2d(x, w).dtype == F.conv2d(x, w).dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_cuda_autocast_matches_torch(dtype):
    check_autocast("cuda", dtype)


@pytest.mark.cuda
def test_cuda_autocast_module_training_step():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3)).cuda()
    mod = conv_ext.convert(nn.Sequential(*[m for m in ref]))
    x = torch.randn(4, 3, 16, 16, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = mod(x)
        expected = ref(x)
    assert out.dtype == expected.dtype == torch.bfloat16
    assert_close_scaled(out, expected)
    out.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in mod.parameters())
