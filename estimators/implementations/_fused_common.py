"""What both backends of ``fused`` share in their backward passes."""

from __future__ import annotations

import torch


def refuse_double_backward() -> None:
    """Raise where the backward runs with create_graph=True: second derivatives would need the kernels' own
    backward."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "implementation 'fused' does not support double backward (create_graph=True); "
            "use 'bmm', 'einsum', 'vmap' or 'loop' for second derivatives"
        )


def bias_grad(dy: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """dL/dbias = sum over rows and time of dy, accumulated in fp32 (fp64 for fp64 dy), in the bias's dtype."""
    return dy.sum((0, 1), dtype=torch.promote_types(dy.dtype, torch.float32)).to(bias.dtype)
