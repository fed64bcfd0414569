"""``fused``'s layer as torch custom operators, the form in which ``torch.compile`` takes it.

The autograd Functions of ``fused_torch`` and ``fused_triton`` carry a ``MaskDraw`` (a dict, a range) and
call the numpy or Triton sampler and the Triton launcher, none of which dynamo traces. Inside a compiled
model (``torch.compiler.is_compiling()``) ``Fused`` calls these ops instead: the masks come from
``ops.draw_index`` / ``ops.draw_bits`` as graph values, and each op is one opaque graph node running the
backend's own ``forward`` / ``backward`` (the math of the eager path, bit for bit).

    estimators::fused_linear(x, weight, bias, logits, codebook, masks, seed, param, first_sample, count,
                             estimator, tau) -> y [B, T, out] in x's dtype
    estimators::fused_linear_backward(dy, x, weight, bias, logits, codebook, masks, seed, param, first_sample,
                                      count, estimator, tau, needs) -> (dx, dweight, dbias, dlogits)

``masks`` chooses the backend: packed bits uint8 ``[B, ceil(W / 8)]`` (``ops.draw_bits``, K = 2) run the
Triton kernels, a category index uint8 ``[B, out, in]`` (``ops.draw_index``) the torch backend. ``seed``,
``param``, ``first_sample``, ``count``: as for ``ops.draw_index`` (the noise of gumbel's backward is
recomputed from them). ``needs``: which of dx, dweight, dbias, dlogits are wanted; the others come back as
zeros. x is taken in the compute dtype: the caller casts it to the autocast dtype where autocast is on
(``fused_linear``), and the torch backend's forward runs with autocast off, as the eager path does.
"""

from __future__ import annotations

import torch

from .. import _backend, ops
from . import fused_torch, fused_triton
from .base import MaskDraw


def _packed(masks: torch.Tensor) -> bool:
    return masks.dim() == 2


def _draw(seed, first_sample, count, estimator, tau) -> MaskDraw:
    return MaskDraw(estimator, "fused", tau, ops._seed(seed), range(first_sample, first_sample + count))


@torch.library.custom_op("estimators::fused_linear", mutates_args=())
def _fused_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    logits: torch.Tensor,
    codebook: torch.Tensor,
    masks: torch.Tensor,
    seed: torch.Tensor,
    param: int,
    first_sample: int,
    count: int,
    estimator: str,
    tau: float,
) -> torch.Tensor:
    x = x.contiguous()
    if _packed(masks):
        kernels = _backend.triton_kernels(x.device)
        return fused_triton.forward(kernels, x, weight, bias, codebook, masks, fused_triton.dot_precision(kernels))
    with torch.autocast(x.device.type, enabled=False):  # the matmuls run in x's dtype
        return fused_torch.forward(x, weight, bias, codebook, masks)


@_fused_linear.register_fake
def _(x, weight, bias, logits, codebook, masks, seed, param, first_sample, count, estimator, tau):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.custom_op("estimators::fused_linear_backward", mutates_args=())
def _fused_linear_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    logits: torch.Tensor,
    codebook: torch.Tensor,
    masks: torch.Tensor,
    seed: torch.Tensor,
    param: int,
    first_sample: int,
    count: int,
    estimator: str,
    tau: float,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dy, x = dy.contiguous(), x.contiguous()
    draw = _draw(seed, first_sample, count, estimator, tau)
    tensors = (x, weight, bias, logits, codebook, masks)
    if _packed(masks):
        kernels = _backend.triton_kernels(x.device)
        precision = fused_triton.dot_precision(kernels)
        grads = fused_triton.backward(kernels, dy, tensors, draw, param, *needs, precision)
    else:
        grads = fused_torch.backward(dy, tensors, draw, param, *needs)
    return tuple(
        torch.zeros_like(tensor, memory_format=torch.contiguous_format) if grad is None else grad
        for grad, tensor in zip(grads, (x, weight, bias, logits), strict=True)
    )


@_fused_linear_backward.register_fake
def _(dy, x, weight, bias, logits, codebook, masks, seed, param, first_sample, count, estimator, tau, needs):
    return tuple(tensor.new_empty(tensor.shape) for tensor in (x, weight, bias, logits))


def _setup_context(ctx, inputs, output):
    x, weight, bias, logits, codebook, masks, seed, *arguments = inputs
    ctx.save_for_backward(x, weight, bias, logits, codebook, masks, seed)
    ctx.arguments = arguments


def _backward(ctx, dy):
    needs = list(ctx.needs_input_grad[:4])
    grads = _fused_linear_backward(dy, *ctx.saved_tensors, *ctx.arguments, needs)
    return *(grad if need else None for grad, need in zip(grads, needs, strict=True)), *(None,) * 8


def _refuse_double_backward(ctx, *grads):
    raise RuntimeError(
        "implementation 'fused' does not support double backward (create_graph=True); "
        "use 'bmm', 'einsum', 'vmap' or 'loop' for second derivatives"
    )


torch.library.register_autograd("estimators::fused_linear", _backward, setup_context=_setup_context)
torch.library.register_autograd(
    "estimators::fused_linear_backward", _refuse_double_backward, setup_context=lambda ctx, inputs, output: None
)


def fused_linear(x: torch.Tensor, layer, draw: MaskDraw, kernels: bool) -> torch.Tensor:
    """``fused.fused_linear`` through ``estimators::fused_linear``, for a compiled model: the same y and
    gradients, the masks drawn by ``ops.draw_bits`` where ``kernels`` (the Triton backend runs), else by
    ``ops.draw_index``.

    Example::

        >>> y = fused_linear(x, layer, MaskDraw("ste", "fused", 1.0, 0, range(4)), kernels=False)
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        x = x.to(torch.get_autocast_dtype(device_type))  # as F.linear would cast it
    seed = ops.seed_tensor(draw.seed)
    draw_masks = ops.draw_bits if kernels else ops.draw_index
    masks = draw_masks(layer.logits, seed, layer.param_id, draw.samples)
    samples = draw.samples
    return _fused_linear(
        x,
        layer.weight,
        layer.bias,
        layer.logits,
        layer.codebook,
        masks,
        seed,
        layer.param_id,
        samples.start,
        len(samples),
        draw.estimator,
        draw.tau,
    )
