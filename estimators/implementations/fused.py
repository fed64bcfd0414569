"""The ``fused`` implementation: per-sample masks without B fp32 copies of the weights.

``Fused`` is the implementation object; ``fused_linear`` chooses a backend per call: the Triton
kernels (``fused_triton``) for K = 2 where they run on x's device and take x's dtype, else the
chunked torch path (``fused_torch``). ``fused_linears`` applies q, k and v as one stacked layer
through the kernels where it can.

Forward: the shared sampler draws each sample's mask once, compactly (K = 2
bits on CUDA, a uint8 category index elsewhere); y_b = x_b (W * m_b)^T + bias
forms the masked weights on the fly (inside the matmul on CUDA, a few samples
at a time on CPU).

Backward, with G_b = dy_b^T x_b (the per-sample weight gradient) and
h_b = dL/dm_b = G_b * W:
    dx_b      = dy_b (W * m_b)
    dL/dW     = sum_b G_b * m_b
    dL/dtheta = sum_b h_b * a_b,   a_b = logit_grad(theta, D_b, U_b, tau, c)
because every estimator's backward is linear in g = dL/dD_b = h_b c. For
estimators whose a_b depends on the sample only through D_b (ste, reinmax),
sum_b G_b * a_b needs only the per-category sums of G_b; for K = 2 these are
sum_b G_b and sum_b G_b * bit_b, which the CUDA kernel reduces over the batch
tile by tile. Gumbel-softmax's a_b depends on the noise, which the kernel
recomputes from the counter-based hash instead of storing it.

Precision: x (and dy) are taken in the compute dtype: the autocast dtype
where autocast is on for x's device (x is cast to it, as ``F.linear``
would), else x's own dtype. Parameters keep their dtypes. The masked weight
W * m_b is formed in fp32 (fp64 where the compute dtype is fp64, i.e.
``torch.promote_types(compute dtype, torch.float32)``) and rounded to the
compute dtype, as autocast rounds the materialised W_b of the other
implementations; products accumulate in that same dtype; the estimator's
coefficients are computed from the logits in
``torch.promote_types(logits.dtype, torch.float32)``. Each gradient comes back
in its input's dtype. On CUDA, fp32 dots
run as "tf32x3" (fp32 accuracy), or as TF32 where
``torch.backends.cuda.matmul.allow_tf32`` is on, as cuBLAS does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _backend, sampler
from . import fused_ops, fused_torch, fused_triton
from .base import Implementation, MaskDraw


class Fused(Implementation):
    """``fused``: per-sample masks applied without materialising B masked weights.

    Each layer runs ``fused_linear`` (the Triton backend where its kernels run, else the torch one); the
    attention's q, k and v run as one stacked layer where ``fused_linears`` can; on the kernels' devices
    every layer's packed masks are drawn ahead, one launch per logits shape (``sampler.draw_bits_by_layer``).
    Inside a compiled model each layer runs the custom op ``estimators::fused_linear`` (``fused_ops``) on masks
    drawn by ``ops.draw_bits`` / ``ops.draw_index``, nothing is drawn ahead and q, k, v run one by one.

    Example::

        >>> logits = model(tokens, estimator="ste", implementation="fused", seed=0)
    """

    name = "fused"

    def draw_ahead(self, layers, seed, samples, tables):
        if torch.compiler.is_compiling():
            return {}  # each layer's op draws its own masks as a graph value
        return sampler.draw_bits_by_layer(layers, seed, samples, tables)

    def apply(self, x, layer, draw):
        if torch.compiler.is_compiling():
            return fused_ops.fused_linear(x, layer, draw, kernels=_runs_the_kernels(x, layer.logits))
        return fused_linear(x, layer, draw)

    def apply_stacked(self, x, layers, draw):
        if torch.compiler.is_compiling():
            return None  # the layers one by one, each through estimators::fused_linear
        return fused_linears(x, layers, draw)


def fused_linear(x: torch.Tensor, layer, draw: MaskDraw) -> torch.Tensor:
    """Apply a stochastic linear layer with a mask per sample, never materialising B masked weights.

    y_b = x_b (W * m_b)^T + bias with m_b = D_b . c and D_b the sample of
    ``draw.samples[b]``; the backward pass gives x, W, bias and the mask
    logits their gradients, the logits' through ``draw.estimator``.

    Args:
        x: activations ``[B, T, in]``; row b belongs to sample ``draw.samples[b]``.
        layer: a ``StochasticLinear`` (weight ``[out, in]``, bias ``[out]``, logits ``[out, in, K]``,
            codebook ``[K]``, its noise stream ``param_id``).
        draw: the forward pass's ``MaskDraw`` (estimator, tau, seed, sample indices).

    Returns:
        y ``[B, T, out]`` in the compute dtype: the autocast dtype where autocast is on, else x's.

    Example::

        >>> draw = MaskDraw("ste", "fused", tau=1.0, seed=0, samples=range(4))
        >>> y = fused_linear(torch.randn(4, 16, layer.weight.shape[1]), layer, draw)
    """
    device_type = x.device.type
    autocast = torch.is_autocast_enabled(device_type)
    if autocast:
        x = x.to(torch.get_autocast_dtype(device_type))  # as F.linear would cast it
    arguments = (x, layer.weight, layer.bias, layer.logits, layer.codebook, layer.param_id, draw)
    if _runs_the_kernels(x, layer.logits):
        return fused_triton.FusedLinear.apply(*arguments)  # the kernels' path runs no op that autocast casts
    if not autocast:
        return fused_torch.FusedLinear.apply(*arguments)
    with torch.autocast(device_type, enabled=False):  # the torch path's matmuls run in x's dtype
        return fused_torch.FusedLinear.apply(*arguments)


def _runs_the_kernels(x: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether a layer of these logits runs on the Triton backend: K = 2, the kernels run on x's device, and x's
    dtype is one of theirs (float64 takes the torch backend, which computes in x's dtype; see ``_kernels_take``)."""
    if logits.shape[-1] != 2:
        return False
    kernels = _backend.triton_kernels(x.device)
    return kernels is not None and _kernels_take(kernels, x.dtype)


