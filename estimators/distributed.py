"""Data-parallel training: every rank numbers its rows by their global sample index.

The masks of a row depend only on (seed, sample index, layer, weight)
(``noise.py``), so if each rank passes ``sample_offset = rank * local_batch``,
sample i of the global batch draws the same masks on any number of ranks, and
with DistributedDataParallel's averaged gradients (equal local batches, a mean
loss) the all-reduced gradient equals one process's gradient of the whole
batch: a run's gradients do not depend on how the batch is sharded. The seed
is the step's, the same on every rank (an int, or a device seed advanced in
step on every rank).
"""

from __future__ import annotations

import torch.distributed as dist

from . import _checks


def data_parallel_offset(local_batch: int, rank: int | None = None) -> int:
    """The ``sample_offset`` of this rank's rows: ``rank * local_batch``.

    Args:
        local_batch: rows per rank, the same on every rank, an int >= 1.
        rank: this process's rank; None: ``torch.distributed.get_rank()`` (0 where no process group
            is initialised).

    Returns:
        the global sample index of this rank's first row; ValueError where the rank's rows would pass
        the noise's 2**32 sample indices.

    Example::

        >>> model = DistributedDataParallel(build_model("seed", device=f"cuda:{rank}"))
        >>> offset = data_parallel_offset(tokens.shape[0])
        >>> logits = model(tokens, estimator="ste", implementation="fused", seed=step, sample_offset=offset)
    """
    local_batch = _checks.check_int("local_batch", local_batch, 1)
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    rank = _checks.check_int("rank", rank, 0)
    if (rank + 1) * local_batch > 2**32:
        raise ValueError(
            f"rank {rank} x local_batch {local_batch}: its rows' sample indices would pass 2**32, the noise's "
            "sample counter (the model's sample_offset must lie in [0, 2**32 - batch])"
        )
    return rank * local_batch
