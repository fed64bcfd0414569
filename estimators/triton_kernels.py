"""Triton kernels: the sampler on CUDA and the fused per-sample masked linear layer.

The noise helpers repeat ``noise.py``'s uint32 steps exactly (the tests
compare bits). Masks for the fused layer are K = 2 category bits packed 8
to a byte (``sampler.draw_bits``); a mask value is m = c0 + (c1 - c0) * bit.

Matrix products use Triton's "tf32x3": each fp32 operand is split into a
TF32 high part and a TF32 remainder and three tensor-core products are
summed in fp32 (the remainder x remainder term, ~2**-22 relative, is
dropped). Measured on an H100 at the seed preset's shapes, the relative
error against float64 is 1.5e-7, below cuBLAS fp32 SGEMM's 2.9e-7, and the
masked matmul runs 4x faster than with IEEE FMA products (docs/PERFORMANCE.md).
This is not TF32: torch's TF32 switches stay off, and the equivalence tests
hold these kernels to the same fp32 tolerances as every implementation.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

_INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def _mix32(x):
    x = x ^ (x >> 16)
    x = x * 0x21F0AAAD
    x = x ^ (x >> 15)
    x = x * 0x735A2D97
    x = x ^ (x >> 15)
    return x


@triton.jit
def _uniform(element, ka, kb):
    """U of ``element`` (uint32) under sample keys (ka, kb): ``noise.py``'s formula."""
    h = _mix32(_mix32(element ^ ka) ^ kb)
    return ((h >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07


@triton.jit
def _log(x):
    """An accurate log near x = 1, where log x is tiny: libdevice's logf on the GPU, as torch uses
    (the interpreter has no libdevice)."""
    if _INTERPRETED:
        return tl.log(x)
    else:
        return libdevice.log(x)


@triton.jit
def _gumbel(u):
    return -_log(-_log(u))


@triton.jit
def _absorb(key, value):
    return _mix32(key ^ _mix32(value + 0x61C88647))


@triton.jit
def _sample_keys(param_key, first_sample, b):
    """Keys (ka, kb) of sample first_sample + b, as ``noise.sample_keys``."""
    ka = _absorb(tl.cast(param_key, tl.uint32), tl.cast(first_sample, tl.uint32) + tl.cast(b, tl.uint32))
    return ka, _absorb(ka, tl.full((), 1, tl.uint32))


@triton.jit
def _gumbel_argmax(logits_ptr, weight, ka, kb, mask, K: tl.constexpr):
    """argmax_k(theta[weight, k] + G_k): first maximum wins, as in torch.argmax."""
    best = tl.full(weight.shape, float("-inf"), tl.float32)
    arg = tl.zeros(weight.shape, tl.int32)
    for k in tl.static_range(K):
        element = weight * K + k
        value = tl.load(logits_ptr + element, mask=mask, other=0.0) + _gumbel(_uniform(element.to(tl.uint32), ka, kb))
        take = value > best
        best = tl.where(take, value, best)
        arg = tl.where(take, k, arg)
    return arg


@triton.jit
def _uniform_kernel(param_key, first_sample, out_ptr, numel, BLOCK: tl.constexpr):
    b = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ka, kb = _sample_keys(param_key, first_sample, b)
    tl.store(out_ptr + b.to(tl.int64) * numel + offs, _uniform(offs.to(tl.uint32), ka, kb), mask=offs < numel)


@triton.jit
def _sample_index_kernel(
    logits_ptr, param_key, first_sample, out_ptr, n_weights, K: tl.constexpr, BLOCK: tl.constexpr
):
    b = tl.program_id(1)
    weight = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = weight < n_weights
    ka, kb = _sample_keys(param_key, first_sample, b)
    arg = _gumbel_argmax(logits_ptr, weight, ka, kb, mask, K)
    tl.store(out_ptr + b.to(tl.int64) * n_weights + weight, arg.to(tl.uint8), mask=mask)


@triton.jit
def _sample_bits_kernel(logits_ptr, param_key, first_sample, out_ptr, n_weights, n_bytes, BLOCK: tl.constexpr):
    b = tl.program_id(1)
    byte = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ka, kb = _sample_keys(param_key, first_sample, b)
    packed = tl.zeros((BLOCK,), tl.int32)
    for j in tl.static_range(8):
        weight = byte * 8 + j
        mask = weight < n_weights
        arg = _gumbel_argmax(logits_ptr, weight, ka, kb, mask, 2)
        packed = packed | (tl.where(mask, arg, 0) << j)
    tl.store(out_ptr + b.to(tl.int64) * n_bytes + byte, packed.to(tl.uint8), mask=byte < n_bytes)


@triton.jit
def _mask_bit(bits_ptr, weight, mask):
    byte = tl.load(bits_ptr + (weight >> 3), mask=mask, other=0).to(tl.int32)
    return (byte >> (weight & 7)) & 1


@triton.jit
def _masked_matmul_kernel(
    a_ptr, w_ptr, bits_ptr, bias_ptr, c_ptr,
    T, N, KD, n_bytes,
    stride_ab, stride_at, stride_ak,
    stride_wn, stride_wk,
    stride_cb, stride_ct, stride_cn,
    code0, code1,
    HAS_BIAS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """C[b] = A[b] @ (W * M_b)^op (+ bias); element (k, n) of the weight operand is W.flat[k*stride_wk + n*stride_wn]."""
    b = tl.program_id(2)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_base = a_ptr + b.to(tl.int64) * stride_ab
    bits_base = bits_ptr + b.to(tl.int64) * n_bytes
    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, KD, BLOCK_K):
        kk = k0 + offs_k
        a = tl.load(
            a_base + offs_t[:, None] * stride_at + kk[None, :] * stride_ak,
            mask=(offs_t[:, None] < T) & (kk[None, :] < KD),
            other=0.0,
        )
        weight = kk[:, None] * stride_wk + offs_n[None, :] * stride_wn
        w_mask = (kk[:, None] < KD) & (offs_n[None, :] < N)
        w = tl.load(w_ptr + weight, mask=w_mask, other=0.0)
        w = w * tl.where(_mask_bit(bits_base, weight, w_mask) != 0, code1, code0)
        acc += tl.dot(a, w, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
    tl.store(
        c_ptr + b.to(tl.int64) * stride_cb + offs_t[:, None] * stride_ct + offs_n[None, :] * stride_cn,
        acc,
        mask=(offs_t[:, None] < T) & (offs_n[None, :] < N),
    )


@triton.jit
def _masked_weight_grad_kernel(
    dy_ptr, x_ptr, bits_ptr, logits_ptr, out_ptr, param_key, first_sample,
    B, T, O, I, n_bytes, samples_per_split,
    stride_dyb, stride_dyt, stride_dyo,
    stride_xb, stride_xt, stride_xi,
    inv_tau, code0, code1,
    GUMBEL: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Per tile of W, over this split's samples b, with G_b = dy_b^T x_b:

    out[split, 0] = sum_b G_b, out[split, 1] = sum_b G_b * bit_b and, for the
    Gumbel-softmax estimator, out[split, 2] = sum_b G_b * alpha_b with
    alpha_b = y0 y1 (c1 - c0) / tau, y = softmax((theta + G(U_b)) / tau).
    """
    split = tl.program_id(2)
    offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_t = tl.arange(0, BLOCK_T)
    tile_mask = (offs_o[:, None] < O) & (offs_i[None, :] < I)
    weight = offs_o[:, None] * I + offs_i[None, :]
    if GUMBEL:
        theta0 = tl.load(logits_ptr + 2 * weight, mask=tile_mask, other=0.0)
        theta1 = tl.load(logits_ptr + 2 * weight + 1, mask=tile_mask, other=0.0)
    sum_all = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    sum_set = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    sum_alpha = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    b_start = split * samples_per_split
    b_end = tl.minimum(B, b_start + samples_per_split)
    for b in range(b_start, b_end):
        b64 = tl.cast(b, tl.int64)
        dy_base = dy_ptr + b64 * stride_dyb
        x_base = x_ptr + b64 * stride_xb
        g = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
        for t0 in range(0, T, BLOCK_T):
            tt = t0 + offs_t
            dy_t = tl.load(
                dy_base + tt[None, :] * stride_dyt + offs_o[:, None] * stride_dyo,
                mask=(tt[None, :] < T) & (offs_o[:, None] < O),
                other=0.0,
            )
            x_t = tl.load(
                x_base + tt[:, None] * stride_xt + offs_i[None, :] * stride_xi,
                mask=(tt[:, None] < T) & (offs_i[None, :] < I),
                other=0.0,
            )
            g += tl.dot(dy_t, x_t, input_precision=PRECISION)
        sum_all += g
        sum_set += tl.where(_mask_bit(bits_ptr + b64 * n_bytes, weight, tile_mask) != 0, g, 0.0)
        if GUMBEL:
            ka, kb = _sample_keys(param_key, first_sample, b)
            z0 = theta0 + _gumbel(_uniform((2 * weight).to(tl.uint32), ka, kb))
            z1 = theta1 + _gumbel(_uniform((2 * weight + 1).to(tl.uint32), ka, kb))
            y1 = tl.sigmoid((z1 - z0) * inv_tau)
            sum_alpha += g * (y1 * (1.0 - y1) * (code1 - code0) * inv_tau)
    plane = O * I
    out = out_ptr + split.to(tl.int64) * 3 * plane + weight
    tl.store(out, sum_all, mask=tile_mask)
    tl.store(out + plane, sum_set, mask=tile_mask)
    if GUMBEL:
        tl.store(out + 2 * plane, sum_alpha, mask=tile_mask)


# Tile sizes and precision chosen by a sweep on an H100 at the seed preset's shapes
# (tools/profile_gpu.py --sweep; numbers in docs/PERFORMANCE.md).
_SAMPLER_BLOCK = 1024
_MATMUL_BLOCKS = dict(BLOCK_T=128, BLOCK_N=64, BLOCK_K=32, num_warps=8)
_WEIGHT_GRAD_BLOCKS = dict(BLOCK_O=32, BLOCK_I=64, BLOCK_T=32, num_warps=4)
_TARGET_PROGRAMS = 264  # two waves of the H100's 132 multiprocessors
_DOT_PRECISION = "tf32x3"  # see the module docstring; "ieee" is 4x slower at the same accuracy


def uniform(param_key: int, samples: range, numel: int, device) -> torch.Tensor:
    """float32 [len(samples), numel]: ``noise.uniform`` of consecutive ``samples``, computed on ``device``."""
    out = torch.empty(len(samples), numel, dtype=torch.float32, device=device)
    grid = (triton.cdiv(numel, _SAMPLER_BLOCK), len(samples))
    _uniform_kernel[grid](param_key, samples.start, out, numel, BLOCK=_SAMPLER_BLOCK)
    return out


def sample_index(logits: torch.Tensor, param_key: int, samples: range) -> torch.Tensor:
    """uint8 [B, *logits.shape[:-1]]: the Gumbel-max category of every weight for each sample."""
    logits = logits.contiguous()
    n_weights = logits.numel() // logits.shape[-1]
    out = torch.empty(len(samples), *logits.shape[:-1], dtype=torch.uint8, device=logits.device)
    grid = (triton.cdiv(n_weights, _SAMPLER_BLOCK), len(samples))
    _sample_index_kernel[grid](
        logits, param_key, samples.start, out, n_weights, K=logits.shape[-1], BLOCK=_SAMPLER_BLOCK
    )
    return out


def sample_bits(logits: torch.Tensor, param_key: int, samples: range) -> torch.Tensor:
    """uint8 [B, ceil(W / 8)]: the K = 2 sample packed as bits (``sampler.draw_bits``'s layout)."""
    logits = logits.contiguous()
    n_weights = logits.numel() // 2
    n_bytes = triton.cdiv(n_weights, 8)
    out = torch.empty(len(samples), n_bytes, dtype=torch.uint8, device=logits.device)
    grid = (triton.cdiv(n_bytes, _SAMPLER_BLOCK // 8), len(samples))
    _sample_bits_kernel[grid](
        logits, param_key, samples.start, out, n_weights, n_bytes, BLOCK=_SAMPLER_BLOCK // 8
    )
    return out


def _masked_matmul(a, weight, bits, codes, bias, transpose_weight: bool) -> torch.Tensor:
    batch, time, kd = a.shape
    out_features, in_features = weight.shape
    n = in_features if transpose_weight else out_features
    c = torch.empty(batch, time, n, dtype=a.dtype, device=a.device)
    stride_wn, stride_wk = (1, in_features) if transpose_weight else (in_features, 1)
    blocks = _MATMUL_BLOCKS
    grid = (triton.cdiv(time, blocks["BLOCK_T"]), triton.cdiv(n, blocks["BLOCK_N"]), batch)
    _masked_matmul_kernel[grid](
        a, weight, bits, bias if bias is not None else weight, c,
        time, n, kd, bits.shape[1],
        *a.stride(), stride_wn, stride_wk, *c.stride(),
        *codes,
        HAS_BIAS=bias is not None, PRECISION=_DOT_PRECISION, **blocks,
    )  # fmt: skip
    return c


def masked_linear(x, weight, bits, codes, bias) -> torch.Tensor:
    """y[b] = x[b] (W * m_b)^T + bias for x [B, T, in], W [out, in]; m_b = codes[bit] from bits [B, ceil(W/8)]."""
    return _masked_matmul(x, weight.contiguous(), bits, codes, bias, transpose_weight=False)


def masked_linear_input_grad(dy, weight, bits, codes) -> torch.Tensor:
    """dx[b] = dy[b] (W * m_b) for dy [B, T, out]."""
    return _masked_matmul(dy, weight.contiguous(), bits, codes, None, transpose_weight=True)


def masked_weight_grad(dy, x, bits, codes, gumbel=None):
    """Sums over samples of G_b = dy_b^T x_b: (sum_b G_b, sum_b G_b bit_b, sum_b G_b alpha_b or None).

    ``gumbel`` is None, or (logits [out, in, 2], param_key, first_sample, tau) for the Gumbel-softmax
    coefficient alpha_b (see the kernel). The batch is split into groups of
    samples reduced by separate programs, so the partial sums take
    3 * splits * out * in floats, whatever the batch size.
    """
    batch, time, out_features = dy.shape
    in_features = x.shape[2]
    blocks = _WEIGHT_GRAD_BLOCKS
    tiles = triton.cdiv(out_features, blocks["BLOCK_O"]) * triton.cdiv(in_features, blocks["BLOCK_I"])
    splits = max(1, min(batch, _TARGET_PROGRAMS // tiles))
    per_split = triton.cdiv(batch, splits)
    splits = triton.cdiv(batch, per_split)
    partial = torch.empty(splits, 3, out_features, in_features, dtype=torch.float32, device=dy.device)
    if gumbel is None:
        logits, key, first_sample, inv_tau = dy, 0, 0, 1.0  # placeholders: read only for Gumbel
    else:
        logits, key, first_sample, tau = gumbel
        logits, inv_tau = logits.contiguous(), 1.0 / tau
    grid = (triton.cdiv(out_features, blocks["BLOCK_O"]), triton.cdiv(in_features, blocks["BLOCK_I"]), splits)
    _masked_weight_grad_kernel[grid](
        dy, x, bits, logits, partial, key, first_sample,
        batch, time, out_features, in_features, bits.shape[1], per_split,
        *dy.stride(), *x.stride(),
        inv_tau, *codes,
        GUMBEL=gumbel is not None, PRECISION=_DOT_PRECISION, **blocks,
    )  # fmt: skip
    sums = partial.sum(0)
    return sums[0], sums[1], (sums[2] if gumbel is not None else None)
