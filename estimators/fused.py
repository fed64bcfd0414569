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

import torch
import torch.nn.functional as F

from . import _backend, noise, sampler
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
    if torch.is_autocast_enabled(device_type):
        x = x.to(torch.get_autocast_dtype(device_type))
    with torch.autocast(device_type, enabled=False):
        return _FusedStochasticLinear.apply(
            x, layer.weight, layer.bias, layer.logits, layer.codebook, layer.codes, layer.param_id, draw
        )


def _dot_precision(kernels) -> str:
    """The fp32 dot product's precision: TF32 where torch's TF32 switch is on, else the kernels' fp32-accurate one."""
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else kernels.DOT_PRECISION


class _FusedStochasticLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, logits, codebook, codes, param_id, draw):
        x = x.contiguous()
        kernels = _backend.triton_kernels(x.device) if logits.shape[-1] == 2 else None
        if kernels is not None:
            ctx.precision = _dot_precision(kernels)
            masks = sampler.draw_bits(logits, draw.seed, param_id, draw.samples)
            y = kernels.masked_linear(x, weight, masks, codes, bias, precision=ctx.precision)
        else:
            masks = sampler.draw_index(logits, draw.seed, param_id, draw.samples)
            y = torch.empty(*x.shape[:2], weight.shape[0], dtype=x.dtype, device=x.device)
            for rows in _chunks(x.shape[0]):
                w = (weight * _mask_values(masks[rows], codebook)).to(x.dtype)
                y[rows] = torch.baddbmm(bias.to(x.dtype), x[rows], w.transpose(1, 2))
        ctx.kernels, ctx.codes, ctx.param_id, ctx.draw = kernels, codes, param_id, draw
        ctx.save_for_backward(x, weight, logits, codebook, masks)
        return y

    @staticmethod
    def backward(ctx, dy):
        if torch.is_grad_enabled():  # create_graph=True: second derivatives would need the kernels' own backward
            raise RuntimeError(
                "implementation 'fused' does not support double backward (create_graph=True); "
                "use 'bmm', 'einsum', 'vmap' or 'loop' for second derivatives"
            )
        dy = dy.contiguous()
        x, weight, logits = ctx.saved_tensors[:3]
        need_x, need_w, need_bias, need_logits = ctx.needs_input_grad[:4]
        backward = _kernel_backward if ctx.kernels is not None else _chunked_backward
        dx, dw, dlogits = backward(ctx, dy, need_x, need_w, need_logits)
        dbias = dy.sum((0, 1), dtype=torch.float32).to(weight.dtype) if need_bias else None
        dw = dw.to(weight.dtype) if dw is not None else None
        dlogits = dlogits.to(logits.dtype) if dlogits is not None else None
        return dx, dw, dbias, dlogits, None, None, None, None


def _chunks(batch: int):
    return [slice(start, start + CPU_CHUNK) for start in range(0, batch, CPU_CHUNK)]


def _mask_values(index: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """m = D . c in fp32, [B, out, in], from a category index [B, out, in]."""
    return (F.one_hot(index.long(), codebook.shape[0]).to(torch.float32) * codebook.float()).sum(-1)


def _kernel_backward(ctx, dy, need_x, need_w, need_logits):
    x, weight, logits, codebook, bits = ctx.saved_tensors
    draw, codes, kernels = ctx.draw, ctx.codes, ctx.kernels
    estimator = ESTIMATOR_FUNCTIONS[draw.estimator]
    dx = kernels.masked_linear_input_grad(dy, weight, bits, codes, precision=ctx.precision) if need_x else None
    if not (need_w or need_logits):
        return dx, None, None
    gumbel = None
    if estimator.needs_uniform:
        gumbel = (logits, noise.param_key(draw.seed, ctx.param_id), draw.samples.start, draw.tau)
    sum_all, sum_set, sum_alpha = kernels.masked_weight_grad(dy, x, bits, codes, gumbel, precision=ctx.precision)
    sum_unset = sum_all - sum_set
    dw = codes[0] * sum_unset + codes[1] * sum_set if need_w else None
    dlogits = None
    weight = weight.float()
    if need_logits and estimator.needs_uniform:
        d1 = weight * sum_alpha  # K = 2: a_b[0] = -a_b[1] = -alpha_b
        dlogits = torch.stack((-d1, d1), dim=-1)
    elif need_logits:
        categories = torch.eye(2, dtype=torch.float32, device=logits.device).view(2, 1, 1, 2)
        coefficient = estimator.logit_grad(logits.float(), categories, None, draw.tau, codebook.float())
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
    dw = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
    dlogits = torch.zeros_like(logits, dtype=torch.float32) if need_logits else None
    logits32, codebook32, weight32 = logits.float(), codebook.float(), weight.float()
    for rows in _chunks(x.shape[0]):
        one_hot = F.one_hot(index[rows].long(), logits.shape[-1]).to(torch.float32)
        masks = (one_hot * codebook32).sum(-1)
        if need_x:
            dx[rows] = torch.bmm(dy[rows], (weight32 * masks).to(dy.dtype))
        if not (need_w or need_logits):
            continue
        grad_w = torch.bmm(dy[rows].transpose(1, 2), x[rows]).float()  # G_b
        if need_w:
            dw += (grad_w * masks).sum(0)
        if need_logits:
            uniform = None
            if estimator.needs_uniform:
                uniform = noise.uniform(draw.seed, ctx.param_id, draw.samples[rows], logits.shape, logits.device)
            coefficient = estimator.logit_grad(logits32, one_hot, uniform, draw.tau, codebook32)
            dlogits += ((grad_w * weight32).unsqueeze(-1) * coefficient).sum(0)
    return dx, dw, dlogits
