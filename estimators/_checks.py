"""Input checks shared by the public entry points: every error names the valid choices."""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
from collections.abc import Collection, Sequence

import numpy as np
import torch

from . import _backend


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
    """Logits [..., K] (floating, K >= 2, finite, on a real device; ``check_tau_scale`` with the estimator's noise
    margin where ``needs_noise``); noise in (0, 1), of their shape, dtype and device."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {_describe(logits)}")
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
    # One pass over the logits (max |logit| is NaN or inf where any is) and one synchronisation.
    largest, noise_inside = torch.stack(
        [logits.detach().abs().amax().float(), ((uniform > 0) & (uniform < 1)).all().float()]
    ).tolist()
    if not math.isfinite(largest):
        raise ValueError("logits must be finite (no NaN or inf); mask a category with a large negative logit")
    if not noise_inside:
        raise ValueError("uniform noise must lie in the open interval (0, 1)")
    check_tau_scale(largest, tau, logits.dtype, tau_scale_margin(needs_noise, logits.shape[-1], uniform.dtype))


def check_tokens(tokens: object, vocab_size: int, seq_len: int, device: torch.device) -> None:
    """Token ids: an int64 or int32 tensor [batch, time] on ``device`` (the model's), 1 <= time <= seq_len.

    The id range is checked by ``StepValueCheck``, with the values that need the device.
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


class StepValueCheck:
    """The checks of a forward pass's values: token ids in [0, vocab_size); mask logits finite;
    ``check_tau_scale`` in fp32 (the estimators' dtype) with the estimator's noise ``margin``.

    Made at the start of a forward pass, it queues the reductions it needs (max |logit| over the
    layers, the ids' min and max); ``result()`` reads them and raises. On the CPU they are read at
    once, so an error is raised before any other work. On CUDA they are copied to pinned host
    memory behind an event on the tokens' device's current stream, and read by ``result()``, which
    the forward calls at its end: the host queues the whole pass before it waits, and then only
    until the device has reached the checks (in a host-bound loop it long has). Until then the ids
    are unchecked, so the pass embeds ``safe_tokens`` (the ids clamped into the vocabulary: an id
    out of range would otherwise end in a device-side assert that kills the CUDA context);
    ``result()`` raises before the pass returns anything computed from them. Where the Triton
    kernels run and the logits are contiguous, of one dtype that fp32 holds, the reductions and the
    clamp are one launch (``triton_kernels.step_values``, its table of the logits' addresses kept in
    ``tables``), else a few torch ops. While a CUDA graph is being captured (where reading device
    values is illegal) nothing is checked.

    Args:
        tokens: the pass's token ids (``check_tokens`` passed).
        vocab_size: the model's vocabulary.
        mask_logits: every stochastic layer's logits.
        tau: the estimator's temperature.
        margin: its noise's ``tau_scale_margin``.
        tables: a dict the caller keeps (the model's mask tables), in which the latest device table of the
            logits' addresses is kept under ``"step_values"``; None: the torch ops.

    Example::

        >>> check = StepValueCheck(tokens, vocab_size, logits, tau, margin)
        >>> x = embedding(check.safe_tokens)   # ... the rest of the forward pass
        >>> check.result()                     # raises ValueError on a bad value
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        vocab_size: int,
        mask_logits: Sequence[torch.Tensor],
        tau: float,
        margin: float,
        tables: dict | None = None,
    ):
        self.safe_tokens = tokens
        self._vocab_size, self._tau, self._margin = vocab_size, tau, margin
        self._reductions = self._copied = None
        # On CUDA, the tokens' device's stream (and kernels' launches), whichever device is current. Outside the
        # caller's autocast: the reductions are of the tensors' own dtypes (autocast's promotion of a stack of
        # fp16 values under bf16 autocast, or the reverse, raises).
        with (
            torch.cuda.device(tokens.device) if tokens.is_cuda else contextlib.nullcontext(),
            torch.autocast(tokens.device.type, enabled=False),
            torch.no_grad(),
        ):
            if not (tokens.is_cuda and torch.cuda.is_current_stream_capturing()):
                self._queue(tokens, vocab_size, mask_logits, tables)
        if self._reductions is not None and self._copied is None:
            self.result()

    def _queue(self, tokens, vocab_size, mask_logits, tables) -> None:
        """Queue the reductions (and, on CUDA, their copies to the host and the clamped ids)."""
        launched = _step_values_launch(tokens, vocab_size, mask_logits, tables) if tokens.is_cuda else None
        if launched is not None:
            self.safe_tokens, self._reductions = launched
        else:  # max |logit| of each layer (NaN and inf propagate); the ids' range
            largest = torch.stack(torch._foreach_norm(mask_logits, float("inf")))
            self._reductions = (largest, torch.stack(torch.aminmax(tokens)))
        if tokens.is_cuda:  # a non-blocking copy to the CPU lands in pinned memory
            self._reductions = _to_host(self._reductions)
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(tokens.device))  # where the copies were queued
            if launched is None:
                self.safe_tokens = tokens.clamp(0, vocab_size - 1)

    def result(self) -> None:
        """Raise ValueError, naming the bad value, unless every checked value is valid."""
        if self._reductions is None:
            return
        if self._copied is not None:
            self._copied.synchronize()
        largest, low, high = _read_reductions(self._reductions)
        if low < 0 or high >= self._vocab_size:
            raise ValueError(f"token ids must lie in [0, {self._vocab_size}); got min {low:.0f}, max {high:.0f}")
        if not math.isfinite(largest):
            raise ValueError("the model's mask logits are not finite (NaN or inf): masks cannot be drawn from them")
        check_tau_scale(largest, self._tau, torch.float32, self._margin)


def _step_values_launch(tokens, vocab_size, mask_logits, tables):
    """``triton_kernels.step_values``' (safe tokens, reductions), or None where it does not run."""
    kernels = _backend.triton_kernels(tokens.device) if tables is not None and mask_logits else None
    dtype = mask_logits[0].dtype if mask_logits else None
    if (
        kernels is None
        or dtype not in kernels.STEP_VALUES_LOGITS_DTYPES
        or not all(
            logits.dtype == dtype and logits.is_contiguous() and logits.device == tokens.device
            for logits in mask_logits
        )
    ):
        return None
    addresses, numels = tuple(logits.data_ptr() for logits in mask_logits), tuple(map(torch.numel, mask_logits))
    key = (tokens.device, addresses, numels)
    kept = tables.get("step_values")  # only the latest: new addresses (new parameters) replace it
    if kept is None or kept[0] != key:
        columns = (torch.tensor(column, dtype=torch.int64, device=tokens.device) for column in (addresses, numels))
        kept = tables["step_values"] = (key, (*columns, max(numels)))
    logits_table, numels, largest = kept[1]
    return kernels.step_values(tokens, vocab_size, logits_table, numels, dtype, largest)


def _to_host(reductions):
    if isinstance(reductions, tuple):
        return tuple(_to_host(tensor) for tensor in reductions)
    return reductions.to("cpu", non_blocking=True)


def _read_reductions(reductions) -> tuple[float, int, int]:
    """(max |logit| over the layers, NaN where any logit is NaN; min id; max id) of either layout."""
    if isinstance(reductions, torch.Tensor):  # step_values' [layers + 1, programs, 2]
        values = reductions.numpy()
        bits = np.array(values[:-1, :, 0].max(), dtype=np.int32)
        return float(bits.view(np.float32)), int(values[-1, :, 0].min()), int(values[-1, :, 1].max())
    largest, bounds = reductions
    low, high = bounds.tolist()
    return max(largest.tolist(), key=lambda value: math.inf if math.isnan(value) else value), low, high


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype}"
    return type(value).__name__
