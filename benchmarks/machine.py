"""What this machine benchmarks: its device and preset, how its processes are set up, its timing attributes.

Device and preset are read once, from the environment: CUDA and the ``seed``
preset where a GPU exists, else the CPU and ``small``.
``ESTIMATORS_BENCH_DEVICE`` (cpu, cuda) and ``ESTIMATORS_BENCH_PRESET``
force them; ``python -m tools.run.asv_project`` then names the asv machine
after the preset, so presets never share a series. ``ESTIMATORS_BENCH_TIER``
(default, full) says which cells of the grid run (``grid.tier_skip_reason``);
every tier measures the same series. Importing this module
changes no torch setting: only ``configure_process`` does, and only the
benchmark modules call it.
"""

from __future__ import annotations

import functools
import os

# Fork-safe device check: torch.cuda.is_available() would initialise the CUDA
# driver in asv's forkserver, and CUDA does not survive a fork.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # noqa: E402

from .grid import DEFAULT_PRESET, DEFAULT_TIER, TIERS  # noqa: E402

CPU_THREADS = int(os.environ.get("ESTIMATORS_BENCH_THREADS", "1"))


def _choose(variable: str, default: str, choices) -> str:
    value = os.environ.get(variable, default)
    if value not in choices:
        raise ValueError(f"{variable}={value!r}; valid choices: {', '.join(choices)}")
    return value


DEVICE = _choose("ESTIMATORS_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu", ("cpu", "cuda"))
# Not checked against this commit's presets: a commit without it shows n/a (workload.model), it does not fail
# the import of the whole suite. tools/run/asv_project.py checks it against HEAD's presets.
PRESET = os.environ.get("ESTIMATORS_BENCH_PRESET", DEFAULT_PRESET[DEVICE])
# What the suite leaves out by default (grid.TIERS, grid.tier_skip_reason); the same series in every tier.
TIER = _choose("ESTIMATORS_BENCH_TIER", DEFAULT_TIER, TIERS)
# Counted through NVML (above), so the forkserver stays free of CUDA.
GPUS = torch.cuda.device_count() if DEVICE == "cuda" else 0


@functools.cache
def configure_process() -> None:
    """The suite's process-wide settings: torch's thread count, and the pre-fork work in asv's forkserver.

    Thread count before any parallel work: asv forks every benchmark process
    from one server process, and OpenMP's thread pool does not survive a
    fork. GPU benchmarks do no CPU work worth threads.
    """
    torch.set_num_threads(CPU_THREADS if DEVICE == "cpu" else 1)
    from . import forkserver

    if forkserver.in_asv_forkserver():
        forkserver.prepare(DEVICE)


def synchronize() -> None:
    """Wait for the device: every timed method calls this before it returns."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class TimingAttributes:
    """asv timing attributes: few samples on a noisy CPU, more on a GPU; one round, one call per sample."""

    rounds = 1
    number = 1
    warmup_time = 0.01  # one untimed call: the setup of a sample re-runs before every call anyway
    # (min samples, max samples, max seconds): CUDA-graph replays spread by ~0.1% (docs/BENCHMARKING.md).
    # CPU: 1 s of samples a process (2 s before the default tier), at least 3 (every call over 0.33 s), and up to
    # 10 for a call under 0.1 s (asv's Mann-Whitney test needs 7 samples a side to reach p < 0.002).
    repeat = (5, 20, 0.5) if DEVICE == "cuda" else (3, 10, 1.0)
    timeout = 600
