"""Peak memory of a piece of work: the CUDA allocator's statistics, or the CPU profiler's memory events.

The suite's ``track_peak_memory`` benchmarks and the GPU profiling probe
both measure through ``peak_bytes``.
"""

from __future__ import annotations

import itertools

import torch


def peak_bytes(run, device: str) -> int:
    """Bytes allocated at the peak of ``run()`` above what was allocated before it, on ``device``.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus
    ``memory_allocated`` before; the result of ``run`` is dropped after the
    device is synchronised. CPU: see ``cpu_peak_bytes``.
    """
    if device != "cuda":
        return cpu_peak_bytes(run)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = run()
    torch.cuda.synchronize()
    del result
    return torch.cuda.max_memory_allocated() - before


def cpu_peak_bytes(run) -> int:
    """Peak live bytes of CPU tensors while ``run()`` executes, from the autograd profiler's memory events.

    Each operator reports the bytes it allocated minus those it freed (its
    self memory); summed in start order they trace the live tensor bytes at
    operator granularity. The peak is taken relative to the start of ``run``.
    The profiler without Kineto gives the same events without Kineto's ~1 s
    start-up in every benchmark process.
    """
    with torch.autograd.profiler.profile(use_kineto=False, profile_memory=True) as prof:
        result = run()
        del result
    events = sorted(prof.function_events, key=lambda event: event.time_range.start)
    live = itertools.accumulate(event.self_cpu_memory_usage for event in events)
    return max(0, max(live, default=0))
