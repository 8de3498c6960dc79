"""Hostile input and faults: property-based comparison with F.conv2d over
random arguments (valid or not), threads, memory growth, determinism.

CONV_EXT_HYPOTHESIS_EXAMPLES=<n> sets the number of hypothesis examples per
property test (default 200; e.g. 5000 for a long run).
"""
import gc
import os
import threading

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import conv_ext
from helpers import TOLERANCES, make_layout

EXAMPLES = int(os.environ.get("CONV_EXT_HYPOTHESIS_EXAMPLES", "200"))
HYPOTHESIS_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def pair_or_int(low, high):
    """An int, a 1-tuple or a 2-tuple (all accepted by F.conv2d)."""
    value = st.integers(low, high)
    return st.one_of(value, st.tuples(value), st.tuples(value, value), st.lists(value, min_size=2, max_size=2))


@st.composite
def conv_arguments(draw):
    """Arguments for conv2d: mostly valid, with a share of invalid ones
    (channels not divisible by groups, zero or negative stride/padding,
    kernel larger than the padded input, 'same' with stride > 1, wrong
    bias size, wrong rank)."""
    groups = draw(st.integers(1, 3))
    C = groups * draw(st.integers(1, 3))
    K = groups * draw(st.integers(1, 3))
    C_weight = C // groups
    if draw(st.integers(0, 9)) == 0:
        C_weight = draw(st.integers(1, 4))          # likely inconsistent
    if draw(st.integers(0, 19)) == 0:
        K = draw(st.integers(1, 4))                 # maybe not divisible by groups
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    N = draw(st.integers(0, 3))
    H, W = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    invalid_numbers = draw(st.integers(0, 9)) == 0
    stride = draw(pair_or_int(0 if invalid_numbers else 1, 3))
    dilation = draw(pair_or_int(0 if invalid_numbers else 1, 3))
    padding = draw(st.one_of(
        pair_or_int(-1 if invalid_numbers else 0, 3),
        st.sampled_from(["same", "valid"])))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    layouts = st.sampled_from(["contiguous", "channels_last", "strided"])
    unbatched = N == 1 and draw(st.booleans())
    bias = draw(st.sampled_from(["none", "good", "good", "wrong_size"]))
    return dict(N=N, C=C, H=H, W=W, K=K, C_weight=C_weight, R=R, S=S, groups=groups,
                stride=stride, padding=padding, dilation=dilation, dtype=dtype,
                input_layout=draw(layouts), weight_layout=draw(layouts), unbatched=unbatched,
                bias=bias)


def torch_quirk(a):
    """Inputs where conv_ext deliberately differs from torch: with an empty
    batch (N = 0) torch skips its dilation check and accepts dilation 0;
    conv_ext refuses it as for any other batch size."""
    dilation = a["dilation"] if isinstance(a["dilation"], (tuple, list)) else [a["dilation"]]
    return a["N"] == 0 and 0 in dilation


def build_tensors(a):
    x = torch.randn(a["N"], a["C"], a["H"], a["W"], dtype=a["dtype"])
    w = torch.randn(a["K"], a["C_weight"], a["R"], a["S"], dtype=a["dtype"])
    x, w = make_layout(x, a["input_layout"]), make_layout(w, a["weight_layout"])
    if a["unbatched"]:
        x = x[0]
    b = {"none": None, "good": torch.randn(a["K"], dtype=a["dtype"]),
         "wrong_size": torch.randn(a["K"] + 1, dtype=a["dtype"])}[a["bias"]]
    return x, w, b


def run(fn, x, w, b, a):
    return fn(x, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])


