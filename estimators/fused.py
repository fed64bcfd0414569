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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _backend, noise, sampler
from .gradients import ESTIMATOR_FUNCTIONS

CPU_CHUNK = 4  # samples whose fp32 masked weights the torch path holds at once


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
        y ``[B, T, out]`` in x's dtype.

    Example::

        >>> draw = MaskDraw("ste", "fused", tau=1.0, seed=0, samples=range(4))
        >>> y = fused_linear(torch.randn(4, 16, layer.weight.shape[1]), layer, draw)
    """
    return _FusedStochasticLinear.apply(
        x, layer.weight, layer.bias, layer.logits, layer.codebook, layer.codes, layer.param_id, draw
    )


class _FusedStochasticLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, logits, codebook, codes, param_id, draw):
        x = x.contiguous()
        kernels = _backend.triton_kernels(x.device) if logits.shape[-1] == 2 else None
        if kernels is not None:
            masks = sampler.draw_bits(logits, draw.seed, param_id, draw.samples)
            y = kernels.masked_linear(x, weight, masks, codes, bias)
        else:
            masks = sampler.draw_index(logits, draw.seed, param_id, draw.samples)
            y = torch.empty(*x.shape[:2], weight.shape[0], dtype=x.dtype, device=x.device)
            for rows in _chunks(x.shape[0]):
                w = weight * (F.one_hot(masks[rows].long(), logits.shape[-1]).to(x.dtype) * codebook).sum(-1)
                y[rows] = torch.baddbmm(bias, x[rows], w.transpose(1, 2))
        ctx.kernels, ctx.codes, ctx.param_id, ctx.draw = kernels, codes, param_id, draw
        ctx.save_for_backward(x, weight, logits, codebook, masks)
        return y

    @staticmethod
    def backward(ctx, dy):
        dy = dy.contiguous()
        need_x, need_w, need_bias, need_logits = ctx.needs_input_grad[:4]
        backward = _kernel_backward if ctx.kernels is not None else _chunked_backward
        dx, dw, dlogits = backward(ctx, dy, need_x, need_w, need_logits)
        dbias = dy.sum((0, 1)) if need_bias else None
        return dx, dw, dbias, dlogits, None, None, None, None


def _chunks(batch: int):
    return [slice(start, start + CPU_CHUNK) for start in range(0, batch, CPU_CHUNK)]


def _kernel_backward(ctx, dy, need_x, need_w, need_logits):
    x, weight, logits, codebook, bits = ctx.saved_tensors
    draw, codes, kernels = ctx.draw, ctx.codes, ctx.kernels
    estimator = ESTIMATOR_FUNCTIONS[draw.estimator]
    dx = kernels.masked_linear_input_grad(dy, weight, bits, codes) if need_x else None
    if not (need_w or need_logits):
        return dx, None, None
    gumbel = None
    if estimator.needs_uniform:
        gumbel = (logits, noise.param_key(draw.seed, ctx.param_id), draw.samples.start, draw.tau)
    sum_all, sum_set, sum_alpha = kernels.masked_weight_grad(dy, x, bits, codes, gumbel)
    sum_unset = sum_all - sum_set
    dw = codes[0] * sum_unset + codes[1] * sum_set if need_w else None
    dlogits = None
    if need_logits and estimator.needs_uniform:
        d1 = weight * sum_alpha  # K = 2: a_b[0] = -a_b[1] = -alpha_b
        dlogits = torch.stack((-d1, d1), dim=-1)
    elif need_logits:
        categories = torch.eye(2, dtype=logits.dtype, device=logits.device).view(2, 1, 1, 2)
        coefficient = estimator.logit_grad(logits, categories, None, draw.tau, codebook)
        coefficient = coefficient.expand(2, *logits.shape)  # [sampled category, out, in, K], also for ste
        dlogits = weight.unsqueeze(-1) * (
            coefficient[0] * sum_unset.unsqueeze(-1) + coefficient[1] * sum_set.unsqueeze(-1)
        )
    return dx, dw, dlogits


def _chunked_backward(ctx, dy, need_x, need_w, need_logits):
    x, weight, logits, codebook, index = ctx.saved_tensors
    draw = ctx.draw
    estimator = ESTIMATOR_FUNCTIONS[draw.estimator]
    dx = torch.empty_like(x) if need_x else None
    dw = torch.zeros_like(weight) if need_w else None
    dlogits = torch.zeros_like(logits) if need_logits else None
    for rows in _chunks(x.shape[0]):
        one_hot = F.one_hot(index[rows].long(), logits.shape[-1]).to(x.dtype)
        masks = (one_hot * codebook).sum(-1)
        if need_x:
            dx[rows] = torch.bmm(dy[rows], weight * masks)
        if not (need_w or need_logits):
            continue
        grad_w = torch.bmm(dy[rows].transpose(1, 2), x[rows])  # G_b
        if need_w:
            dw += (grad_w * masks).sum(0)
        if need_logits:
            uniform = None
            if estimator.needs_uniform:
                uniform = noise.uniform(draw.seed, ctx.param_id, draw.samples[rows], logits.shape, logits.device)
            coefficient = estimator.logit_grad(logits, one_hot, uniform, draw.tau, codebook)
            dlogits += ((grad_w * weight).unsqueeze(-1) * coefficient).sum(0)
    return dx, dw, dlogits
