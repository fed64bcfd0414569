"""Where the Triton kernels run: on CUDA devices, and anywhere under Triton's interpreter."""

from __future__ import annotations

import os

import torch


def triton_kernels(device: torch.device | str):
    """The ``triton_kernels`` module if its kernels can run on ``device``, else None.

    That is a CUDA device with Triton installed, or any device when
    TRITON_INTERPRET=1 (Triton's CPU interpreter: how CI checks the kernels).
    """
    if torch.device(device).type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return None
    try:
        from . import triton_kernels as kernels
    except ImportError:
        return None
    return kernels