@HYPOTHESIS_SETTINGS
@given(conv_arguments())
def test_property_matches_torch_or_raises_like_it(a):
    assume(not torch_quirk(a))
    x, w, b = build_tensors(a)
    # torch computes on contiguous copies (same values): on strided inputs
    # its CPU conv can corrupt the heap (a segfault after some hundred calls
    # of e.g. N3 C9 6x1 input[..., ::2], 3x3x3x1 channels_last weight,
    # stride (3, 2), padding 1, dilation 2, groups 3) and can return a wrong
    # grad_weight (test_torch_reference_layout_bug). conv_ext gets the
    # original layouts.
    xc, wc = x.contiguous(), w.contiguous()
    try:
        expected = run(F.conv2d, xc, wc, b, a)
    except Exception as error:   # noqa: BLE001  (any exception torch raises)
        event(f"torch raises {type(error).__name__}")   # pytest --hypothesis-show-statistics
        with pytest.raises(type(error)):
            run(conv_ext.conv2d, x, w, b, a)
        return
    event("valid" if expected.numel() else "valid, empty output")
    tol = TOLERANCES[a["dtype"]]
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b) if t is not None]
    x2, w2, b2 = leaves[0], leaves[1], (leaves[2] if b is not None else None)
    out = run(conv_ext.conv2d, x2, w2, b2, a)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, **tol)
    # Gradients against torch's (on contiguous copies), with a random grad_output.
    torch_leaves = [t.detach().contiguous().requires_grad_() for t in leaves]
    expected = run(F.conv2d, torch_leaves[0], torch_leaves[1],
                   torch_leaves[2] if b is not None else None, a)
    grad_output = torch.randn_like(expected)
    got = torch.autograd.grad(out, leaves, grad_output, allow_unused=True)
    want = torch.autograd.grad(expected, torch_leaves, grad_output, allow_unused=True)
    for g, e in zip(got, want):
        if e is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, e, **tol)


@HYPOTHESIS_SETTINGS
@given(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=3),
                 st.lists(st.integers(-2, 3), max_size=3),
                 st.tuples(st.integers(1, 2), st.floats(1, 2))),
       st.sampled_from(["stride", "padding", "dilation", "groups"]))
def test_property_odd_argument_types_raise_like_torch(value, name):
    # Arguments of the wrong type or length: same exception type as torch
    # (or the same result where torch accepts them).
    x, w = torch.randn(1, 2, 6, 6), torch.randn(2, 2, 3, 3)
    kwargs = {name: value}
    try:
        expected = F.conv2d(x, w, None, **kwargs)
    except Exception as error:   # noqa: BLE001
        with pytest.raises(type(error)):
            conv_ext.conv2d(x, w, None, **kwargs)
        return
    torch.testing.assert_close(conv_ext.conv2d(x, w, None, **kwargs), expected)


# Threads: the ops release no Python state and keep none between calls, so
# concurrent calls with different shapes must each get their own right answer.
THREAD_CONFIGS = [
    dict(x=(2, 4, 13, 11), w=(6, 4, 3, 3), stride=1, padding=1, groups=1),
    dict(x=(3, 6, 9, 16), w=(6, 1, 3, 3), stride=2, padding=0, groups=6),
    dict(x=(1, 8, 20, 20), w=(4, 4, 5, 1), stride=(1, 2), padding=(2, 0), groups=2),
    dict(x=(4, 3, 7, 7), w=(5, 3, 1, 1), stride=1, padding=0, groups=1),
]


def test_threads_calling_forward_and_backward_concurrently():
    jobs = []
    for i, c in enumerate(THREAD_CONFIGS * 2):
        x, w, b = torch.randn(c["x"]), torch.randn(c["w"]), torch.randn(c["w"][0])
        args = (c["stride"], c["padding"], 1, c["groups"])
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out = F.conv2d(*leaves, *args)
        gy = torch.randn_like(out)
        jobs.append((x, w, b, args, gy, out.detach(), torch.autograd.grad(out, leaves, gy)))
    barrier = threading.Barrier(len(jobs))
    errors = []

    def work(job):
        x, w, b, args, gy, want_out, want_grads = job
        try:
            barrier.wait()
            for _ in range(10):
                leaves = [t.clone().requires_grad_() for t in (x, w, b)]
                out = conv_ext.conv2d(*leaves, *args)
                grads = torch.autograd.grad(out, leaves, gy)
                torch.testing.assert_close(out, want_out, **TOLERANCES[torch.float32])
                for g, e in zip(grads, want_grads):
                    torch.testing.assert_close(g, e, **TOLERANCES[torch.float32])
        except Exception as error:   # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors[0]


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_memory_flat_over_10000_forward_backward_calls():
    # Each call allocates ~90 KB (output, grad_input, grad_weight): a leak of
    # any of them would grow the process by ~900 MB over 10,000 calls.
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    b = torch.randn(8, requires_grad=True)

    def step():
        out = conv_ext.conv2d(x, w, b, 1, 1, 1, 2)
        torch.autograd.grad(out, (x, w, b), torch.ones_like(out))

    # One thread: this measures leaks, and 10,000 tiny parallel regions are
    # slow on a loaded machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(500):     # warm-up: allocator caches
            step()
        gc.collect()
        before = rss_bytes()
        for _ in range(10_000):
            step()
        gc.collect()
        growth = rss_bytes() - before
    finally:
        torch.set_num_threads(threads)
    assert growth < 16 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 10,000 calls"


