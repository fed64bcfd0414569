"""Data-parallel training steps on one and several devices, measured in processes of their own.

A rank runs the preset's eager training step (forward, backward, an SGD
update) on its ``local_batch`` rows, numbered by their global sample index
(``estimators.data_parallel_offset``), with ste's masks; on several ranks the
model is wrapped in ``DistributedDataParallel`` (NCCL on CUDA, gloo on the
CPU), on one it is the plain model, as a user trains on one device. The
step is timed as a loop gets it: wall time of ``steps`` eager steps between
synchronisations (every rank, then a barrier), the median of ``repeats``.

Scaling efficiency from 1 to N ranks at a local batch is t(1) / t(N): each
rank does the same work, so 1.0 is ideal and the loss is what the all-reduce
and DDP's hooks add.

asv runs one process per benchmark and a rank needs one process each, so
``measure`` starts them with ``torch.distributed.run`` (torchrun), running
this module by its name (``python -m``), and collects rank 0's rows. NVLink multicast stays
off in every rank (``MULTICAST_OFF``): on shared GPU hosts a program using
it can put the GPUs out of service.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# NCCL, PyTorch's symmetric memory and NVSHMEM: no NVLink multicast (the GPU hosts' rule).
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def measure(
    cases,
    worlds=(1, 2),
    device: str = "cuda",
    preset: str = "seed",
    warmup: int = 3,
    steps: int = 10,
    repeats: int = 5,
) -> list[dict]:
    """Time every case on every world size; one row per (case, world).

    Args:
        cases: (implementation, precision, local_batch) triples: an implementation of the package,
            ``grid.FLOOR`` or ``grid.DENSE``; ``fp32`` or ``bf16`` (autocast).
        worlds: the numbers of ranks (devices) to run on.
        device: ``cuda`` (one GPU a rank, NCCL) or ``cpu`` (gloo).
        preset: the package's preset the model is built from.
        warmup, steps, repeats: untimed steps; steps between two synchronisations; timed repeats.

    Returns:
        dicts with the case's fields, ``world``, ``step_ms`` (median wall time of one step),
        ``per_sample_ms`` (``step_ms / (local_batch * world)``) and ``scaling_efficiency``
        (t(1) / t(world), where world 1 was measured); a case that ran out of memory has ``error``
        instead of the times. Any other failure of a rank raises CalledProcessError.

    Example::

        >>> rows = measure([("fused", "fp32", 64)], worlds=(1, 2))  # on a host with 2 GPUs
        >>> {row["world"]: row["scaling_efficiency"] for row in rows}  # 1.0 at world 1 by definition
    """
    options = dict(device=device, preset=preset, warmup=warmup, steps=steps, repeats=repeats)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for world in worlds:
            out = Path(scratch) / f"world{world}.json"
            job = dict(options, cases=[list(case) for case in cases], out=str(out))
            launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"]
            env = {**os.environ, **MULTICAST_OFF, "OMP_NUM_THREADS": "1", "PYTHONPATH": _rank_path()}
            # cwd: python -m puts the working directory first on a rank's path, where a checkout's sources could
            # shadow the package measured.
            subprocess.run([*launch, "-m", __spec__.name, json.dumps(job)], env=env, cwd=scratch, check=True)
            rows += json.loads(out.read_text())
    single = {_case_key(row): row["step_ms"] for row in rows if row["world"] == 1 and "error" not in row}
    for row in rows:
        base = single.get(_case_key(row))
        row["scaling_efficiency"] = base / row["step_ms"] if base and "error" not in row else None
    return rows


def _rank_path() -> str:
    """PYTHONPATH for the ranks: the folder this process imported ``estimators`` from comes first, so the
    ranks measure the same package (installed, or a checkout's sources); then the folder holding this suite,
    so that they import this module as it is imported here."""
    import estimators

    source = str(Path(estimators.__file__).resolve().parents[1])
    suite = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(filter(None, [source, suite, os.environ.get("PYTHONPATH")]))


def _case_key(row: dict) -> tuple:
    return row["implementation"], row["precision"], row["local_batch"]


def _rank_main(job: dict) -> None:
    """One rank of ``measure``'s job (started by torchrun: RANK, WORLD_SIZE and LOCAL_RANK are set)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ["WORLD_SIZE"])
    if job["device"] == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=_device_id(device))
    try:
        rows = [_time_case_or_reason(job, device, world, *case) for case in job["cases"]]
        if int(os.environ["RANK"]) == 0:
            Path(job["out"]).write_text(json.dumps(rows))
    finally:
        if world > 1:
            dist.destroy_process_group()


def _device_id(device):
    return device if device.type == "cuda" else None


def _time_case_or_reason(job, device, world, implementation, precision, local_batch) -> dict:
    """``_time_case``, or its row with ``error`` (out of memory, on every rank) instead of the figures."""
    import torch
    import torch.distributed as dist

    try:
        return _time_case(job, device, world, implementation, precision, local_batch)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        if world > 1:
            dist.barrier()  # the other ranks stopped at the same collective or reach this one
        return dict(
            implementation=implementation,
            precision=precision,
            local_batch=local_batch,
            world=world,
            error="out of memory",
        )


def _time_case(job, device, world, implementation, precision, local_batch) -> dict:
    """Median wall milliseconds of one training step of this rank's ``local_batch`` rows."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import estimators

    from .dense import build_dense
    from .grid import DENSE
    from .workload import random_tokens

    config = estimators.PRESETS[job["preset"]]
    rank = dist.get_rank() if world > 1 else 0
    if implementation == DENSE:
        model = build_dense(config, seed=0).to(device)
        kwargs = lambda number: {}  # noqa: E731
    else:
        model = estimators.build_model(config, device=device, seed=0)
        offset = estimators.data_parallel_offset(local_batch, rank=rank)

        def kwargs(number):
            return dict(estimator="ste", implementation=implementation, seed=number, sample_offset=offset)

    trained = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(trained.parameters(), lr=1e-3)
    tokens = random_tokens(config, local_batch, seed=rank, device=device)

    def step(number):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = estimators.next_token_loss(trained(tokens, **kwargs(number)), tokens)
        loss.backward()
        optimizer.step()

    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if world > 1:
            dist.barrier()

    for number in range(job["warmup"]):
        step(number)
    times = []
    for repeat in range(job["repeats"]):
        synchronise()
        started = time.perf_counter()
        for number in range(job["steps"]):
            step(job["warmup"] + repeat * job["steps"] + number)
        synchronise()
        times.append((time.perf_counter() - started) / job["steps"] * 1e3)
    step_ms = statistics.median(times)
    return dict(
        implementation=implementation,
        precision=precision,
        local_batch=local_batch,
        world=world,
        step_ms=step_ms,
        per_sample_ms=step_ms / (local_batch * world),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="One rank of benchmarks.data_parallel.measure (run by torchrun).")
    parser.add_argument("job", help="the job as JSON")
    _rank_main(json.loads(parser.parse_args().job))
