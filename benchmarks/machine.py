"""How this machine's benchmark processes run: their torch settings, their timing attributes, ``synchronize``.

The machine's device, preset, tier and GPU count are read from the
environment by ``benchmarks/environment.py`` and exported here too, the
one import of the benchmark modules and the tools. Importing this module
changes no torch setting: only ``configure_process`` does, and only the
benchmark modules call it.
"""

from __future__ import annotations

import functools

import torch

from .environment import CPU_THREADS, DEVICE, GPUS, PRESET, TIER

__all__ = ["CPU_THREADS", "DEVICE", "GPUS", "PRESET", "TIER", "TimingAttributes", "configure_process", "synchronize"]


@functools.cache
def configure_process() -> None:
    """The suite's process-wide settings: torch's thread count, and the pre-fork work in asv's forkserver.

    Thread count before any parallel work: asv forks every benchmark process
    from one server process, and OpenMP's thread pool does not survive a
    fork. GPU benchmarks do no CPU work worth threads.
    """
    torch.set_num_threads(CPU_THREADS if DEVICE == "cpu" else 1)
    from . import forkserver  # the tools import this module without the suite's workload

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