DETERMINISM_CONFIGS = [
    dict(x=(4, 16, 23, 19), w=(32, 16, 3, 3), stride=1, padding=1, groups=1,
         layout="contiguous"),
    dict(x=(3, 12, 17, 17), w=(12, 4, 5, 3), stride=(2, 1), padding=(2, 1), groups=3,
         layout="channels_last"),
    dict(x=(8, 8, 9, 9), w=(8, 1, 3, 3), stride=1, padding=1, groups=8, layout="contiguous"),
]


def forward_backward(c, x, w, b):
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    out = conv_ext.conv2d(*leaves, c["stride"], c["padding"], 1, c["groups"])
    gy = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    return (out.detach(), *torch.autograd.grad(out, leaves, gy))


@pytest.mark.parametrize("c", DETERMINISM_CONFIGS, ids=lambda c: f"g{c['groups']}{c['layout']}")
def test_bitwise_deterministic_run_to_run_and_across_thread_counts(c):
    # Long reductions (grad_weight sums over N*P*Q, grad_input over K*R*S) in
    # float32, where any change of summation order shows in the last bits.
    x = make_layout(torch.randn(c["x"]), c["layout"])
    w = make_layout(torch.randn(c["w"]), c["layout"])
    b = torch.randn(c["w"][0])
    before = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            results[threads] = [forward_backward(c, x, w, b) for _ in range(2)]
    finally:
        torch.set_num_threads(before)
    reference = results[1][0]
    for threads, runs in results.items():
        for run_index, result in enumerate(runs):
            for name, got, want in zip(("output", "grad_input", "grad_weight", "grad_bias"),
                                       result, reference):
                assert torch.equal(got, want), \
                    f"{name} differs: {threads} threads, run {run_index} vs 1 thread, run 0"


def test_empty_batch_with_zero_dilation_is_refused():
    # The one deliberate difference the property test skips (torch_quirk).
    x, w = torch.randn(0, 1, 3, 3), torch.randn(1, 1, 1, 1)
    assert F.conv2d(x, w, dilation=0).shape == (0, 1, 3, 3)
    with pytest.raises(RuntimeError, match="dilation should be greater than zero"):
        conv_ext.conv2d(x, w, dilation=0)


def test_torch_reference_layout_bug():
    # Found by the property test: torch 2.14's CPU F.conv2d returns a wrong
    # grad_weight for this unbatched input (strides (1, 8, 4)) with a
    # channels_last weight and groups=2. conv_ext matches torch on contiguous
    # copies, which is why the property test gives torch contiguous copies.
    x = torch.randn(1, 4, 1, 2, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last)[0].requires_grad_()
    w = torch.randn(2, 2, 1, 2, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    gy = torch.randn(2, 1, 1, dtype=torch.float64)
    got = torch.autograd.grad(conv_ext.conv2d(x, w, None, 1, 0, 1, 2), (x, w), gy)
    xc, wc = (t.detach().contiguous().requires_grad_() for t in (x, w))
    want = torch.autograd.grad(F.conv2d(xc, wc, None, 1, 0, 1, 2), (xc, wc), gy)
    # The same numbers by hand: grad_weight[k, c, 0, s] = gy[k] * x[g(k)*2 + c, 0, s].
    by_hand = torch.stack([gy[k, 0, 0] * x.detach()[(k // 1) * 2:(k // 1) * 2 + 2, 0, :]
                           for k in range(2)]).unsqueeze(2)
    torch.testing.assert_close(want[1], by_hand)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e)