def _kernels_take(kernels, dtype: torch.dtype) -> bool:
    """Whether the kernels apply masks to activations of ``dtype``: one of their ``ACTIVATION_DTYPES``, but not
    bf16 under Triton's interpreter (TRITON_INTERPRET=1), which computes bf16 dots wrongly (errors larger than
    the logits); there bf16 takes the torch backend. Compiled kernels (CUDA) take every one."""
    return dtype in kernels.ACTIVATION_DTYPES and not (_backend.INTERPRETED and dtype == torch.bfloat16)


def fused_linears(x: torch.Tensor, layers: Sequence, draw: MaskDraw) -> torch.Tensor | None:
    """Several stochastic layers of one input as one layer: y = [y_1, ..., y_n] along the last axis, or None.

    y_j = x_b (W_j * m_jb)^T + bias_j for every layer j, computed as one layer whose weight is the
    layers' weights stacked along ``out`` (and so their biases, masks and, in the backward, logits):
    one autograd node, one masked-matmul launch in the forward (after two concatenations) and three
    kernel launches in the backward, in place of n of each. The math is ``fused_linear``'s for each
    layer; only the host's work shrinks (an eager step's cost, see docs/PERFORMANCE.md). The
    parameters' gradients are views of one stacked gradient each (a layer's ``.grad`` shares its
    storage with the others'). It runs where that needs no other kernel: where the kernels run (on
    activations of one of their dtypes, not float64), the estimator's backward needs no per-sample noise
    (not ``gumbel``, ``gumbel_rao``), and the layers'
    masks were drawn ahead side by side (``draw.drawn`` from ``sampler.draw_bits_by_layer``, each
    layer's mask a whole number of bytes) for layers of one shape and dtype, with biases. The layers' codebooks
    may differ: the kernels read each layer's from a table ``[n, 2]`` of them (one small stacking launch), never
    from the host.
    Elsewhere it returns None, and the caller applies the layers one by one; so does ``Fused.apply_stacked``
    inside a compiled model (``torch.compiler.is_compiling()``), where each layer is its own op.

    Args:
        x: activations ``[B, T, in]``, the input of every layer.
        layers: ``StochasticLinear`` layers with consecutive masks in ``draw.drawn``.
        draw: the forward pass's ``MaskDraw``.

    Returns:
        y ``[B, T, n * out]`` (``y.split(out, -1)`` is each layer's output, as ``fused_linear``'s), or None.

    Example::

        >>> layers = (attention.q, attention.k, attention.v)
        >>> y = fused_linears(x, layers, draw)
        >>> q, k, v = y.split(attention.q.weight.shape[0], -1) if y is not None else [l(x, draw) for l in layers]
    """
    kernels = _backend.triton_kernels(x.device)
    if kernels is None or draw.estimator in kernels.NOISE_ESTIMATORS:
        return None
    masks = fused_triton.side_by_side_masks(layers, draw)
    if masks is None:
        return None
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        x = x.to(torch.get_autocast_dtype(device_type))
    if not _kernels_take(kernels, x.dtype):
        return None
    return fused_triton.FusedLinears.apply(
        x,
        masks,
        torch.stack([layer.codebook for layer in layers]),
        draw,
        *(tensor for layer in layers for tensor in (layer.weight, layer.bias, layer.logits)),
    )
