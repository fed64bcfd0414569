"""The checks of a forward pass's values on the device: token ids in range, mask logits and codebooks finite, tau
large enough."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch

from . import _backend, _device_tables
from ._checks import check_tau_scale


class StepValueCheck:
    """The checks of a forward pass's values: token ids in [0, vocab_size); mask logits finite;
    codebooks finite; ``check_tau_scale`` in fp32 (the estimators' dtype) with the estimator's noise ``margin``.

    Made at the start of a forward pass, it queues the reductions it needs (max |logit| over the
    layers, the ids' min and max, max |code| of each codebook); ``result()`` reads them and raises.
    On the CPU they are read at once, so an error is raised before any other work. On CUDA they are
    copied to pinned host memory behind an event on the tokens' device's current stream, and read by
    ``result()``, which
    the forward calls at its end: the host queues the whole pass before it waits, and then only
    until the device has reached the checks (in a host-bound loop it long has). Until then the ids
    are unchecked, so the pass embeds ``safe_tokens`` (the ids clamped into the vocabulary: an id
    out of range would otherwise end in a device-side assert that kills the CUDA context);
    ``result()`` raises before the pass returns anything computed from them. Where the Triton
    kernels run and the logits are contiguous, of one dtype that fp32 holds, the reductions and the
    clamp are one launch (``kernels.step_values``, its table of the logits' addresses kept in
    ``tables`` by ``_device_tables``), else a few torch ops; the codebooks' reduction is one more
    (``torch._foreach_norm``), copied with the others. While a CUDA graph is being captured (where
    reading device values is illegal) nothing is checked.

    Args:
        tokens: the pass's token ids (``check_tokens`` passed).
        vocab_size: the model's vocabulary.
        mask_logits: every stochastic layer's logits.
        tau: the estimator's temperature.
        margin: its noise's ``tau_scale_margin``.
        tables: a dict the caller keeps (the model's mask tables), in which ``_device_tables`` keeps the
            device table of the logits' addresses; None: the torch ops.
        codebooks: each stochastic layer's ``codebook`` buffer by the layer's name (the error names it); None
            or empty: none checked.

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
        codebooks: dict[str, torch.Tensor] | None = None,
    ):
        self.safe_tokens = tokens
        self._vocab_size, self._tau, self._margin = vocab_size, tau, margin
        self._reductions = self._copied = None
        self._codebook_names = tuple(codebooks or ())
        self._codebook_largest = None
        # On CUDA, the tokens' device's stream (and kernels' launches), whichever device is current. Outside the
        # caller's autocast: the reductions are of the tensors' own dtypes (autocast's promotion of a stack of
        # fp16 values under bf16 autocast, or the reverse, raises).
        with (
            torch.cuda.device(tokens.device) if tokens.is_cuda else contextlib.nullcontext(),
            torch.autocast(tokens.device.type, enabled=False),
            torch.no_grad(),
        ):
            if not (tokens.is_cuda and torch.cuda.is_current_stream_capturing()):
                self._queue(tokens, vocab_size, mask_logits, tables, tuple((codebooks or {}).values()))
        if self._reductions is not None and self._copied is None:
            self.result()

    def _queue(self, tokens, vocab_size, mask_logits, tables, codebooks) -> None:
        """Queue the reductions (and, on CUDA, their copies to the host and the clamped ids)."""
        if codebooks:  # max |code| of each codebook (NaN and inf propagate)
            self._codebook_largest = torch.stack(torch._foreach_norm(codebooks, float("inf")))
        launched = _step_values_launch(tokens, vocab_size, mask_logits, tables) if tokens.is_cuda else None
        if launched is not None:
            self.safe_tokens, self._reductions = launched
        else:  # max |logit| of each layer (NaN and inf propagate); the ids' range
            largest = torch.stack(torch._foreach_norm(mask_logits, float("inf")))
            self._reductions = (largest, torch.stack(torch.aminmax(tokens)))
        if tokens.is_cuda:  # a non-blocking copy to the CPU lands in pinned memory
            self._reductions = _to_host(self._reductions)
            if self._codebook_largest is not None:
                self._codebook_largest = _to_host(self._codebook_largest)
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
        if self._codebook_largest is not None:
            for name, code in zip(self._codebook_names, self._codebook_largest.tolist(), strict=True):
                if not math.isfinite(code):
                    raise ValueError(
                        f"the codebook of {name} is not finite (NaN or inf): {name}.codebook must hold "
                        "finite values (a damaged checkpoint or an in-place edit?)"
                    )
        check_tau_scale(largest, self._tau, torch.float32, self._margin)


def _step_values_launch(tokens, vocab_size, mask_logits, tables):
    """``kernels.step_values``' (safe tokens, reductions), or None where it does not run."""
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
    logits_table, numels_table = _device_tables.columns(tables, tokens.device, (addresses, numels))
    return kernels.step_values(tokens, vocab_size, logits_table, numels_table, dtype, max(numels))


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
