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
    """Return ``value`` as an int (any integer type: Python, numpy, a 0-d integer tensor; no bool) in [low, high]."""
    try:
        if isinstance(value, bool) or (
            isinstance(value, torch.Tensor)
            and (value.dim() != 0 or value.dtype == torch.bool or value.is_floating_point() or value.is_complex())
        ):
            raise TypeError  # operator.index takes a one-element tensor of any shape, and True as 1
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


_INTEGER_DTYPES = (
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint64,
    torch.uint32,
    torch.uint16,
    torch.uint8,
)


def check_seed(seed: object, device: torch.device | str | None = None) -> int | torch.Tensor:
    """Return ``seed`` as an int in [0, 2**64), or keep it in device memory; else ValueError (this message only).

    Accepted: any integer (Python, numpy, a 0-d numpy array; not bool) in [0, 2**64); a 0-d integer tensor
    (not bool) on the CPU, read as an int: an int64 tensor's 64 bits taken as unsigned (two's complement, so
    -1 is 2**64 - 1), any other dtype's value, which must lie in [0, 2**64). Where ``device`` is a CUDA
    device, a 0-d int64 tensor on it is returned as it is (its 64 bits are the seed, ``noise.Seed``): the
    kernels read it when they run, and reading it here would synchronise.
    """
    if isinstance(seed, torch.Tensor):
        return _check_tensor_seed(seed, device)
    try:
        return check_int("seed", seed, 0, 2**64 - 1)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(_seed_message(seed)) from None


def _check_tensor_seed(seed: torch.Tensor, device) -> int | torch.Tensor:
    if seed.dim() != 0 or seed.dtype not in _INTEGER_DTYPES:
        raise ValueError(_seed_message(seed))
    if seed.device.type == "cpu":
        value = int(seed.item())
        if seed.dtype == torch.int64:
            return value & (2**64 - 1)
        if value < 0:
            raise ValueError(_seed_message(seed))
        return value
    expected = None if device is None else torch.device(device)
    if expected is not None and expected.type == "cuda" and expected.index is None and torch.cuda.is_available():
        expected = torch.device("cuda", torch.cuda.current_device())
    if seed.dtype != torch.int64 or expected is None:
        raise ValueError(_seed_message(seed))
    if seed.device != expected:
        raise ValueError(f"a seed tensor must be on the model's device {expected}, got {seed.device}")
    return seed


def _seed_message(seed: object) -> str:
    return (
        "seed must be an int in [0, 2**64), a 0-d integer tensor on the CPU or a 0-d torch.int64 tensor on the "
        f"model's CUDA device, got {seed!r}"
    )


DEVICE_TYPES = ("cpu", "cuda")


