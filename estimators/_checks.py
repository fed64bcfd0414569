"""Input checks shared by the public entry points: every error names the valid choices."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Collection, Sequence

import torch


def check_choice(kind: str, value: object, choices: Collection[str]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; valid choices: {', '.join(map(repr, choices))}")


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int (any integer type: Python, numpy, a 0-d integer tensor; not bool) in [low, high]."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})") from None
    if number < low or (high is not None and number > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bounds}, got {number}")
    return number


def check_tau(tau: object) -> float:
    """Return ``tau`` as a float; it must be a finite real number > 0 (Python or numpy, not bool)."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    return float(tau)


def check_seed(seed: object, device: torch.device | None = None) -> int | torch.Tensor:
    """Return ``seed`` as an int in [0, 2**64) (any integer type, not bool), or keep it in device memory.

    Where ``device`` is a CUDA device, a 0-d int64 tensor on it is returned as
    it is (its 64 bits are the seed, ``noise.Seed``): the kernels read it when
    they run, and reading it here would synchronise. A CPU int64 tensor is read
    as an int, its 64 bits taken as unsigned.
    """
    if isinstance(seed, torch.Tensor) and seed.dtype == torch.int64 and seed.dim() == 0:
        if seed.device.type == "cpu":
            return int(seed) & (2**64 - 1)
        if device is None or seed.device != device:
            raise ValueError(f"a seed tensor must be on the model's device {device}, got {seed.device}")
        return seed
    try:
        return check_int("seed", seed, 0, 2**64 - 1)
    except (TypeError, ValueError):
        raise ValueError(
            f"seed must be an int in [0, 2**64) or a 0-d torch.int64 tensor on the model's device, got {seed!r}"
        ) from None


def check_codebook(codebook: object, num_categories: int) -> tuple[float, ...]:
    """Return the codebook as floats: a sequence of ``num_categories`` finite real numbers."""
    if isinstance(codebook, (str, bytes)) or not isinstance(codebook, Sequence):
        raise TypeError(f"codebook must be a sequence of numbers, got {codebook!r}")
    if len(codebook) != num_categories:
        raise ValueError(f"codebook needs num_categories={num_categories} values, got {len(codebook)}")
    if not all(isinstance(c, numbers.Real) and not isinstance(c, bool) and math.isfinite(c) for c in codebook):
        raise ValueError(f"codebook values must be finite real numbers, got {codebook!r}")
    return tuple(float(c) for c in codebook)


def check_tau_scale(largest_logit: float, tau: float, dtype: torch.dtype) -> None:
    """Raise unless logits / tau stays finite in ``dtype`` (``largest_logit``: max |logit|)."""
    limit = torch.finfo(dtype).max
    if largest_logit / tau > limit:
        raise ValueError(
            f"tau={tau!r} is too small for logits of magnitude {largest_logit:.3g}: logits / tau overflows "
            f"{dtype} (max {limit:.3g}); use tau >= {largest_logit / limit:.3g}"
        )


def check_logits_and_noise(logits: torch.Tensor, uniform: torch.Tensor, tau: float) -> None:
    """Logits [..., K] (floating, K >= 2, finite, logits / tau finite); noise in (0, 1), their shape, dtype, device."""
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
    if logits.numel() == 0:
        return
    # One pass over the logits (max |logit| is NaN or inf where any is) and one synchronisation.
    largest, noise_inside = torch.stack(
        [logits.detach().abs().amax().float(), ((uniform > 0) & (uniform < 1)).all().float()]
    ).tolist()
    if not math.isfinite(largest):
        raise ValueError("logits must be finite (no NaN or inf); mask a category with a large negative logit")
    if not noise_inside:
        raise ValueError("uniform noise must lie in the open interval (0, 1)")
    check_tau_scale(largest, tau, logits.dtype)


def check_tokens(tokens: object, vocab_size: int, seq_len: int, device: torch.device) -> None:
    """Token ids: an int64 or int32 tensor [batch, time] on ``device`` (the model's), 1 <= time <= seq_len.

    The id range is checked by ``check_step_values``, with the values that need the device.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens must be a torch.int64 or torch.int32 tensor, got {_describe(tokens)}")
    if tokens.device.type == "meta" or device.type == "meta":
        raise ValueError("the model runs on real devices only: tokens and parameters must not be on 'meta'")
    if tokens.device != device:
        raise ValueError(f"tokens are on {tokens.device}, the model on {device}: move one to the other")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have rank 2 [batch, time], got shape {tuple(tokens.shape)}")
    batch, time = tokens.shape
    if batch < 1 or not 1 <= time <= seq_len:
        raise ValueError(f"tokens must be [batch >= 1, 1 <= time <= {seq_len}], got shape {tuple(tokens.shape)}")


def check_step_values(tokens: torch.Tensor, vocab_size: int, mask_logits: list[torch.Tensor], tau: float) -> None:
    """Token ids in [0, vocab_size); mask logits finite, and logits / tau finite in fp32 (the estimators' dtype).

    One device synchronisation for all of it. While a CUDA graph is being
    captured (where synchronising is illegal) nothing is checked.
    """
    if tokens.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    low, high = torch.aminmax(tokens)
    with torch.no_grad():  # max |logit| of every layer; NaN and inf propagate
        largest = torch.stack(torch._foreach_norm(mask_logits, float("inf"))).amax()
    low, high, largest = torch.stack([low.double(), high.double(), largest.double()]).tolist()
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got min {low:.0f}, max {high:.0f}")
    if not math.isfinite(largest):
        raise ValueError("the model's mask logits are not finite (NaN or inf): masks cannot be drawn from them")
    check_tau_scale(largest, tau, torch.float32)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype}"
    return type(value).__name__
