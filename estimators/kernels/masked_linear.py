"""The fused per-sample masked linear layer: y[b] = x[b] (W * M_b)^T + bias and its input gradient dy[b] (W * M_b).

Activations (x, dy) may be fp32, bf16 or fp16; weights keep their own dtype; products accumulate in fp32.
The masked weight W * M_b is formed in fp32 and rounded to the activations' dtype before the dot, as
autocast does. fp32 matrix products use Triton's "tf32x3" by default (``tiles.DOT_PRECISION``): each fp32
operand is split into a TF32 high part and a TF32 remainder and three tensor-core products are summed in
fp32 (the remainder x remainder term, ~2**-22 relative, is dropped). Measured on an H100 at the seed
preset's shapes, the relative error against float64 is 1.5e-7, below cuBLAS fp32 SGEMM's 2.9e-7, and the
masked matmul runs 4x faster than with IEEE FMA products (docs/PERFORMANCE.md). This is not TF32: the
equivalence tests hold these kernels to the same fp32 tolerances as every implementation. Where torch's
TF32 switch is on, the fused layer passes ``precision="tf32"`` instead, as cuBLAS then computes.
Masks and codebooks are read as ``masks`` describes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import cdiv, launch
from .masks import codebook_codes, codebook_codes_of_rows, codebook_table, mask_bit, sample_stride
from .tiles import DOT_PRECISION, INPUT_GRAD_WEIGHT_COPY, LARGE_OUTPUT, MATMUL_TILES_BY_SHAPE


@triton.jit
def _masked_matmul_kernel(
    # Operands. Shapes in [brackets]; the weight operand is read through strides, so one kernel
    # serves the forward (W^T) and the input gradient (W).
    a_ptr,  # [batch, time, reduce_dim]: x in the forward, dy in the input gradient
    weight_ptr,  # W [out, in] or a copy of W^T: operand element (k, n) at k * stride_wk + n * stride_wn
    mask_bits_ptr,  # uint8, sample b's K = 2 mask bits (8 weights a byte) from b * mask_stride on
    bias_ptr,  # [n_cols] (read only when HAS_BIAS)
    c_ptr,  # [batch, time, n_cols]: the output
    # Sizes.
    time,
    n_cols,
    reduce_dim,
    mask_stride,
    # Strides, in elements.
    stride_ab,
    stride_at,
    stride_ak,
    stride_wn,
    stride_wk,
    bit_stride_n,  # operand element (k, n) is weight k * bit_stride_k + n * bit_stride_n of W's [out, in] bits
    bit_stride_k,
    stride_cb,
    stride_ct,
    stride_cn,
    # Mask values: m = c0 where the bit is 0, c1 where it is 1, read from a codebook table [layers, 2] in device
    # memory: row out // layer_rows for W's row (out feature) out, the row of the layer it belongs to.
    codebook_ptr,
    layer_rows,
    # Compile-time switches and tiles.
    HAS_BIAS: tl.constexpr,
    OUT_ON_K: tl.constexpr,  # W's rows run along k (the input gradient), else along n (the forward)
    STACKED: tl.constexpr,  # the table has a row per layer (else one row: c0, c1 are scalars)
    BLOCK_T: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """C[b] = A[b] @ (W * M_b)^op (+ bias), one [BLOCK_T, BLOCK_N] tile of C[b] a program."""
    b = tl.program_id(2)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_base = a_ptr + b.to(tl.int64) * stride_ab
    bits_base = mask_bits_ptr + b.to(tl.int64) * mask_stride
    if not STACKED:
        code0, code1 = codebook_codes(codebook_ptr)
    elif not OUT_ON_K:  # one codebook row per output column: loaded once, outside the k loop
        code0, code1 = codebook_codes_of_rows(codebook_ptr, offs_n, layer_rows, offs_n < n_cols)
        code0, code1 = code0[None, :], code1[None, :]
    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, reduce_dim, BLOCK_K):
        kk = k0 + offs_k
        if STACKED and OUT_ON_K:  # one codebook row per reduced index: loaded per k block
            code0, code1 = codebook_codes_of_rows(codebook_ptr, kk, layer_rows, kk < reduce_dim)
            code0, code1 = code0[:, None], code1[:, None]
        a = tl.load(
            a_base + offs_t[:, None] * stride_at + kk[None, :] * stride_ak,
            mask=(offs_t[:, None] < time) & (kk[None, :] < reduce_dim),
            other=0.0,
        )
        w_mask = (kk[:, None] < reduce_dim) & (offs_n[None, :] < n_cols)
        w = tl.load(weight_ptr + kk[:, None] * stride_wk + offs_n[None, :] * stride_wn, mask=w_mask, other=0.0)
        bit = mask_bit(bits_base, kk[:, None] * bit_stride_k + offs_n[None, :] * bit_stride_n, w_mask)
        # The masked weight in fp32, rounded to the activations' dtype (a no-op for fp32): what autocast does.
        w = (w * tl.where(bit != 0, code1, code0)).to(a.dtype)
        acc += tl.dot(a, w, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < n_cols, other=0.0)[None, :]
    tl.store(
        c_ptr + b.to(tl.int64) * stride_cb + offs_t[:, None] * stride_ct + offs_n[None, :] * stride_cn,
        acc,
        mask=(offs_t[:, None] < time) & (offs_n[None, :] < n_cols),
    )


# The activations' (x, dy) dtypes the masked matmul and its gradients take; the fused layer runs float64 (whose
# products would not accumulate in float64 here) through its torch path instead.
ACTIVATION_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _masked_matmul(
    a, weight, mask_bits, codebook, bias, transpose_weight: bool, tiles, precision: str, weight_copy, layer_rows
):
    """C = A (W * M)^T (forward) or A (W * M) (``transpose_weight``: the input gradient).

    The dot's second operand B[k, n] is W[n, k] in the forward, read with k (W's rows) contiguous; in the
    input gradient it is W[k, n], contiguous in n, unless ``weight_copy`` reads it from a copy of W^T,
    contiguous in k again (the bits keep W's layout).
    """
    batch, time, reduce_dim = a.shape
    out_features, in_features = weight.shape
    n_cols = in_features if transpose_weight else out_features
    if tiles is None:
        large = batch * time * n_cols >= LARGE_OUTPUT
        # MatmulShape's fields as a plain tuple, which finds the same entry (a NamedTuple hashes and compares as
        # its tuple) without building a MatmulShape at every launch.
        tiles = MATMUL_TILES_BY_SHAPE[a.dtype != torch.float32, transpose_weight, large]
    codebook, layer_rows, stacked = codebook_table(codebook, out_features, layer_rows, a.device)
    c = torch.empty(batch, time, n_cols, dtype=a.dtype, device=a.device)
    bit_stride_n, bit_stride_k = (1, in_features) if transpose_weight else (in_features, 1)
    stride_wn, stride_wk = bit_stride_n, bit_stride_k
    if transpose_weight and weight_copy:
        weight = weight.t().contiguous()  # [in, out]: B[k, n] = W^T[n, k]
        stride_wn, stride_wk = out_features, 1
    grid = (cdiv(time, tiles["BLOCK_T"]), cdiv(n_cols, tiles["BLOCK_N"]), batch)
    launch(
        _masked_matmul_kernel,
        grid,
        a,
        weight,
        mask_bits,
        bias if bias is not None else weight,
        c,
        time,
        n_cols,
        reduce_dim,
        sample_stride(mask_bits),
        *a.stride(),
        stride_wn,
        stride_wk,
        bit_stride_n,
        bit_stride_k,
        *c.stride(),
        codebook,
        layer_rows,
        HAS_BIAS=bias is not None,
        OUT_ON_K=transpose_weight,
        STACKED=stacked,
        PRECISION=precision,
        **tiles,
    )
    return c


def masked_linear(
    x, weight, mask_bits, codebook, bias, tiles=None, precision=DOT_PRECISION, layer_rows=None
) -> torch.Tensor:
    """y[b] = x[b] (W * m_b)^T + bias: the fused layer's forward.

    Args:
        x: ``[B, T, in]``.
        weight: W ``[out, in]``.
        mask_bits: uint8 ``[B, ceil(out * in / 8)]``, sample b's mask bits (``sampler.draw_bits``).
        codebook: the mask values (c0, c1) of bit 0 and bit 1, m_b = c0 + (c1 - c0) * bit: a floating tensor
            ``[2]`` on x's device (fp32, fp16, bf16 or fp64; the kernel reads it when it runs and computes in
            fp32), or a table ``[layers, 2]``, one row per layer of W's rows stacked (``layer_rows`` rows each).
        bias: ``[out]`` or None.
        tiles: ``MATMUL_TILES``' keys (the kernel's tile sizes and warps); None: ``tiles.MATMUL_TILES_BY_SHAPE``'s
            for the activations' dtype, the pass and the output's size.
        precision: the fp32 dot product's ``input_precision`` ("tf32x3", "tf32", "ieee").
        layer_rows: the rows of W per codebook row; None: out / layers (W is ``layers`` layers of equal size).

    Returns:
        y ``[B, T, out]`` in x's dtype.
    """
    return _masked_matmul(x, weight.contiguous(), mask_bits, codebook, bias, False, tiles, precision, False, layer_rows)


def masked_linear_input_grad(
    dy,
    weight,
    mask_bits,
    codebook,
    tiles=None,
    precision=DOT_PRECISION,
    weight_copy=INPUT_GRAD_WEIGHT_COPY,
    layer_rows=None,
):
    """dx[b] = dy[b] (W * m_b) for dy ``[B, T, out]``: ``[B, T, in]``; arguments as ``masked_linear``.

    ``weight_copy``: read W from a transposed copy (one [in, out] copy a call), so that the dot's operand
    is contiguous along the reduced dimension as in the forward.
    """
    return _masked_matmul(
        dy, weight.contiguous(), mask_bits, codebook, None, True, tiles, precision, weight_copy, layer_rows
    )
