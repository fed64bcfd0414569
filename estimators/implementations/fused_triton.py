"""The Triton backend of ``fused``: K = 2 masks as bits packed 8 to a byte, applied inside the kernels.

It runs where ``_backend.triton_kernels`` gives the kernels (CUDA; any device under TRITON_INTERPRET=1),
for activations of one of the kernels' ``ACTIVATION_DTYPES``. The forward multiplies W by a sample's
mask bits in registers (``masked_linear``); the backward (``_kernel_backward``) is the input gradient's
kernel and ``masked_param_grads``, which reduces the per-category sums of G_b over the batch tile by tile
and recomputes ``gumbel``'s noise from the hash (see ``fused``'s module docstring for the math).
``FusedLinears`` applies several layers of one input as one layer of their stacked weights.
"""

from __future__ import annotations

import itertools

import torch

from .. import _backend, sampler
from ._fused_common import bias_grad, refuse_double_backward


class FusedLinear(torch.autograd.Function):
    """y_b = x_b (W * m_b)^T + bias through the Triton kernels, for K = 2.

    ``FusedLinear.apply(x, weight, bias, logits, codebook, param_id, draw)``; the kernels run no op that
    autocast casts. The masks are ``draw.drawn[param_id]`` where drawn ahead, else drawn here
    (``sampler.draw_bits``).

    Args:
        x: activations ``[B, T, in]`` in one of the kernels' ``ACTIVATION_DTYPES``.
        weight, bias, logits, codebook: the layer's W ``[out, in]``, bias ``[out]``, theta ``[out, in, 2]``,
            c ``[2]``.
        param_id: the layer's noise stream.
        draw: the forward pass's ``MaskDraw`` (estimator, tau, seed, samples, masks drawn ahead).

    Returns:
        y ``[B, T, out]`` in x's dtype; the backward gives x, W, bias and theta their gradients.

    Example::

        >>> y = FusedLinear.apply(x, layer.weight, layer.bias, layer.logits, layer.codebook, layer.param_id, draw)
    """

    @staticmethod
    def forward(ctx, x, weight, bias, logits, codebook, param_id, draw):
        x = x.contiguous()
        kernels = _backend.triton_kernels(x.device)
        ctx.precision = dot_precision(kernels)
        masks = draw.drawn.get(param_id)
        if masks is None:
            masks = sampler.draw_bits(logits, draw.seed, param_id, draw.samples)
        y = forward(kernels, x, weight, bias, codebook, masks, ctx.precision)
        ctx.kernels, ctx.param_id, ctx.draw, ctx.layer_rows = kernels, param_id, draw, None
        ctx.save_for_backward(x, weight, bias, logits, codebook, masks)
        return y

    @staticmethod
    def backward(ctx, dy):
        refuse_double_backward()
        dy = dy.contiguous()
        need_x, need_w, need_bias, need_logits = ctx.needs_input_grad[:4]
        needs = (need_x, need_w, need_bias, need_logits)
        dx, dw, dbias, dlogits = _kernel_backward(ctx, dy, ctx.saved_tensors, *needs)
        return dx, dw, dbias, dlogits, None, None, None


def forward(kernels, x, weight, bias, codebook, masks, precision) -> torch.Tensor:
    """y ``[B, T, out]`` in x's dtype, y_b = x_b (W * m_b)^T + bias, from x ``[B, T, in]`` (contiguous, one of
    the kernels' ``ACTIVATION_DTYPES``), the packed mask bits ``masks`` uint8 ``[B, ceil(W / 8)]``
    (``sampler.draw_bits``) and the fp32 dots' ``precision`` (``dot_precision``)."""
    return kernels.masked_linear(x, weight, masks, codebook, bias, precision=precision)


class FusedLinears(torch.autograd.Function):
    """``fused_linears``' node: the layers' weights and biases stacked along ``out`` (their logits too, in the
    backward where their gradient is wanted), then ``_kernel_backward``'s math.

    ``FusedLinears.apply(x, masks, codebooks, draw, *parameters)``, for layers of one shape and dtype whose
    estimator's backward needs no per-sample noise; the kernels run no op that autocast casts.

    Args:
        x: activations ``[B, T, in]`` in one of the kernels' ``ACTIVATION_DTYPES``, the input of every layer.
        masks: uint8 ``[B, n * bytes]``, the layers' packed masks side by side (``side_by_side_masks``).
        codebooks: ``[n, 2]``, the layers' codebooks.
        draw: the forward pass's ``MaskDraw`` (estimator, tau).
        parameters: weight, bias and logits of each of the n layers, in turn.

    Returns:
        y ``[B, T, n * out]``; the backward gives x and each layer's parameters their gradients, each a
        view of its layer's rows of one stacked gradient.

    Example::

        >>> layers = (attention.q, attention.k, attention.v)
        >>> masks = side_by_side_masks(layers, draw)
        >>> codebooks = torch.stack([layer.codebook for layer in layers])
        >>> parameters = [p for layer in layers for p in (layer.weight, layer.bias, layer.logits)]
        >>> y = FusedLinears.apply(x, masks, codebooks, draw, *parameters)
    """

    @staticmethod
    def forward(ctx, x, masks, codebooks, draw, *parameters):
        x = x.contiguous()
        kernels = _backend.triton_kernels(x.device)
        weight, bias = torch.cat(parameters[0::3]), torch.cat(parameters[1::3])
        ctx.precision = dot_precision(kernels)
        ctx.rows = ctx.layer_rows = parameters[0].shape[0]
        y = kernels.masked_linear(x, weight, masks, codebooks, bias, precision=ctx.precision, layer_rows=ctx.rows)
        ctx.kernels, ctx.param_id, ctx.draw = kernels, None, draw  # no noise: no param_id
        # a bias: the biases' dtype
        ctx.save_for_backward(x, weight, masks, codebooks, parameters[1], *parameters[2::3])
        return y

    @staticmethod
    def backward(ctx, dy):
        refuse_double_backward()
        dy = dy.contiguous()
        wanted = ctx.needs_input_grad[4:]
        need_w, need_bias, need_logits = (any(wanted[kind::3]) for kind in range(3))
        x, weight, masks, codebooks, bias, *logits = ctx.saved_tensors
        logits = torch.cat(logits) if need_logits else logits[0]  # unread where no logit gradient is wanted
        tensors, need_x = (x, weight, bias, logits, codebooks, masks), ctx.needs_input_grad[0]
        dx, dw, dbias, dlogits = _kernel_backward(ctx, dy, tensors, need_x, need_w, need_bias, need_logits)
        layers = len(wanted) // 3
        stacked = [(None,) * layers if g is None else g.split(ctx.rows) for g in (dw, dbias, dlogits)]
        per_layer = (
            stacked[kind][layer] if wanted[3 * layer + kind] else None
            for layer, kind in itertools.product(range(layers), range(3))
        )
        return dx, None, None, None, *per_layer  # each a view of its layer's rows of a stacked gradient


