"""Data-parallel scaling: step time per sample on 1 and 2 ranks (DistributedDataParallel), a development probe.

Each rank runs the seed preset's training step (forward, backward with DDP's all-reduce, an SGD update)
on its own ``local_batch`` rows, numbered by ``estimators.data_parallel_offset``; a step is timed over
``--steps`` eager steps after warm-up, synchronised, on every rank (rank 0 reports). Scaling
efficiency from 1 to N ranks at a local batch is t(1) / t(N): the same work a rank, so 1.0 is ideal.
Writes JSON rows to --out. Not part of the asv suite (asv runs one process a benchmark; this needs
several): run it on a multi-GPU host, NCCL, NVLink multicast left off (NCCL_NVLS_ENABLE=0):

    NCCL_NVLS_ENABLE=0 python -m tools.probes.ddp_scaling --out $OUT/ddp.json
    python -m tools.probes.ddp_scaling --device cpu --preset small --local-batches 2 --steps 2 --out /tmp/ddp.json

Not yet run on GPUs (see docs/DESIGN.md, section 11).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import estimators
from benchmarks.dense import build_dense
from benchmarks.workload import random_tokens


def _rank_main(rank, world, port, args, cases, out_path):
    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    device = torch.device(f"cuda:{rank}") if args.device == "cuda" else torch.device("cpu")
    if args.device == "cuda":
        torch.cuda.set_device(device)
    try:
        rows = [_time_case(args, device, world, *case) for case in cases]
        if rank == 0:
            Path(out_path).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def _time_case(args, device, world, implementation, precision, local_batch) -> dict:
    """Median milliseconds of one DDP training step of this rank's ``local_batch`` rows."""
    config = estimators.PRESETS[args.preset]
    if implementation == "dense":
        model = build_dense(config, seed=0).to(device)

        def forward(tokens, number):
            return parallel(tokens)

    else:
        model = estimators.build_model(config, device=device, seed=0)
        offset = estimators.data_parallel_offset(local_batch)

        def forward(tokens, number):
            return parallel(tokens, estimator="ste", implementation=implementation, seed=number, sample_offset=offset)

    parallel = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(parallel.parameters(), lr=1e-3)
    tokens = random_tokens(config, local_batch, seed=dist.get_rank(), device=device)

    def step(number):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = estimators.next_token_loss(forward(tokens, number), tokens)
        loss.backward()
        optimizer.step()

    for number in range(args.warmup):
        step(number)
    times = []
    for repeat in range(args.repeats):
        _synchronise(device)
        dist.barrier()
        started = time.perf_counter()
        for number in range(args.steps):
            step(args.warmup + repeat * args.steps + number)
        _synchronise(device)
        times.append((time.perf_counter() - started) / args.steps * 1e3)
    step_ms = statistics.median(times)
    return dict(
        implementation=implementation,
        precision=precision,
        local_batch=local_batch,
        world=world,
        step_ms=step_ms,
        per_sample_ms=step_ms / local_batch / world,
    )


def _synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--preset", choices=tuple(estimators.PRESETS), default="seed")
    parser.add_argument("--implementations", nargs="+", default=["fused", "bmm", estimators.FLOOR, "dense"])
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--local-batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    available = torch.cuda.device_count() if args.device == "cuda" else os.cpu_count()
    cases = [(i, p, b) for i in args.implementations for p in args.precisions for b in args.local_batches]
    rows = []
    for world in args.worlds:
        if world > available:
            print(f"world {world}: n/a ({available} devices)")
            continue
        part = args.out.with_suffix(f".world{world}.json")
        launch = (world, _free_port(), args, cases, str(part))
        mp.start_processes(_rank_main, args=launch, nprocs=world, join=True, start_method="spawn")
        rows += json.loads(part.read_text())
        part.unlink()
    single = {(r["implementation"], r["precision"], r["local_batch"]): r["step_ms"] for r in rows if r["world"] == 1}
    for row in rows:
        base = single.get((row["implementation"], row["precision"], row["local_batch"]))
        row["scaling_efficiency"] = base / row["step_ms"] if base else None
        print(json.dumps(row))
    args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
