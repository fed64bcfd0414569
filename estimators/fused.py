"""The ``fused`` implementation: per-sample masks without B fp32 copies of the weights.

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
W * m_b is formed in fp32 and rounded to the compute dtype, as autocast
rounds the materialised W_b of the other implementations; products
accumulate in fp32; the estimator's coefficients are computed from the fp32
logits. Each gradient comes back in its input's dtype. On CUDA, fp32 dots
run as "tf32x3" (fp32 accuracy), or as TF32 where
``torch.backends.cuda.matmul.allow_tf32`` is on, as cuBLAS does.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from . import _backend, sampler
from .gradients import ESTIMATOR_FUNCTIONS

CPU_CHUNK = 4  # samples whose masked weights the torch path holds at once


def fused_linear(x: torch.Tensor, layer, draw) -> torch.Tensor:
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
    arguments = (x, layer.weight, layer.bias, layer.logits, layer.codebook, layer.param_id, draw)
    if not torch.is_autocast_enabled(device_type):
        return _FusedStochasticLinear.apply(*arguments)
    x = x.to(torch.get_autocast_dtype(device_type))
    if layer.logits.shape[-1] == 2 and _backend.triton_kernels(x.device) is not None:
        return _FusedStochasticLinear.apply(x, *arguments[1:])  # the kernels' path runs no op that autocast casts
    with torch.autocast(device_type, enabled=False):  # the torch path's matmuls run in x's dtype
        return _FusedStochasticLinear.apply(x, *arguments[1:])


def fused_linears(x: torch.Tensor, layers, draw) -> torch.Tensor | None:
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
    Elsewhere it returns None, and the caller applies the layers one by one.

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
    masks = _side_by_side_masks(layers, draw)
    if masks is None:
        return None
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        x = x.to(torch.get_autocast_dtype(device_type))
    if x.dtype not in kernels.ACTIVATION_DTYPES:
        return None
    return _FusedStochasticLinears.apply(
        x,
        masks,
        torch.stack([layer.codebook for layer in layers]),
        draw,
        *(tensor for layer in layers for tensor in (layer.weight, layer.bias, layer.logits)),
    )


def _side_by_side_masks(layers, draw) -> torch.Tensor | None:
    """The layers' packed masks as those of one layer with their weights stacked: uint8 ``[B, n * bytes]``
    (a view; None unless ``fused_linears``' conditions hold)."""
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


def _dot_precision(kernels) -> str:
    """The fp32 dot product's precision: TF32 where torch's TF32 switch is on, else the kernels' fp32-accurate one."""
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else kernels.DOT_PRECISION


class _FusedStochasticLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, logits, codebook, param_id, draw):
        x = x.contiguous()
        kernels = _backend.triton_kernels(x.device) if logits.shape[-1] == 2 else None
        if kernels is not None and x.dtype not in kernels.ACTIVATION_DTYPES:
            kernels = None  # float64: the torch path, which computes in x's dtype
        if kernels is not None:
            ctx.precision = _dot_precision(kernels)
            masks = draw.drawn.get(param_id)
            if masks is None:
                masks = sampler.draw_bits(logits, draw.seed, param_id, draw.samples)
            y = kernels.masked_linear(x, weight, masks, codebook, bias, precision=ctx.precision)
        else:
            masks = sampler.draw_index(logits, draw.seed, param_id, draw.samples)
            y = torch.empty(*x.shape[:2], weight.shape[0], dtype=x.dtype, device=x.device)
            weight32, values = weight.float(), codebook.float()
            for rows in _chunks(x.shape[0]):
                w = _masked_weight(weight32, values, masks[rows]).to(x.dtype)
                y[rows] = torch.baddbmm(bias.to(x.dtype), x[rows], w.transpose(1, 2))
        ctx.kernels, ctx.param_id, ctx.draw, ctx.layer_rows = kernels, param_id, draw, None
        ctx.save_for_backward(x, weight, bias, logits, codebook, masks)
        return y

    @staticmethod
    def backward(ctx, dy):
        _refuse_double_backward()
        dy = dy.contiguous()
        need_x, need_w, need_bias, need_logits = ctx.needs_input_grad[:4]
        backward = _kernel_backward if ctx.kernels is not None else _chunked_backward
        dx, dw, dbias, dlogits = backward(ctx, dy, ctx.saved_tensors, need_x, need_w, need_bias, need_logits)
        return dx, dw, dbias, dlogits, None, None, None


