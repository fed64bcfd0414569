"""The implementations that materialise every sample's masked weight W_b = W * m_b: ``current``, ``loop``,
``einsum``, ``bmm``, ``vmap`` and ``compiled`` (``torch.compile`` of the ``bmm`` path).

Each draws the category index through ``MaskDraw``, forms W_b for every row with ``masked_weight`` (the
estimator's autograd function carrying the backward) and applies it with torch's own operations, so
autograd differentiates them (twice too, where torch's operations can).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..gradients import ESTIMATOR_FUNCTIONS
from .base import Implementation, MaskDraw


def masked_weight(
    estimator: str,
    weight: torch.Tensor,
    logits: torch.Tensor,
    codebook: torch.Tensor,
    index: torch.Tensor,
    uniform: torch.Tensor | None,
    tau: float,
) -> torch.Tensor:
    """W_b = W * (D_b . c), [B, out, in] in W's dtype, with D_b = one_hot(index_b) carrying the estimator's backward.

    The estimator works on the logits in ``torch.promote_types(logits.dtype, torch.float32)`` (a no-op for
    an fp32 or fp64 model), so its math is fp32 for 16-bit and fp32 logits and fp64 for fp64 ones; the
    gradients return in each parameter's dtype.

    Args:
        estimator: a name in ``ESTIMATORS``.
        weight: W ``[out, in]``.
        logits: theta ``[out, in, K]``.
        codebook: c ``[K]``.
        index: uint8 ``[B, out, in]``, each row's sampled category (``MaskDraw.index``).
        uniform: the noise ``[B, out, in, K]`` where the estimator's backward needs it, else None.
        tau: the estimator's temperature.

    Returns:
        the masked weights ``[B, out, in]`` in W's dtype.

    Example::

        >>> w = masked_weight("ste", layer.weight, layer.logits, layer.codebook, draw.index(layer), None, 1.0)
    """
    batch = index.shape[0]
    theta = logits.to(torch.promote_types(logits.dtype, torch.float32))
    one_hot = ESTIMATOR_FUNCTIONS[estimator].apply(theta.expand(batch, *logits.shape), index, uniform, tau)
    # A multiply and a sum over K: `one_hot @ codebook` is a cuBLAS gemv with K = 2, ten times slower.
    return weight * (one_hot * codebook).sum(-1).to(weight.dtype)


def masked_bmm(x, weight, bias, logits, codebook, index, uniform, estimator: str, tau: float) -> torch.Tensor:
    """y_b = x_b W_b^T + bias through one batched matmul (the ``bmm`` path, also what ``compiled`` compiles).

    Args:
        x: activations ``[B, T, in]``.
        weight, bias, logits, codebook: the layer's W ``[out, in]``, bias ``[out]``, theta ``[out, in, K]``, c ``[K]``.
        index, uniform, estimator, tau: as ``masked_weight``'s.

    Returns:
        y ``[B, T, out]``.

    Example::

        >>> y = masked_bmm(x, layer.weight, layer.bias, layer.logits, layer.codebook, index, None, "ste", 1.0)
    """
    weights = masked_weight(estimator, weight, logits, codebook, index, uniform, tau)
    return torch.baddbmm(bias, x, weights.transpose(1, 2))


def _materialised(layer, draw: MaskDraw) -> torch.Tensor:
    return masked_weight(
        draw.estimator, layer.weight, layer.logits, layer.codebook, draw.index(layer), draw.uniform(layer), draw.tau
    )


class Current(Implementation):
    """The single-sample path (batch 1 only): the speedup baseline.

    Args:
        batched: the names of the implementations that run larger batches, which its refusal suggests.

    Example::

        >>> Current(batched=("bmm",)).check_batch(2)  # raises NotImplementedError naming bmm
    """

    name = "current"

    def __init__(self, batched: Sequence[str]):
        self.batched = tuple(batched)

    def check_batch(self, batch: int) -> None:
        if batch != 1:
            raise NotImplementedError(
                f"implementation 'current' is the single-sample path and runs batch size 1 only, got {batch}; "
                f"for batches use one of {', '.join(self.batched)}"
            )

    def apply(self, x, layer, draw):
        weights = _materialised(layer, draw)
        return F.linear(x[0], weights[0], layer.bias)[None]


class Loop(Implementation):
    """``F.linear`` sample by sample on the materialised W_b."""

    name = "loop"

    def apply(self, x, layer, draw):
        weights = _materialised(layer, draw)
        return torch.stack([F.linear(x[b], weights[b], layer.bias) for b in range(x.shape[0])])


class Einsum(Implementation):
    """One ``torch.einsum`` over the materialised W_b."""

    name = "einsum"

    def apply(self, x, layer, draw):
        return torch.einsum("bti,boi->bto", x, _materialised(layer, draw)) + layer.bias


class Bmm(Implementation):
    """One ``torch.baddbmm`` over the materialised W_b (``masked_bmm``)."""

    name = "bmm"

    def apply(self, x, layer, draw):
        return masked_bmm(
            x,
            layer.weight,
            layer.bias,
            layer.logits,
            layer.codebook,
            draw.index(layer),
            draw.uniform(layer),
            draw.estimator,
            draw.tau,
        )


class Vmap(Implementation):
    """``torch.func.vmap`` of ``F.linear`` over the materialised W_b."""

    name = "vmap"

    def apply(self, x, layer, draw):
        return torch.func.vmap(F.linear, in_dims=(0, 0, None))(x, _materialised(layer, draw), layer.bias)


# Graphs the compiled path may build in one process: dynamo compiles one per estimator, temperature,
# precision (autocast state, dtypes) and batch regime (the first batch size static, then one graph
# dynamic in the batch for every other size). dynamo's default limit, 8, ended a sweep over every
# estimator at two batch sizes; this limit applies to this function's graphs only.
COMPILED_GRAPH_LIMIT = 64


@functools.cache
def _compiled_masked_bmm():
    return torch.compile(masked_bmm, fullgraph=True)


class Compiled(Implementation):
    """``torch.compile`` of ``masked_bmm`` (the sampler runs eagerly), at most ``COMPILED_GRAPH_LIMIT`` graphs."""

    name = "compiled"

    def apply(self, x, layer, draw):
        index, uniform = draw.index(layer), draw.uniform(layer)
        if torch.compiler.is_compiling():  # inside a compiled model, whose graph takes masked_bmm in
            return masked_bmm(
                x, layer.weight, layer.bias, layer.logits, layer.codebook, index, uniform, draw.estimator, draw.tau
            )
        with torch._dynamo.config.patch(recompile_limit=COMPILED_GRAPH_LIMIT):
            return _compiled_masked_bmm()(
                x, layer.weight, layer.bias, layer.logits, layer.codebook, index, uniform, draw.estimator, draw.tau
            )
