"""DistributedDataParallel over conv_ext: two processes (gloo, loopback)
train a small CNN of conv_ext.Conv2d and the same CNN of nn.Conv2d, each
rank on its own shard; the all-reduced gradients and the parameters after
every step must equal each other and a single-process full-batch run."""
import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

import conv_ext

WORLD_SIZE = 2
STEPS = 3
BATCH_PER_RANK = 4


def make_model():
    torch.manual_seed(1234)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, groups=2), nn.ReLU(),
        nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 7 * 7, 5))


def make_data():
    generator = torch.Generator().manual_seed(99)
    x = torch.randn(STEPS, WORLD_SIZE * BATCH_PER_RANK, 3, 16, 16, generator=generator)
    y = torch.randint(0, 5, (STEPS, WORLD_SIZE * BATCH_PER_RANK), generator=generator)
    return x, y


def train(model, x, y, rank=None):
    """STEPS of SGD; the gradients and parameters after each step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = []
    for step in range(STEPS):
        xs, ys = x[step], y[step]
        if rank is not None:
            xs = xs[rank * BATCH_PER_RANK:(rank + 1) * BATCH_PER_RANK]
            ys = ys[rank * BATCH_PER_RANK:(rank + 1) * BATCH_PER_RANK]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xs), ys).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
        history.append((grads, [p.detach().clone() for p in model.parameters()]))
    return history


def worker(rank, port, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        x, y = make_data()
        reference = make_model()
        model = conv_ext.convert(copy.deepcopy(reference))
        assert sum(isinstance(m, conv_ext.Conv2d) for m in model.modules()) == 3
        results = {}
        for name, m in (("conv_ext", model), ("torch", reference)):
            ddp = nn.parallel.DistributedDataParallel(m)
            results[name] = train(ddp, x, y, rank)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo not available")
def test_ddp_two_processes_gloo(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    # Single process, full batch, nn.Conv2d: what DDP must reproduce (mean
    # loss over equal shards = mean of the ranks' losses).
    x, y = make_data()
    expected = train(make_model(), x, y)
    tol = dict(rtol=1e-5, atol=1e-6)
    for rank, results in enumerate(ranks):
        for name in ("conv_ext", "torch"):
            for step, ((grads, params), (want_grads, want_params)) in enumerate(
                    zip(results[name], expected, strict=True)):
                for g, e in zip(grads, want_grads, strict=True):
                    torch.testing.assert_close(
                        g, e, **tol, msg=lambda m: f"rank {rank} {name} step {step} grad: {m}")
                for p, e in zip(params, want_params, strict=True):
                    torch.testing.assert_close(
                        p, e, **tol, msg=lambda m: f"rank {rank} {name} step {step} param: {m}")
    # The ranks saw different data but hold identical (all-reduced) gradients.
    for a, b in zip(ranks[0]["conv_ext"][0][0], ranks[1]["conv_ext"][0][0]):
        assert torch.equal(a, b)
