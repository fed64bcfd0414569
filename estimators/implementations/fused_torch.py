"""The torch backend of ``fused``: where the Triton one does not run (no kernels, as on the CPU; K > 2; float64).

The masks are drawn as a uint8 category index ``[B, out, in]`` (``sampler.draw_index``); the forward
forms W * m_b in the accumulation dtype (``accumulation_dtype``: fp32, or fp64 for fp64 activations) a few
samples at a time (``CPU_CHUNK``), rounds it to x's dtype and applies it with ``torch.baddbmm``, so at most
``CPU_CHUNK`` masked weights exist at once. The backward (``backward``) follows the math of ``fused``'s
module docstring with torch operations, accumulating in the same dtype; the estimator's coefficients come
from the logits in ``torch.promote_types(logits.dtype, torch.float32)``, as in the materialising
implementations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import sampler
from ..gradients import ESTIMATOR_FUNCTIONS
from ._fused_common import bias_grad, refuse_double_backward

CPU_CHUNK = 4  # samples whose masked weights the torch path holds at once


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype masked weights are formed and products summed in for activations of ``dtype``: fp32 for 16-bit
    and fp32 activations, fp64 for fp64 ones."""
    return torch.promote_types(dtype, torch.float32)


class FusedLinear(torch.autograd.Function):
    """y_b = x_b (W * m_b)^T + bias through torch operations, ``CPU_CHUNK`` samples at a time.

    ``FusedLinear.apply(x, weight, bias, logits, codebook, param_id, draw)``; the matmuls run in x's dtype
    (the caller casts x and switches autocast off, see ``fused.fused_linear``).

    Args:
        x: activations ``[B, T, in]`` in the compute dtype.
        weight, bias, logits, codebook: the layer's W ``[out, in]``, bias ``[out]``, theta ``[out, in, K]``,
            c ``[K]``.
        param_id: the layer's noise stream.
        draw: the forward pass's ``MaskDraw`` (estimator, tau, seed, samples).

    Returns:
        y ``[B, T, out]`` in x's dtype; the backward gives x, W, bias and theta their gradients.

    Example::

        >>> y = FusedLinear.apply(x, layer.weight, layer.bias, layer.logits, layer.codebook, layer.param_id, draw)
    """

    @staticmethod
    def forward(ctx, x, weight, bias, logits, codebook, param_id, draw):
        x = x.contiguous()
        masks = sampler.draw_index(logits, draw.seed, param_id, draw.samples)
        y = forward(x, weight, bias, codebook, masks)
        ctx.param_id, ctx.draw = param_id, draw
        ctx.save_for_backward(x, weight, bias, logits, codebook, masks)
        return y

    @staticmethod
    def backward(ctx, dy):
        refuse_double_backward()
        dy = dy.contiguous()
        need_x, need_w, need_bias, need_logits = ctx.needs_input_grad[:4]
        tensors, draw, param_id = ctx.saved_tensors, ctx.draw, ctx.param_id
        dx, dw, dbias, dlogits = backward(dy, tensors, draw, param_id, need_x, need_w, need_bias, need_logits)
        return dx, dw, dbias, dlogits, None, None, None


def forward(x, weight, bias, codebook, masks) -> torch.Tensor:
    """y ``[B, T, out]`` in x's dtype: y_b = x_b (W * m_b)^T + bias, m_b = c[masks_b], from x ``[B, T, in]``
    (contiguous) and the category index ``masks`` uint8 ``[B, out, in]`` (``sampler.draw_index``); the matmuls
    run in x's dtype unless autocast is on (the callers switch it off)."""
    y = torch.empty(*x.shape[:2], weight.shape[0], dtype=x.dtype, device=x.device)
    accumulate = accumulation_dtype(x.dtype)
    weight_acc, values = weight.to(accumulate), codebook.to(accumulate)
    for rows in _chunks(x.shape[0]):
        w = _masked_weight(weight_acc, values, masks[rows]).to(x.dtype)
        y[rows] = torch.baddbmm(bias.to(x.dtype), x[rows], w.transpose(1, 2))
    return y


def _chunks(batch: int):
    return [slice(start, start + CPU_CHUNK) for start in range(0, batch, CPU_CHUNK)]


