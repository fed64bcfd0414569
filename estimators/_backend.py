"""Where the Triton kernels run: on CUDA devices, and anywhere under Triton's interpreter."""

from __future__ import annotations

import functools

import torch

from ._interpreter import INTERPRETED

__all__ = ["INTERPRETED", "triton_kernels"]


def triton_kernels(device: torch.device | str):
    """The ``estimators.kernels`` package if its kernels can run on ``device``, else None.

    That is a CUDA device with Triton installed, or any device when
    TRITON_INTERPRET=1 (Triton's CPU interpreter: how CI checks the kernels).
    """
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    if device_type != "cuda" and not INTERPRETED:
        return None
    return _import_kernels()


@functools.cache
def _import_kernels():
    # Imported here, on first use, because Triton is an optional dependency: without it the package runs its
    # torch paths, and importing ``estimators`` must not fail.
    try:
        from . import kernels
    except ImportError:
        return None
    return kernels