def check_device(device: object) -> torch.device:
    """Return ``device`` as a torch.device of a type the package runs on (``DEVICE_TYPES``) that exists here."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}")
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from None
    if parsed.type not in DEVICE_TYPES:
        raise ValueError(f"device type {parsed.type!r} is not supported; valid choices: {', '.join(DEVICE_TYPES)}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' is not available here (torch.cuda.is_available() is False); use 'cpu'")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {parsed} does not exist: this host has {torch.cuda.device_count()} CUDA devices")
    return parsed


def check_autocast_mix(device: torch.device, layer_norm_dtypes: Collection[torch.dtype]) -> None:
    """Raise ValueError where a model with LayerNorm parameters of ``layer_norm_dtypes`` on ``device`` cannot run
    under the autocast now in force there: on the CPU, an fp16 or bf16 LayerNorm under autocast to another dtype
    (torch's CPU layer_norm then meets an input of another dtype than its parameters, and refuses)."""
    if device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return
    autocast = torch.get_autocast_dtype("cpu")
    mixed = sorted(
        {str(dtype) for dtype in layer_norm_dtypes if dtype in (torch.float16, torch.bfloat16)} - {str(autocast)}
    )
    if mixed:
        raise ValueError(
            f"a model with {', '.join(mixed)} parameters cannot run on the CPU under autocast to {autocast}: torch's "
            "CPU LayerNorm takes no input of another dtype than its parameters. On the CPU, run a float32 or float64 "
            "model under autocast (bf16 or fp16), or a 16-bit model without autocast or under autocast to its own dtype"
        )


def check_codebook(codebook: object, num_categories: int) -> tuple[float, ...]:
    """Return the codebook as floats: a sequence of ``num_categories`` finite real numbers."""
    if isinstance(codebook, (str, bytes)) or not isinstance(codebook, Sequence):
        raise TypeError(f"codebook must be a sequence of numbers, got {codebook!r}")
    if len(codebook) != num_categories:
        raise ValueError(f"codebook needs num_categories={num_categories} values, got {len(codebook)}")
    largest = torch.finfo(torch.float32).max  # the masks are applied in float32
    if not all(isinstance(c, numbers.Real) and not isinstance(c, bool) and abs(c) <= largest for c in codebook):
        raise ValueError(
            f"codebook values must be real numbers finite in float32 (|c| <= {largest:.3g}), got {codebook!r}"
        )
    return tuple(float(c) for c in codebook)


# Largest |Gumbel perturbation| an estimator adds to a logit before dividing by tau: for noise U in [tiny,
# 1 - eps / 2] of a dtype, -log(-log U) lies in [-4.7, log(2 / eps)] (16.6 in fp32, 36.7 in fp64), and
# Gumbel-Rao's conditional draws add at most log K more (log Z <= max theta + log K).
def tau_scale_margin(estimator_needs_noise: bool, categories: int, dtype: torch.dtype = torch.float32) -> float:
    """What an estimator with noise of ``dtype`` may add to max |logit| before dividing by tau, or 0."""
    if not estimator_needs_noise:
        return 0.0
    return max(math.log(2 / torch.finfo(dtype).eps), 4.7) + math.log(categories)


def check_tau_scale(largest_logit: float, tau: float, dtype: torch.dtype, margin: float = 0.0) -> None:
    """Raise unless (max |logit| + ``margin``) / tau and 1 / tau stay finite in ``dtype``.

    ``margin``: the noise an estimator adds to a logit (``tau_scale_margin``); the suggested tau is
    rounded up, so it passes.
    """
    limit = torch.finfo(dtype).max
    scale = max(largest_logit + margin, 1.0)
    if scale / tau > limit:
        smallest = scale / limit
        exponent = math.floor(math.log10(smallest)) - 2
        suggested = math.ceil(smallest / 10**exponent) * 10**exponent  # 3 significant digits, rounded up
        raise ValueError(
            f"tau={tau!r} is too small for logits of magnitude {largest_logit:.3g}: (|logits| + noise {margin:.3g}) "
            f"/ tau or 1 / tau overflows {dtype} (max {limit:.3g}); use tau >= {suggested:.3g}"
        )


def check_logits_and_noise(logits: torch.Tensor, uniform: torch.Tensor, tau: float, needs_noise: bool) -> None:
    """Logits [..., K] (floating, dense, K >= 2, finite, on a real device; ``check_tau_scale`` with the estimator's
    noise margin where ``needs_noise``); noise in (0, 1), dense, of their shape, dtype and device. Under a torch.func
    transform (either tensor wrapped) the checks of values (finite, (0, 1), tau) are skipped."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {_describe(logits)}")
    check_dense("logits", logits)
    if isinstance(uniform, torch.Tensor):
        check_dense("uniform", uniform)
    if logits.device.type == "meta":
        raise ValueError("logits must be on a real device, not 'meta': a sample needs their values")
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
    if _transformed(logits) or _transformed(uniform):  # under a torch.func transform no value can be read
        return
    # One pass over the logits (max |logit| is NaN or inf where any is) and one synchronisation.
    largest, noise_inside = torch.stack(
        [logits.detach().abs().amax().float(), ((uniform > 0) & (uniform < 1)).all().float()]
    ).tolist()
    if not math.isfinite(largest):
        raise ValueError("logits must be finite (no NaN or inf); mask a category with a large negative logit")
    if not noise_inside:
        raise ValueError("uniform noise must lie in the open interval (0, 1)")
    check_tau_scale(largest, tau, logits.dtype, tau_scale_margin(needs_noise, logits.shape[-1], uniform.dtype))


def check_dense(name: str, tensor: torch.Tensor) -> None:
    """A dense (strided) tensor: TypeError naming ``name`` and the layout otherwise (sparse, mkldnn, ...)."""
    if tensor.layout != torch.strided:
        layout = str(tensor.layout).removeprefix("torch.")
        raise TypeError(f"{name} must be a dense (strided) tensor, got a {layout} tensor; convert it with .to_dense()")


def _transformed(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is wrapped by a torch.func transform (vmap's BatchedTensor, grad's GradTrackingTensor):
    ``torch.func.debug_unwrap`` returns a plain tensor itself. Only the identity is compared, no value is read."""
    return torch.func.debug_unwrap(tensor) is not tensor


def check_tokens(tokens: object, vocab_size: int, seq_len: int, device: torch.device) -> None:
    """Token ids: a dense int64 or int32 tensor [batch, time] on ``device`` (the model's), 1 <= time <= seq_len.

    The id range is checked by ``step_value_check.StepValueCheck``, with the values that need the device.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens must be a torch.int64 or torch.int32 tensor, got {_describe(tokens)}")
    check_dense("tokens", tokens)
    if tokens.device.type == "meta" or device.type == "meta":
        raise ValueError("the model runs on real devices only: tokens and parameters must not be on 'meta'")
    if tokens.device != device:
        raise ValueError(f"tokens are on {tokens.device}, the model on {device}: move one to the other")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have rank 2 [batch, time], got shape {tuple(tokens.shape)}")
    batch, time = tokens.shape
    if batch < 1 or not 1 <= time <= seq_len:
        raise ValueError(f"tokens must be [batch >= 1, 1 <= time <= {seq_len}], got shape {tuple(tokens.shape)}")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype}"
    return type(value).__name__
