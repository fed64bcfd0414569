"""Ways to apply per-sample stochastic weights to a batch.

A stochastic linear layer has weight W [out, in], bias [out], logits theta
[out, in, K] and a codebook c [K]. For sample b (a row of the batch):
D_b = estimator(theta, U_b), m_b = D_b . c, W_b = W * m_b, y_b = x_b W_b^T + bias.

Every implementation gets its masks from ``MaskDraw``, which draws them from
the one shared sampler, so all of them compute the same function and differ
only in how the per-sample weights are applied and differentiated:

- ``current``: the single-sample path (batch 1 only), the speedup baseline;
- ``loop``, ``einsum``, ``bmm``, ``vmap``: materialise W_b for every sample;
- ``fused``: never materialises W_b (see ``fused.py``);
- ``compiled``: ``torch.compile`` of the ``bmm`` path.

``FLOOR`` ("shared") is not an implementation of the per-sample layer: every
row uses the mask of the batch's first sample, the cost floor that per-sample
discreteness is measured against.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import noise, ops
from .gradients import ESTIMATOR_FUNCTIONS, NEEDS_UNIFORM

FLOOR = "shared"


@dataclass(frozen=True)
class MaskDraw:
    """What one forward pass draws: estimator, temperature, seed and the sample index of each row.

    ``seed`` is a ``noise.Seed``: an int, or an int64 tensor on the device that the kernels read when
    they run; it must hold its value until the pass's backward has run (the model passes a snapshot).
    ``drawn`` holds masks drawn ahead for several layers in one launch (``sampler.draw_bits_by_layer``:
    packed bits by ``param_id``, what ``fused`` reads on CUDA); a layer not in it draws its own.
    """

    estimator: str
    implementation: str
    tau: float
    seed: noise.Seed
    samples: range
    drawn: dict = field(default_factory=dict, compare=False, repr=False)

    def index(self, layer) -> torch.Tensor:
        """uint8 [B, out, in]: the sampled category of every weight, for each row."""
        return ops.draw_index(layer.logits, self.seed, layer.param_id, self.samples)

    def uniform(self, layer) -> torch.Tensor | None:
        """The noise U [B, out, in, K], if the estimator's backward needs it; else None."""
        if not NEEDS_UNIFORM[self.estimator]:
            return None
        return ops.uniform(layer.logits, self.seed, layer.param_id, self.samples)


def masked_weight(estimator, weight, logits, codebook, index, uniform, tau):
    """W_b = W * (D_b . c), [B, out, in] in W's dtype, with D_b = one_hot(index_b) carrying the estimator's backward.

    The estimator works on the fp32 logits (a no-op for an fp32 model), so its
    math is fp32 in every precision; the gradients return in each parameter's dtype.
    """
    batch = index.shape[0]
    one_hot = ESTIMATOR_FUNCTIONS[estimator].apply(logits.float().expand(batch, *logits.shape), index, uniform, tau)
    # A multiply and a sum over K: `one_hot @ codebook` is a cuBLAS gemv with K = 2, ten times slower.
    return weight * (one_hot * codebook).sum(-1).to(weight.dtype)


def _materialised(x, layer, draw):
    return masked_weight(
        draw.estimator, layer.weight, layer.logits, layer.codebook, draw.index(layer), draw.uniform(layer), draw.tau
    )


def current(x, layer, draw):
    weights = _materialised(x, layer, draw)
    return F.linear(x[0], weights[0], layer.bias)[None]


def loop(x, layer, draw):
    weights = _materialised(x, layer, draw)
    return torch.stack([F.linear(x[b], weights[b], layer.bias) for b in range(x.shape[0])])


def einsum(x, layer, draw):
    return torch.einsum("bti,boi->bto", x, _materialised(x, layer, draw)) + layer.bias


def masked_bmm(x, weight, bias, logits, codebook, index, uniform, estimator: str, tau: float):
    """y_b = x_b W_b^T + bias through one batched matmul (the ``bmm`` path, also what ``compiled`` compiles)."""
    weights = masked_weight(estimator, weight, logits, codebook, index, uniform, tau)
    return torch.baddbmm(bias, x, weights.transpose(1, 2))


def bmm(x, layer, draw):
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


def vmap(x, layer, draw):
    return torch.func.vmap(F.linear, in_dims=(0, 0, None))(x, _materialised(x, layer, draw), layer.bias)


# Graphs the compiled path may build in one process: dynamo compiles one per estimator, temperature,
# precision (autocast state, dtypes) and batch regime (the first batch size static, then one graph
# dynamic in the batch for every other size). dynamo's default limit, 8, ended a sweep over every
# estimator at two batch sizes; this limit applies to this function's graphs only.
COMPILED_GRAPH_LIMIT = 64


@functools.cache
def _compiled_masked_bmm():
    return torch.compile(masked_bmm, fullgraph=True)


def compiled(x, layer, draw):
    index, uniform = draw.index(layer), draw.uniform(layer)
    if torch.compiler.is_compiling():  # inside a compiled model, whose graph takes masked_bmm in
        return masked_bmm(
            x, layer.weight, layer.bias, layer.logits, layer.codebook, index, uniform, draw.estimator, draw.tau
        )
    with torch._dynamo.config.patch(recompile_limit=COMPILED_GRAPH_LIMIT):
        return _compiled_masked_bmm()(
            x, layer.weight, layer.bias, layer.logits, layer.codebook, index, uniform, draw.estimator, draw.tau
        )


def fused(x, layer, draw):
    from .fused import fused_linear

    return fused_linear(x, layer, draw)


def shared(x, layer, draw):
    """The floor: one mask, that of the batch's first sample, for every row."""
    first = MaskDraw(draw.estimator, draw.implementation, draw.tau, draw.seed, draw.samples[:1])
    weights = _materialised(x, layer, first)
    return F.linear(x, weights[0], layer.bias)


IMPLEMENTATION_FUNCTIONS = {
    "current": current,
    "loop": loop,
    "einsum": einsum,
    "bmm": bmm,
    "vmap": vmap,
    "fused": fused,
    "compiled": compiled,
}
IMPLEMENTATIONS = tuple(IMPLEMENTATION_FUNCTIONS)


def check_batch(implementation: str, batch: int) -> None:
    if implementation == "current" and batch != 1:
        raise NotImplementedError(
            f"implementation 'current' is the single-sample path and runs batch size 1 only, got {batch}; "
            f"for batches use one of {', '.join(i for i in IMPLEMENTATIONS if i != 'current')}"
        )


def apply(x, layer, draw: MaskDraw) -> torch.Tensor:
    """y [B, T, out] of ``layer`` on x [B, T, in] with ``draw.implementation``."""
    if draw.implementation == FLOOR:
        return shared(x, layer, draw)
    return IMPLEMENTATION_FUNCTIONS[draw.implementation](x, layer, draw)