def side_by_side_masks(layers, draw) -> torch.Tensor | None:
    """The layers' packed masks as those of one layer with their weights stacked: uint8 ``[B, n * bytes]``
    (a view; None unless ``fused_linears``' conditions hold).

    Args:
        layers: ``StochasticLinear`` layers.
        draw: a ``MaskDraw`` whose ``drawn`` holds masks drawn ahead (``sampler.draw_bits_by_layer``).

    Returns:
        a view of the layers' masks where they lie side by side in ``draw.drawn`` (consecutive, each a whole
        number of bytes) and the layers are K = 2 layers of one shape and dtype with biases; else None.

    Example::

        >>> drawn = sampler.draw_bits_by_layer(model.stochastic_layers(), 0, range(4), {})
        >>> draw = MaskDraw("ste", "fused", 1.0, 0, range(4), drawn)
        >>> masks = side_by_side_masks((attention.q, attention.k, attention.v), draw)  # [4, 3 * bytes]
    """
    first = layers[0]
    shape, dtype = first.weight.shape, first.weight.dtype
    views = [draw.drawn.get(layer.param_id) for layer in layers]
    if views[0] is None or views[0].shape[1] * 8 != shape.numel():  # a mask must end on a byte's end
        return None
    stride, start, size = views[0].stride(0), views[0].data_ptr(), views[0].shape[1]
    for position, (layer, view) in enumerate(zip(layers, views, strict=True)):
        if (
            view is None
            or view.stride(0) != stride
            or view.data_ptr() != start + position * size
            or layer.logits.shape[-1] != 2
            or layer.weight.shape != shape
            or layer.weight.dtype != dtype
            or layer.bias is None
            or layer.bias.dtype != first.bias.dtype
            or layer.logits.dtype != first.logits.dtype
            or layer.codebook.shape != (2,)
            or layer.codebook.dtype != first.codebook.dtype
            or layer.codebook.device != first.weight.device
        ):
            return None
    return views[0].as_strided((views[0].shape[0], len(layers) * size), (stride, 1))


def dot_precision(kernels) -> str:
    """The fp32 dot product's precision: TF32 where torch's TF32 switch is on, else the kernels' fp32-accurate one."""
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else kernels.DOT_PRECISION


def _kernel_backward(ctx, dy, tensors, need_x, need_w, need_bias, need_logits):
    """``backward`` with the autograd node's kernels, draw, noise stream, precision and layer rows."""
    needs = (need_x, need_w, need_bias, need_logits)
    return backward(ctx.kernels, dy, tensors, ctx.draw, ctx.param_id, *needs, ctx.precision, ctx.layer_rows)


def backward(kernels, dy, tensors, draw, param_id, need_x, need_w, need_bias, need_logits, precision, rows=None):
    """dx, dL/dW, dL/dbias, dL/dtheta (None where not wanted) from the kernels, from dy ``[B, T, out]``
    (contiguous); ``tensors``: (x, W, bias, logits, codebook ``[2]`` or table ``[layers, 2]`` of ``rows`` rows
    of W each, mask bits); ``draw``: anything with the ``MaskDraw`` fields estimator, tau, seed, samples;
    ``param_id``: the layer's noise stream (None where the estimator needs no noise); ``precision``: the fp32
    dots' (``dot_precision``)."""
    x, weight, bias, logits, codebook, bits = tensors
    dx = None
    if need_x:
        dx = kernels.masked_linear_input_grad(dy, weight, bits, codebook, precision=precision, layer_rows=rows)
    dbias = bias_grad(dy, bias) if need_bias else None
    if not (need_w or need_logits):
        return dx, None, dbias, None
    dw, dlogits = kernels.masked_param_grads(
        dy,
        x,
        bits,
        codebook,
        weight,
        logits,
        draw.estimator,
        draw.tau,
        noise_stream=(draw.seed, param_id, draw.samples.start),
        need_weight=need_w,
        need_logits=need_logits,
        precision=precision,
        layer_rows=rows,
    )
    return dx, dw, dbias, dlogits
