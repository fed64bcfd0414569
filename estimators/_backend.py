"""Where the Triton kernels run: on CUDA devices, and anywhere under Triton's interpreter."""

from __future__ import annotations

import functools
import os

import torch

# Triton runs its kernels on the CPU, in numpy, instead of compiling them (how CI checks them).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def triton_kernels(device: torch.device | str):
    """The ``triton_kernels`` module if its kernels can run on ``device``, else None.

    That is a CUDA device with Triton installed, or any device when
    TRITON_INTERPRET=1 (Triton's CPU interpreter: how CI checks the kernels).
    """
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    if device_type != "cuda" and not INTERPRETED:
        return None
    return _import_kernels()


@functools.cache
def _import_kernels():
    try:
        from . import triton_kernels as kernels
    except ImportError:
        return None
    return kernels
