"""What an eager training step costs the host: kernel launches and host time per step, on a GPU.

For each precision, implementation and batch: the eager step's wall time
(forward and backward launched from Python, then a synchronisation; the
suite's ``EagerStep``), the host's share of it (the time until the step's
Python returns, started on an idle device), and the CUDA kernel launches per
step counted by torch.profiler; for every implementation but Dense, the eager
step again with the forward's value checks (``step_value_check.StepValueCheck``, which
reads two reductions back) switched off, which says what the checks cost a
loop. The eager steps of one batch and precision are timed round-robin, and
each one's ratio to the Dense step is taken round by round. Uses only
the package's public API and ``benchmarks.dense``, so it also measures an
older checkout (run it from that checkout's root with PYTHONPATH=.):

    python tools/probes/host_cost.py --out $OUT/host-new.json
    (cd old-checkout && PYTHONPATH=. python /path/to/tools/probes/host_cost.py --out $OUT/host-old.json)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import estimators
from benchmarks.dense import build_dense

LAUNCHES = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"}


def make_step(implementation: str, batch: int, precision: str):
    config = estimators.PRESETS["seed"]
    tokens = torch.randint(0, config.vocab_size, (batch, config.seq_len), device="cuda")
    if implementation == "dense":
        model = build_dense(config).cuda()
        forward = lambda: model(tokens)  # noqa: E731
    else:
        model = estimators.build_model("seed", device="cuda")
        forward = lambda: model(tokens, estimator="ste", implementation=implementation, seed=1234)  # noqa: E731
    parameters = list(model.parameters())
    autocast = precision == "bf16"

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = estimators.next_token_loss(forward(), tokens)
        torch.autograd.grad(loss, parameters)

    return step


def median_ms(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def launches_per_step(step, steps: int = 3) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    return sum(e.count for e in prof.key_averages() if e.key in LAUNCHES) / steps


class _Unchecked:
    """``step_value_check.StepValueCheck`` that checks nothing."""

    def __init__(self, tokens, *args, **kwargs):
        self.safe_tokens = tokens

    def result(self):
        pass


@contextlib.contextmanager
def value_checks_off():
    """The model's forward without its value checks: ``StepValueCheck`` (in ``estimators.step_value_check``, or
    ``estimators._checks`` in older checkouts), or ``check_step_values`` before it."""
    import importlib.util

    from estimators import _checks

    owner = (
        importlib.import_module("estimators.step_value_check")
        if importlib.util.find_spec("estimators.step_value_check")
        else _checks
    )
    name, off = ("StepValueCheck", _Unchecked) if hasattr(owner, "StepValueCheck") else ("check_step_values", None)
    saved = getattr(owner, name)
    setattr(owner, name, off or (lambda *args, **kwargs: None))
    try:
        yield
    finally:
        setattr(owner, name, saved)


def measure_group(implementations, batch: int, precision: str, repeats: int) -> list[dict]:
    """One row per implementation at (batch, precision). The eager steps of every implementation (and of all
    but Dense without the value checks) are timed round-robin, one step each a round, so that host noise, which drifts
    over seconds, falls on all of them alike; each row's ``eager_over_dense`` is the median of the rounds'
    ratios to the Dense step timed in the same round."""
    steps = {implementation: make_step(implementation, batch, precision) for implementation in implementations}
    for step in steps.values():
        for _ in range(3):
            step()

    def synchronised(step):
        return lambda: (step(), torch.cuda.synchronize())

    timed = {name: synchronised(step) for name, step in steps.items()}
    rounds = {name: [] for name in timed}
    unchecked = {name: [] for name in timed if name != "dense"}
    for round_index in range(repeats):
        for name, run in timed.items():
            pair = [(rounds[name], contextlib.nullcontext)]
            if name in unchecked:  # which goes first alternates: the second of a pair runs on warmer caches
                pair.append((unchecked[name], value_checks_off))
            for times, context in pair[:: -1 if round_index % 2 else 1]:
                with context():
                    times.append(median_ms(run, 1))
    rows = []
    for name, step in steps.items():
        row = dict(implementation=name, batch=batch, precision=precision)
        row["eager_ms"] = statistics.median(rounds[name])
        if "dense" in rounds:
            ratios = [t / d for t, d in zip(rounds[name], rounds["dense"], strict=True)]
            row["eager_over_dense"] = statistics.median(ratios)
        if name in unchecked:
            row["eager_ms_without_checks"] = statistics.median(unchecked[name])
        row["host_ms"] = median_ms(step, repeats)
        row["launches"] = launches_per_step(step)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--implementations", nargs="+", default=["dense", "shared", "fused", "bmm"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    # Plain checks, no import of the tools: this probe also runs against older checkouts' packages.
    if not torch.cuda.is_available():
        parser.error("measures CUDA launches and needs a CUDA device (torch.cuda.is_available() is False)")
    if min(args.batches) < 1 or args.repeats < 1:
        parser.error("--batches and --repeats must be integers >= 1")
    rows = []
    for precision in args.precisions:
        for batch in args.batches:
            for row in measure_group(args.implementations, batch, precision, args.repeats):
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(device=torch.cuda.get_device_name(), rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
