"""The precisions a training step is benchmarked in (``grid.PRECISIONS``), and how each is switched on.

- ``fp32``: float32 parameters and activations, TF32 off: the reference, and
  the precision of the ``bench_training`` benchmarks.
- ``bf16``: float32 parameters, the step under ``torch.autocast(dtype=torch.bfloat16)``, TF32 off.
- ``tf32``: float32, with ``torch.backends.cuda.matmul.allow_tf32`` (and cuDNN's) on.

The forward runs inside ``forward_precision``; the backward inside
``matmul_precision`` (autocast is a forward-pass setting: the backward's
dtypes follow the forward's).
"""

from __future__ import annotations

import contextlib

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


@contextlib.contextmanager
def matmul_precision(precision: str):
    """TF32 on for ``tf32``, off otherwise; the previous switches are restored on exit."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def forward_precision(precision: str, device: str):
    """``matmul_precision``, and autocast to the precision's dtype where it has one."""
    dtype = AUTOCAST_DTYPES.get(precision)
    autocast = contextlib.nullcontext() if dtype is None else torch.autocast(device, dtype=dtype)
    with matmul_precision(precision), autocast:
        yield
