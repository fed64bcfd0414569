"""The suite's parameter grid and the tables of what runs where: data only, no torch, no side effects.

The values below are the benchmarks' parameter values, and asv keys every
series on them: they are only appended to, never renamed or removed (a
removed value ends its series on the dashboard). The grid is the same on
every machine (asv publishes one benchmarks.json for all of them); what a
machine does not run is skipped by the rules of benchmarks/skips.py, which read
these tables; asv shows a skip as n/a. The report and the developer probes read
the same tables.
"""

from __future__ import annotations

ESTIMATORS = ("ste", "reinmax", "gumbel", "gst", "gumbel_rao")
IMPLEMENTATIONS = ("current", "loop", "einsum", "bmm", "vmap", "fused", "compiled")
FLOOR = "shared"  # the implementation name of the one-mask-for-the-batch floor
BATCHES = (1, 2, 8, 16, 32, 64)
SEED = 1234  # the masks' seed in every timed step
DEFAULT_PRESET = {"cuda": "seed", "cpu": "small"}

# What runs where: (implementation or "*", device or "*") -> the batches it runs at, and why.
RUNS_AT = {
    # The package's single-sample path: it raises for any other batch (its check_batch).
    ("current", "*"): ((1,), "current is the single-sample path and runs batch 1 only"),
    # torch.compile costs 5-20 s per process: one batch size is the baseline.
    ("compiled", "*"): ((16,), "compiled is benchmarked at batch 16 (each process compiles)"),
    # inductor's CPU compile costs more per process than the whole CPU matrix can afford.
    ("compiled", "cpu"): ((), "compiled is benchmarked on CUDA only (inductor's CPU compile costs more per process)"),
    # 32 and 64 would cost minutes per commit on a 2-core CPU.
    ("*", "cpu"): ((1, 2, 8, 16), "batches 32 and 64 are not benchmarked on CPU"),
}


# Estimators added after the first history run on the implementations users choose between (the Floor, fused
# and bmm) and not on the four that only materialise differently: two estimators x four implementations
# would add minutes to every CPU commit for series that track bmm's.
ESTIMATOR_IMPLEMENTATIONS = {"gst": ("bmm", "fused", FLOOR), "gumbel_rao": ("bmm", "fused", FLOOR)}


# Tiers (``ESTIMATORS_BENCH_TIER``, read by benchmarks/environment.py). The default tier is what `make bench` and the
# GPU history run; ``full`` adds back what the default leaves out. Leaving a cell out never changes a series: the
# parameter lists stay whole, and a cell outside the tier is skipped (asv: n/a) until a full run measures it.
TIERS = ("default", "full")
DEFAULT_TIER = "default"
# The default tier's batches of the implementations that materialise every sample's weights, per device and keyed
# by implementation, or by (estimator, implementation) where one estimator differs: their cost grows linearly with
# the batch (batch 8 -> 16 is x1.8-2.3 for each of them on the 2-core CPU), so batch 1 (the per-call overhead,
# against `current`) and the suite's reference batch (64 on CUDA, the largest; 16 on the CPU) characterise them;
# the other batches interpolate. bmm keeps every batch on CUDA, where fused must beat it. On the CPU only bmm keeps
# batch 16: loop, einsum and vmap do bmm's work there (their batch-16 steps are within 1.2x of bmm's) at a second
# or more a call, and gumbel_rao's bmm step at batch 16 (its M conditional draws materialised) takes about 5 s a
# call; together they were a third of a CPU commit's run.
DEFAULT_TIER_BATCHES = {
    "cuda": {"loop": (1, 16, 64), "einsum": (1, 16, 64), "vmap": (1, 16, 64)},
    "cpu": {"loop": (1,), "einsum": (1,), "vmap": (1,), "bmm": (1, 16), ("gumbel_rao", "bmm"): (1,)},
}


