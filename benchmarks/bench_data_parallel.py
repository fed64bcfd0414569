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
from .machine import DEVICE, PRESET, configure_process

configure_process()

WORLDS = (1, grid.DATA_PARALLEL_WORLD)


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

    @staticmethod
    def cell(precision, implementation, local_batch):
        return skips.Cell("data_parallel", "ste", implementation, local_batch, precision)

    skip_params = skips.skip_params(params, cell)

    def setup_cache(self):
        """{(precision, implementation, local_batch): {world: row}, or the reason the case has none}, or the
        reason the machine has no figures."""
        combinations = list(itertools.product(*self.params))
        machine = skips.skip_reason(self.cell(*combinations[0]), commit=False)  # the same for every cell
        if machine:
            return machine
        if PRESET not in getattr(estimators, "PRESETS", {}):
            return f"preset {PRESET!r} does not exist at this commit"
        figures = {}
        for combination in combinations:
            reason = skips.skip_reason(self.cell(*combination))
            if reason is not None:
                figures[combination] = reason
        cases = [(i, p, b) for p, i, b in combinations if (p, i, b) not in figures]  # measure's order of fields
        rows = data_parallel.measure(cases, worlds=WORLDS, device=DEVICE, preset=PRESET)
        for row in rows:
            figures.setdefault((row["precision"], row["implementation"], row["local_batch"]), {})[row["world"]] = row
        return figures

    def setup(self, figures, precision, implementation, local_batch):
        """n/a for a machine without the GPUs, a commit without what the step needs, or a case that ran out
        of memory (asv skips only from setup)."""
        skips.skip_if(figures if isinstance(figures, str) else None)
        case = figures[precision, implementation, local_batch]
        skips.skip_if(case if isinstance(case, str) else None)
        for row in case.values():
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