def _masked_weight(weight: torch.Tensor, codebook: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """W * m_b, m_b = D_b . c = c[index_b], [B, out, in] in W's dtype (fp32 or fp64), from a category index
    [B, out, in]; W and c share their dtype.

    For K = 2, m = c_0 + (c_1 - c_0) index, a multiply-add on the uint8 index in place of a gather
    (on the CPU a gather, or a select, costs several times more): exactly c[index] where c_0 = 0,
    as for keep/drop masks, and within an ulp of it otherwise.
    """
    if codebook.shape[0] == 2:
        return weight * torch.mul(index, codebook[1] - codebook[0]).add_(codebook[0])
    return weight * codebook[index.long()]


def backward(dy, tensors, draw, param_id, need_x, need_w, need_bias, need_logits):
    """dx, dL/dW, dL/dbias, dL/dtheta (None where not wanted) from dy ``[B, T, out]`` (contiguous), ``tensors``
    (x, W, bias, logits, codebook, category index as ``forward`` took them), ``draw`` (anything with the
    ``MaskDraw`` fields estimator, tau, seed, samples) and the layer's ``param_id``.

    The torch path (CPU; K > 2 anywhere), a few samples at a time, with G_b = dy_b^T x_b:

    dL/dW = sum_k c_k S_k and, for estimators whose coefficient a_b depends on the
    sample only through D_b = e_s, dL/dtheta = W * sum_s a(e_s) S_s, where
    S_s = sum over the samples that drew category s of G_b: K batch sums, not
    B [out, in, K] coefficients. Estimators that need the noise sum
    (G_b * W) * a_b sample by sample; for K = 2 only a_b's category-1 component
    (``binary_logit_grad``, from the noise in category-major layout), since category
    0's is its negative, and W * sum_b G_b * a_b takes W out of the sum.
    """
    x, weight, bias, logits, codebook, index = tensors
    dbias = bias_grad(dy, bias) if need_bias else None
    estimator = ESTIMATOR_FUNCTIONS[draw.estimator]
    categories = logits.shape[-1]
    per_sample = need_logits and estimator.needs_uniform
    binary = categories == 2
    dx = torch.empty_like(x) if need_x else None
    accumulate = accumulation_dtype(x.dtype)
    estimate = torch.promote_types(logits.dtype, torch.float32)  # the estimator's math, as the materialising paths'
    category_sums = torch.zeros(categories, *weight.shape, dtype=accumulate, device=x.device)
    if per_sample:  # K = 2: sum_b G_b * a_b, times W at the end; else sum_b (G_b * W) * a_b
        noise_sum = torch.zeros(weight.shape if binary else logits.shape, dtype=accumulate, device=x.device)
    weight_acc, codebook_acc = weight.to(accumulate), codebook.to(accumulate)
    logits_est, codebook_est = logits.to(estimate), codebook.to(estimate)
    for rows in _chunks(x.shape[0]):
        chunk = index[rows]
        if need_x:
            dx[rows] = torch.bmm(dy[rows], _masked_weight(weight_acc, codebook_acc, chunk).to(dy.dtype))
        if not (need_w or need_logits):
            continue
        grad_w = torch.bmm(dy[rows].transpose(1, 2), x[rows]).to(accumulate)  # G_b
        category_sums[0] += grad_w.sum(0)  # every sample's, until the other categories are taken out below
        for k in range(1, categories):  # a float 0/1 factor: torch multiplies by a bool or uint8 one far slower
            drew_k = (chunk if binary else chunk == k).to(accumulate)
            category_sums[k] += (grad_w * drew_k).sum(0)
        if per_sample:
            uniform = sampler.uniform(
                draw.seed, param_id, draw.samples[rows], logits.shape, logits.device, category_major=binary
            )
            if binary:  # one coefficient a weight: category 0's is its negative
                coefficient = estimator.binary_logit_grad(logits_est, chunk, uniform, draw.tau, codebook_est)
                noise_sum += (grad_w * coefficient).sum(0)
            else:
                one_hot = F.one_hot(chunk.long(), categories).to(estimate)
                coefficient = estimator.logit_grad(logits_est, one_hot, uniform, draw.tau, codebook_est)
                noise_sum += ((grad_w * weight_acc).unsqueeze(-1) * coefficient).sum(0)
    if not (need_w or need_logits):
        return dx, None, dbias, None
    if per_sample and binary:
        dlogits_1 = weight_acc * noise_sum
        dlogits = torch.stack((-dlogits_1, dlogits_1), -1)
    elif per_sample:
        dlogits = noise_sum
    category_sums[0] -= category_sums[1:].sum(0)
    dw = torch.tensordot(codebook_acc, category_sums, dims=1).to(weight.dtype) if need_w else None
    if need_logits and not per_sample:
        sampled = torch.eye(categories, dtype=estimate, device=x.device).view(categories, 1, 1, categories)
        coefficient = estimator.logit_grad(logits_est, sampled, None, draw.tau, codebook_est)  # [s, out, in, K]
        coefficient = coefficient.expand(categories, *logits.shape)  # also where it does not depend on s
        dlogits = weight_acc.unsqueeze(-1) * (coefficient * category_sums.unsqueeze(-1)).sum(0)
    return dx, dw, dbias, (dlogits.to(logits.dtype) if need_logits else None)