# Precisions (benchmarks/precision.py). The fp32 series are bench_training's (TF32 off); the other
# precisions have classes of their own (bench_precision), so no series changes meaning.
PRECISIONS = ("fp32", "bf16", "tf32")
REDUCED_PRECISIONS = ("bf16", "tf32")
DENSE = "dense"  # the implementation name of the plain model, no masks (bench_dense)

# The reduced-precision grid, pruned to fit the GPU suite's time budget (docs/BENCHMARKING.md):
# fused for every estimator, bmm and the Floor for ste, at batch 16 and 64, on CUDA.
REDUCED_IMPLEMENTATIONS = ("bmm", "fused")
REDUCED_BATCHES = (16, 64)
# Dense: every precision at batch 1, 16 and 64 on CUDA; fp32 at batch 1 and 16 on CPU.
DENSE_RUNS_AT = {"cuda": {precision: (1, 16, 64) for precision in PRECISIONS}, "cpu": {"fp32": (1, 16)}}


# Eager steps (bench_eager): what a training loop gets, forward and backward launched from Python, beside the
# replays of bench_training; ste, on CUDA (every CPU timing is eager already).
EAGER_PRECISIONS = ("fp32", "bf16")
EAGER_IMPLEMENTATIONS = IMPLEMENTATIONS + (FLOOR, DENSE)
EAGER_BATCHES = (1, 16)

# How cost grows with the model (bench_width): the seed preset at other widths (d_ff = 4 d_model), fp32, ste,
# replays, on CUDA.
WIDTHS = (512, 1024, 2048)
WIDTH_IMPLEMENTATIONS = ("fused", FLOOR, DENSE, "bmm")
WIDTH_BATCHES = (16, 64, 256)
# bmm at batch 256 would hold 48 GB at width 1024 and take minutes to warm up; the width targets compare fused
# with the Floor, which run there.
WIDTH_LARGE_BATCH_IMPLEMENTATIONS = ("fused", FLOOR, DENSE)


# The default tier's eager steps of the single-sample path and the reference implementations: fp32 only. Their
# eager steps are host-bound in any precision, and bf16 autocast only adds casts to what they launch; fused, bmm,
# compiled, the Floor and Dense, what users train with, keep both precisions.
EAGER_DEFAULT_TIER_PRECISIONS = {"current": ("fp32",), "loop": ("fp32",), "einsum": ("fp32",), "vmap": ("fp32",)}


# Ratios measured in one process (bench_ratios): the fused step of ste over the Dense model's step and over the
# Floor's, in interleaved rounds; "replay" times CUDA-graph replays of forward and backward (device time, CUDA
# only), "eager" the step as a training loop launches it. A ratio of two steps timed side by side cancels what
# moves both (the host, its clocks, the other tenants of a VM): the series that holds across hosts.
RATIO_TIMINGS = ("replay", "eager")
RATIO_BATCHES = (1, 16, 64)
RATIO_RUNS_AT = {
    "cuda": {
        ("replay", "fp32"): (16, 64),
        ("replay", "bf16"): (16, 64),
        ("replay", "tf32"): (16, 64),
        ("eager", "fp32"): (16,),
        ("eager", "bf16"): (16,),
    },
    "cpu": {("eager", "fp32"): (1, 16)},  # the CPU's batches that Dense runs at too (DENSE_RUNS_AT)
}


# Estimator quality (bench_quality, every machine): temperatures, and the problems' sizes (benchmarks/quality.py).
QUALITY_TAUS = (0.5, 1.0, 2.0)

# Data-parallel training (bench_data_parallel): eager steps on 1 and DATA_PARALLEL_WORLD GPUs, ste, on hosts with
# that many GPUs.
DATA_PARALLEL_WORLD = 2
DATA_PARALLEL_IMPLEMENTATIONS = ("fused", "bmm", FLOOR, DENSE)
DATA_PARALLEL_PRECISIONS = ("fp32", "bf16")
DATA_PARALLEL_BATCHES = (16, 64)  # rows per GPU
