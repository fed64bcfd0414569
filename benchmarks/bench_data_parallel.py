"""Data-parallel training: the step per sample on 1 and 2 GPUs, and the scaling efficiency between them.

What a user's DistributedDataParallel loop gets (benchmarks/data_parallel.py):
eager steps, wall time, ste, each rank's rows numbered by their global
sample index; NCCL with NVLink multicast off. Every figure comes from one
measurement in setup_cache, which starts its own processes (torchrun), one
per GPU. Machines with fewer than ``grid.DATA_PARALLEL_WORLD`` GPUs show n/a.

Eager wall times across processes spread by more than the CUDA gate's factor,
so the default gate leaves this module out (tools/run/gate.py).
"""

import itertools

import estimators

from . import data_parallel, grid, skips
from .machine import DEVICE, GPUS, PRESET, configure_process

configure_process()

WORLDS = (1, grid.DATA_PARALLEL_WORLD)


def _case_skip_reason(implementation: str) -> str | None:
    """What this commit's package lacks for a data-parallel step of ``implementation``, or None."""
    if implementation != grid.DENSE and not hasattr(estimators, "data_parallel_offset"):
        return "data_parallel_offset does not exist at this commit"
    try:
        skips.requires_package_step("ste", implementation)
    except NotImplementedError as missing:
        return str(missing)
    return None


class DataParallel:
    """Step time per sample on 1 and 2 GPUs at the same rows per GPU, and t(2 GPUs) / t(1 GPU)."""

    version = "1"
    timeout = 900
    params = [
        list(grid.DATA_PARALLEL_PRECISIONS),
        list(grid.DATA_PARALLEL_IMPLEMENTATIONS),
        list(grid.DATA_PARALLEL_BATCHES),
    ]
    param_names = ["precision", "implementation", "local_batch"]
    skip_params = list(itertools.product(*params)) if grid.data_parallel_skip_reason(DEVICE, GPUS) else []

    def setup_cache(self):
        """{(precision, implementation, local_batch): {world: row}}, or the reason it has no figures."""
        machine = grid.data_parallel_skip_reason(DEVICE, GPUS)
        if machine:
            return machine
        if PRESET not in getattr(estimators, "PRESETS", {}):
            return f"preset {PRESET!r} does not exist at this commit"
        cases = [
            (implementation, precision, batch)
            for precision, implementation, batch in itertools.product(*self.params)
            if _case_skip_reason(implementation) is None
        ]
        rows = data_parallel.measure(cases, worlds=WORLDS, device=DEVICE, preset=PRESET)
        figures = {}
        for row in rows:
            figures.setdefault((row["precision"], row["implementation"], row["local_batch"]), {})[row["world"]] = row
        return figures

    def setup(self, figures, precision, implementation, local_batch):
        """n/a for a machine without the GPUs, a commit without what the step needs, or a case that ran out
        of memory (asv skips only from setup)."""
        skips.skip_if(figures if isinstance(figures, str) else _case_skip_reason(implementation))
        for row in figures[precision, implementation, local_batch].values():
            skips.skip_if(row.get("error"))

    def track_time_per_sample_1_gpu(self, figures, precision, implementation, local_batch):
        """Milliseconds of a one-GPU step (no DDP) per sample."""
        return figures[precision, implementation, local_batch][1]["per_sample_ms"]

    def track_time_per_sample_2_gpus(self, figures, precision, implementation, local_batch):
        """Milliseconds of a two-GPU DDP step per global sample."""
        return figures[precision, implementation, local_batch][grid.DATA_PARALLEL_WORLD]["per_sample_ms"]

    def track_inverse_scaling_efficiency(self, figures, precision, implementation, local_batch):
        """t(2 GPUs) / t(1 GPU) at the same rows per GPU: 1 / scaling efficiency, 1.0 ideal, lower is better."""
        return 1 / figures[precision, implementation, local_batch][grid.DATA_PARALLEL_WORLD]["scaling_efficiency"]

    track_time_per_sample_1_gpu.unit = track_time_per_sample_2_gpus.unit = "ms"
    track_inverse_scaling_efficiency.unit = "ratio"