class _FusedStochasticLinears(torch.autograd.Function):
    """``fused_linears``' node: the layers' weights and biases stacked along ``out`` (their logits too, in the
    backward where their gradient is wanted), then ``_kernel_backward``'s math."""

    @staticmethod
    def forward(ctx, x, masks, codebooks, draw, *parameters):
        x = x.contiguous()
        kernels = _backend.triton_kernels(x.device)
        weight, bias = torch.cat(parameters[0::3]), torch.cat(parameters[1::3])
        ctx.precision = _dot_precision(kernels)
        ctx.rows = ctx.layer_rows = parameters[0].shape[0]
        y = kernels.masked_linear(x, weight, masks, codebooks, bias, precision=ctx.precision, layer_rows=ctx.rows)
        ctx.kernels, ctx.param_id, ctx.draw = kernels, None, draw  # no noise: no param_id
        # a bias: the biases' dtype
        ctx.save_for_backward(x, weight, masks, codebooks, parameters[1], *parameters[2::3])
        return y

    @staticmethod
    def backward(ctx, dy):
        _refuse_double_backward()
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


def _refuse_double_backward() -> None:
    """Raise where the backward runs with create_graph=True: second derivatives would need the kernels' own
    backward."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "implementation 'fused' does not support double backward (create_graph=True); "
            "use 'bmm', 'einsum', 'vmap' or 'loop' for second derivatives"
        )


def _chunks(batch: int):
    return [slice(start, start + CPU_CHUNK) for start in range(0, batch, CPU_CHUNK)]


def _masked_weight(weight32: torch.Tensor, codebook32: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """W * m_b, m_b = D_b . c = c[index_b], float32 [B, out, in], from a category index [B, out, in].

    For K = 2, m = c_0 + (c_1 - c_0) index, a multiply-add on the uint8 index in place of a gather
    (on the CPU a gather, or a select, costs several times more): exactly c[index] where c_0 = 0,
    as for keep/drop masks, and within an ulp of it otherwise.
    """
    if codebook32.shape[0] == 2:
        return weight32 * torch.mul(index, codebook32[1] - codebook32[0]).add_(codebook32[0])
    return weight32 * codebook32[index.long()]


def _bias_grad(dy, bias):
    return dy.sum((0, 1), dtype=torch.float32).to(bias.dtype)


def _kernel_backward(ctx, dy, tensors, need_x, need_w, need_bias, need_logits):
    """dx, dL/dW, dL/dbias, dL/dtheta from the kernels; ``tensors``: (x, W, bias, logits, codebook ``[2]`` or
    table ``[layers, 2]`` of ``ctx.layer_rows`` rows of W each, mask bits)."""
    x, weight, bias, logits, codebook, bits = tensors
    draw, kernels, rows = ctx.draw, ctx.kernels, ctx.layer_rows
    dx = None
    if need_x:
        dx = kernels.masked_linear_input_grad(dy, weight, bits, codebook, precision=ctx.precision, layer_rows=rows)
    dbias = _bias_grad(dy, bias) if need_bias else None
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
        noise_stream=(draw.seed, ctx.param_id, draw.samples.start),
        need_weight=need_w,
        need_logits=need_logits,
        precision=ctx.precision,
        layer_rows=rows,
    )
    return dx, dw, dbias, dlogits


def _chunked_backward(ctx, dy, tensors, need_x, need_w, need_bias, need_logits):
    """The torch path (CPU; K > 2 anywhere), a few samples at a time, with G_b = dy_b^T x_b:

    dL/dW = sum_k c_k S_k and, for estimators whose coefficient a_b depends on the
    sample only through D_b = e_s, dL/dtheta = W * sum_s a(e_s) S_s, where
    S_s = sum over the samples that drew category s of G_b: K batch sums, not
    B [out, in, K] coefficients. Estimators that need the noise sum
    (G_b * W) * a_b sample by sample; for K = 2 only a_b's category-1 component
    (``binary_logit_grad``, from the noise in category-major layout), since category
    0's is its negative, and W * sum_b G_b * a_b takes W out of the sum.
    """
    x, weight, bias, logits, codebook, index = tensors
    dbias = _bias_grad(dy, bias) if need_bias else None
    draw = ctx.draw
    estimator = ESTIMATOR_FUNCTIONS[draw.estimator]
    categories = logits.shape[-1]
    per_sample = need_logits and estimator.needs_uniform
    binary = categories == 2
    dx = torch.empty_like(x) if need_x else None
    category_sums = torch.zeros(categories, *weight.shape, dtype=torch.float32, device=x.device)
    if per_sample:  # K = 2: sum_b G_b * a_b, times W at the end; else sum_b (G_b * W) * a_b
        noise_sum = torch.zeros(weight.shape if binary else logits.shape, dtype=torch.float32, device=x.device)
    logits32, codebook32, weight32 = logits.float(), codebook.float(), weight.float()
    for rows in _chunks(x.shape[0]):
        chunk = index[rows]
        if need_x:
            dx[rows] = torch.bmm(dy[rows], _masked_weight(weight32, codebook32, chunk).to(dy.dtype))
        if not (need_w or need_logits):
            continue
        grad_w = torch.bmm(dy[rows].transpose(1, 2), x[rows]).float()  # G_b
        category_sums[0] += grad_w.sum(0)  # every sample's, until the other categories are taken out below
        for k in range(1, categories):  # a float 0/1 factor: torch multiplies by a bool or uint8 one far slower
            drew_k = (chunk if binary else chunk == k).to(torch.float32)
            category_sums[k] += (grad_w * drew_k).sum(0)
        if per_sample:
            uniform = sampler.uniform(
                draw.seed, ctx.param_id, draw.samples[rows], logits.shape, logits.device, category_major=binary
            )
            if binary:  # one coefficient a weight: category 0's is its negative
                coefficient = estimator.binary_logit_grad(logits32, chunk, uniform, draw.tau, codebook32)
                noise_sum += (grad_w * coefficient).sum(0)
            else:
                one_hot = F.one_hot(chunk.long(), categories).to(torch.float32)
                coefficient = estimator.logit_grad(logits32, one_hot, uniform, draw.tau, codebook32)
                noise_sum += ((grad_w * weight32).unsqueeze(-1) * coefficient).sum(0)
    if not (need_w or need_logits):
        return dx, None, dbias, None
    if per_sample and binary:
        dlogits_1 = weight32 * noise_sum
        dlogits = torch.stack((-dlogits_1, dlogits_1), -1)
    elif per_sample:
        dlogits = noise_sum
    category_sums[0] -= category_sums[1:].sum(0)
    dw = torch.tensordot(codebook32, category_sums, dims=1).to(weight.dtype) if need_w else None
    if need_logits and not per_sample:
        sampled = torch.eye(categories, dtype=torch.float32, device=x.device).view(categories, 1, 1, categories)
        coefficient = estimator.logit_grad(logits32, sampled, None, draw.tau, codebook32)  # [s, out, in, K]
        coefficient = coefficient.expand(categories, *logits.shape)  # also where it does not depend on s
        dlogits = weight32.unsqueeze(-1) * (coefficient * category_sums.unsqueeze(-1)).sum(0)
    return dx, dw, dbias, (dlogits.to(logits.dtype) if need_logits else None)
