"""What this machine benchmarks, read once from the environment: device, preset, tier, GPUs and CPU threads.

CUDA and the ``seed`` preset where a GPU exists, else the CPU and ``small``.
``ESTIMATORS_BENCH_DEVICE`` (cpu, cuda) and ``ESTIMATORS_BENCH_PRESET``
force them; ``python -m tools.run.asv_project`` then names the asv machine
after the preset, so presets never share a series. ``ESTIMATORS_BENCH_TIER``
(default, full) says which cells of the grid run (``skips.RULES``); every
tier measures the same series. The bottom of the suite: it imports only the
grid, and importing it changes no torch setting.
"""

from __future__ import annotations

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
# What the suite leaves out by default (grid.TIERS, skips.RULES); the same series in every tier.
TIER = _choose("ESTIMATORS_BENCH_TIER", DEFAULT_TIER, TIERS)
# Counted through NVML (above), so the forkserver stays free of CUDA.
GPUS = torch.cuda.device_count() if DEVICE == "cuda" else 0
