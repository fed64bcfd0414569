"""The per-sample reference every batched implementation is checked against.

Each row b of a batch runs alone through the single-sample path ``current``
as sample ``sample_offset + b``: no batching can be wrong in it. The tests
compare logits and gradients of every implementation with it, and the
summary report (``tools.reporting.report``) repeats the logits check live.
"""

from __future__ import annotations

import torch


def per_sample_logits(model, tokens: torch.Tensor, estimator: str, seed: int, **forward_kwargs) -> torch.Tensor:
    """Logits [B, T, vocab] of ``tokens`` [B, T], computed one row at a time through ``current``.

    Args:
        model: a ``StochasticTransformer``.
        tokens: token ids ``[B, T]``.
        estimator, seed: as the model's ``forward``.
        **forward_kwargs: ``tau`` and ``sample_offset``, as the model's ``forward`` (row b is sample
            ``sample_offset + b``).

    Returns:
        the logits of the batch, equal (within rounding) to what every implementation computes;
        differentiable like the model's own output.

    Example::

        >>> want = per_sample_logits(model, tokens, "ste", seed=1234)
        >>> got = model(tokens, estimator="ste", implementation="fused", seed=1234)
        >>> (got - want).abs().max()  # about 1e-6 in fp32
    """
    offset = forward_kwargs.pop("sample_offset", 0)
    rows = [
        model(
            tokens[b : b + 1],
            estimator=estimator,
            implementation="current",
            seed=seed,
            sample_offset=offset + b,
            **forward_kwargs,
        )
        for b in range(tokens.shape[0])
    ]
    return torch.cat(rows)
