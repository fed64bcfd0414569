"""Per-sample discrete weight masks in a small transformer, trained with gradient estimators.

Public API (the benchmarks import it at every commit; keep it stable)::

    estimators.ESTIMATORS        # ("ste", "reinmax", "gumbel", "gst", "gumbel_rao")
    estimators.IMPLEMENTATIONS   # ("current", "loop", "einsum", "bmm", "vmap", "fused", "compiled")
    estimators.PRESETS           # {"seed": ModelConfig, "small": ModelConfig}
    d = estimators.estimate(name, logits, uniform, tau=1.0)
    model = estimators.build_model("seed", device="cuda", seed=0)
    logits = model(tokens, estimator="reinmax", implementation="bmm", seed=1234)
    loss = estimators.next_token_loss(logits, tokens)
    offset = estimators.data_parallel_offset(local_batch)  # DDP: sample_offset of this rank's rows

``estimators.FLOOR`` ("shared") is accepted as ``implementation`` too: one
mask for the whole batch, the floor per-sample discreteness is measured against.
"""

from .config import PRESETS, ModelConfig
from .distributed import data_parallel_offset
from .gradients import ESTIMATORS, estimate
from .implementations import FLOOR, IMPLEMENTATIONS
from .model import StochasticTransformer, build_model, next_token_loss

__all__ = [
    "ESTIMATORS",
    "FLOOR",
    "IMPLEMENTATIONS",
    "PRESETS",
    "ModelConfig",
    "StochasticTransformer",
    "build_model",
    "data_parallel_offset",
    "estimate",
    "next_token_loss",
]
