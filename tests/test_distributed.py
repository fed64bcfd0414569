"""DistributedDataParallel on two processes (gloo on the CPU; NCCL, one GPU a rank, where two GPUs exist):
sharding changes nothing.

For every implementation and estimator, each rank runs its half of a batch with
``sample_offset = data_parallel_offset(local_batch)``: its logits must be the
rows of the single-process full batch (the ranks draw their own global samples'
masks), and the all-reduced gradients must equal the full batch's.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import estimators
from benchmarks.data_parallel import MULTICAST_OFF
from benchmarks.workload import random_tokens

from conftest import CONFIGS

WORLD = 2
LOCAL_BATCH = 2
SEED = 7
CONFIG = CONFIGS["tiny"]
# current runs batch 1 only; compiled compiles per estimator: ste covers its path. (The Floor is not
# sharding-free by design: every rank's rows take the mask of the rank's own first sample.)
CASES = [(e, i) for e in estimators.ESTIMATORS for i in estimators.IMPLEMENTATIONS if i not in ("current", "compiled")]
CASES += [("ste", "compiled")]


def _step(model, tokens, estimator, implementation, sample_offset):
    logits = model(tokens, estimator=estimator, implementation=implementation, seed=SEED, sample_offset=sample_offset)
    estimators.next_token_loss(logits, tokens).backward()
    return logits.detach()


def _device(backend, rank):
    return torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")


def _rank(rank, backend, port, out):
    device = _device(backend, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        model = estimators.build_model(CONFIG, seed=0, device=device)
        parallel = DistributedDataParallel(model)
        tokens = random_tokens(CONFIG, WORLD * LOCAL_BATCH, seed=3, device=device)
        tokens = tokens[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH]
        results = {}
        for estimator, implementation in CASES:
            model.zero_grad(set_to_none=True)
            logits = _step(parallel, tokens, estimator, implementation, estimators.data_parallel_offset(LOCAL_BATCH))
            results[estimator, implementation] = (logits.cpu(), [p.grad.cpu() for p in model.parameters()])
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BACKENDS = [
    pytest.param("gloo"),
    pytest.param(
        "nccl",
        marks=[pytest.mark.cuda, pytest.mark.skipif(torch.cuda.device_count() < WORLD, reason=f"needs {WORLD} GPUs")],
    ),
]


@pytest.fixture(scope="module", params=BACKENDS)
def ranks(request, tmp_path_factory):
    """(backend, every rank's results); NVLink multicast stays off (benchmarks.data_parallel.MULTICAST_OFF)."""
    backend = request.param
    out = tmp_path_factory.mktemp(f"ddp-{backend}")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in MULTICAST_OFF.items():
            patch.setenv(name, value)
        mp.start_processes(_rank, args=(backend, _free_port(), out), nprocs=WORLD, join=True, start_method="spawn")
    return backend, [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.mark.parametrize(("estimator", "implementation"), CASES)
def test_ddp_gradients_equal_the_full_batch(ranks, estimator, implementation):
    backend, results = ranks
    device = _device(backend, 0)
    model = estimators.build_model(CONFIG, seed=0, device=device)
    tokens = random_tokens(CONFIG, WORLD * LOCAL_BATCH, seed=3, device=device)
    logits = _step(model, tokens, estimator, implementation, sample_offset=0).cpu()
    for rank, rank_results in enumerate(results):
        rank_logits, rank_grads = rank_results[estimator, implementation]
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        torch.testing.assert_close(rank_logits, logits[rows], rtol=1e-5, atol=1e-5)
        for got, (name, parameter) in zip(rank_grads, model.named_parameters(), strict=True):
            torch.testing.assert_close(got, parameter.grad.cpu(), rtol=1e-4, atol=1e-6, msg=name)


def test_the_ranks_draw_their_own_samples(ranks):
    """A rank that forgot its offset would draw rank 0's masks: its logits would differ from its rows' above."""
    backend, results = ranks
    device = _device(backend, 0)
    model = estimators.build_model(CONFIG, seed=0, device=device)
    tokens = random_tokens(CONFIG, WORLD * LOCAL_BATCH, seed=3, device=device)[LOCAL_BATCH:]
    with torch.no_grad():
        without_offset = model(tokens, estimator="ste", implementation="bmm", seed=SEED, sample_offset=0)
    assert not torch.allclose(without_offset.cpu(), results[1]["ste", "bmm"][0], atol=1e-3)


def test_data_parallel_offset():
    assert estimators.data_parallel_offset(16, rank=3) == 48
    assert estimators.data_parallel_offset(16) == 0  # no process group: rank 0
    with pytest.raises(ValueError, match="local_batch"):
        estimators.data_parallel_offset(0)
    with pytest.raises(TypeError, match="rank"):
        estimators.data_parallel_offset(4, rank=1.5)
