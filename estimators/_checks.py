"""Input checks shared by the public entry points: every error names the valid choices."""

from __future__ import annotations

import math
from collections.abc import Collection

import torch


def check_choice(kind: str, value: object, choices: Collection[str]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; valid choices: {', '.join(map(repr, choices))}")


def check_tau(tau: object) -> float:
    """Return ``tau`` as a float; it must be a finite number > 0."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    return float(tau)


def check_seed(seed: object) -> int:
    """Return ``seed``; it must be an int in [0, 2**64)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    return seed


def check_logits_and_noise(logits: torch.Tensor, uniform: torch.Tensor) -> None:
    """Logits [..., K] (floating, K >= 2, no NaN) and uniform noise of the same shape, dtype and device."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {_describe(logits)}")
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have K >= 2 categories on the last axis, got shape {tuple(logits.shape)}")
    if not isinstance(uniform, torch.Tensor):
        raise TypeError(f"uniform must be a tensor, got {_describe(uniform)}")
    if uniform.shape != logits.shape:
        raise ValueError(f"uniform must have the logits' shape {tuple(logits.shape)}, got {tuple(uniform.shape)}")
    if uniform.dtype != logits.dtype:
        raise TypeError(f"uniform must have the logits' dtype {logits.dtype}, got {uniform.dtype}")
    if uniform.device != logits.device:
        raise ValueError(f"uniform must be on the logits' device {logits.device}, got {uniform.device}")
    if torch.isnan(logits).any():
        raise ValueError("logits contain NaN")
    if not ((uniform > 0) & (uniform < 1)).all():
        raise ValueError("uniform noise must lie in the open interval (0, 1)")


def check_tokens(tokens: object, vocab_size: int, seq_len: int) -> None:
    """Token ids: an int64 or int32 tensor [batch, time], 1 <= time <= seq_len, ids in [0, vocab_size).

    The id range needs a device synchronisation; while a CUDA graph is being
    captured (where synchronising is illegal) only dtype and shape are checked.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens must be a torch.int64 or torch.int32 tensor, got {_describe(tokens)}")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have rank 2 [batch, time], got shape {tuple(tokens.shape)}")
    batch, time = tokens.shape
    if batch < 1 or not 1 <= time <= seq_len:
        raise ValueError(f"tokens must be [batch >= 1, 1 <= time <= {seq_len}], got shape {tuple(tokens.shape)}")
    if tokens.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    low, high = (int(v) for v in torch.aminmax(tokens))  # one reduction, one synchronisation
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got min {low}, max {high}")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype}"
    return type(value).__name__
