"""Triton kernels: the sampler on CUDA and the fused per-sample masked linear layer.

The noise helpers repeat ``noise.py``'s uint32 steps exactly (the tests
compare bits). Masks for the fused layer are K = 2 category bits packed 8
to a byte (``sampler.draw_bits``); a mask value is m = c0 + (c1 - c0) * bit,
with (c0, c1) read from the codebook in device memory when a kernel runs
(never a host copy: a loaded, cast or edited codebook, or a CUDA graph's
replay, sees its current values).

Activations (x, dy) may be fp32, bf16 or fp16; weights and logits keep their
own dtype; products accumulate in fp32. fp32 matrix products use Triton's
"tf32x3" by default: each fp32 operand is split into a
TF32 high part and a TF32 remainder and three tensor-core products are
summed in fp32 (the remainder x remainder term, ~2**-22 relative, is
dropped). Measured on an H100 at the seed preset's shapes, the relative
error against float64 is 1.5e-7, below cuBLAS fp32 SGEMM's 2.9e-7, and the
masked matmul runs 4x faster than with IEEE FMA products (docs/PERFORMANCE.md).
This is not TF32: the equivalence tests hold these kernels to the same fp32
tolerances as every implementation. Where torch's TF32 switch is on, the
fused layer passes ``precision="tf32"`` instead, as cuBLAS then computes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from . import noise
from ._backend import INTERPRETED
from ._launch import launch
from .gradients import GST_GAP, GUMBEL_RAO_DRAWS

_INTERPRETED = tl.constexpr(INTERPRETED)
# The estimators _param_grads_kernel computes, as compile-time codes (``ESTIMATOR_CODES`` maps the names).
STRAIGHT_THROUGH = tl.constexpr(0)
REINMAX = tl.constexpr(1)
GUMBEL_SOFTMAX = tl.constexpr(2)
GAPPED_STRAIGHT_THROUGH = tl.constexpr(3)
GUMBEL_RAO = tl.constexpr(4)
ESTIMATOR_CODES = {"ste": 0, "reinmax": 1, "gumbel": 2, "gst": 3, "gumbel_rao": 4}
NO_NOISE = tl.constexpr(-1)  # the weight-gradient kernel's NOISE where no estimator's noise is summed
NOISE_ESTIMATORS = ("gumbel", "gumbel_rao")  # their coefficient needs each sample's noise: summed per sample
_CONDITIONAL_KEY = tl.constexpr(noise.CONDITIONAL_KEY)
_INT64_MAX = tl.constexpr(2**63 - 1)  # the neutral elements of the ids' min and max
_INT64_MIN = tl.constexpr(-(2**63))


@triton.jit
def _mix32(x):
    x = x ^ (x >> 16)
    x = x * 0x21F0AAAD
    x = x ^ (x >> 15)
    x = x * 0x735A2D97
    x = x ^ (x >> 15)
    return x


@triton.jit
def _counter(element, ka, kb):
    """The 23-bit hash n of ``element`` (uint32) under keys (ka, kb): U = (n + 0.5) 2**-23."""
    return _mix32(_mix32(element ^ ka) ^ kb) >> 9


@triton.jit
def _uniform(element, ka, kb):
    """U of ``element`` (uint32) under sample keys (ka, kb): ``noise.py``'s formula."""
    return (_counter(element, ka, kb).to(tl.float32) + 0.5) * 1.1920928955078125e-07


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
def _seed_param_key(seed_low, seed_high, param):
    """``noise.param_key(seed, param)`` from the seed's low and high 32 bits (uint32 each)."""
    low = _absorb(tl.full((), 0, tl.uint32), seed_low)
    return _absorb(_absorb(low, seed_high), tl.cast(param, tl.uint32))


@triton.jit
def _param_key(seed_ptr, key, SEED_ON_DEVICE: tl.constexpr):
    """The parameter's 32-bit key (``noise.param_key``): ``key`` itself, computed on the host, or, where the
    seed lives in device memory (an int64 at ``seed_ptr``, its 64 bits the seed), computed here from the
    seed and the parameter index ``key``, so a captured CUDA graph reads the seed's value at each replay."""
    if SEED_ON_DEVICE:
        seed = tl.load(seed_ptr)  # int64 -> uint32 keeps the low 32 bits
        return _seed_param_key(seed.to(tl.uint32), (seed >> 32).to(tl.uint32), key)
    else:
        return tl.cast(key, tl.uint32)


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
def _uniform_kernel(seed_ptr, key, first_sample, out_ptr, numel, SEED_ON_DEVICE: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ka, kb = _sample_keys(_param_key(seed_ptr, key, SEED_ON_DEVICE), first_sample, b)
    tl.store(out_ptr + b.to(tl.int64) * numel + offs, _uniform(offs.to(tl.uint32), ka, kb), mask=offs < numel)


@triton.jit
def _sample_index_kernel(
    logits_ptr,
    seed_ptr,
    key,
    first_sample,
    out_ptr,
    n_weights,
    K: tl.constexpr,
    SEED_ON_DEVICE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(1)
    weight = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = weight < n_weights
    ka, kb = _sample_keys(_param_key(seed_ptr, key, SEED_ON_DEVICE), first_sample, b)
    arg = _gumbel_argmax(logits_ptr, weight, ka, kb, mask, K)
    tl.store(out_ptr + b.to(tl.int64) * n_weights + weight, arg.to(tl.uint8), mask=mask)


@triton.jit
def _packed_sample_bits(logits_ptr, byte, ka, kb, n_weights, BLOCK: tl.constexpr):
    """The K = 2 samples of weights 8 byte .. 8 byte + 7 under keys (ka, kb), packed into int32 [BLOCK] bytes."""
    packed = tl.zeros((BLOCK,), tl.int32)
    for j in tl.static_range(8):
        weight = byte * 8 + j
        mask = weight < n_weights
        arg = _gumbel_argmax(logits_ptr, weight, ka, kb, mask, 2)
        packed = packed | (tl.where(mask, arg, 0) << j)
    return packed


@triton.jit
def _sample_bits_kernel(
    logits_ptr,
    seed_ptr,
    key,
    first_sample,
    out_ptr,
    n_weights,
    n_bytes,
    SEED_ON_DEVICE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(1)
    byte = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ka, kb = _sample_keys(_param_key(seed_ptr, key, SEED_ON_DEVICE), first_sample, b)
    packed = _packed_sample_bits(logits_ptr, byte, ka, kb, n_weights, BLOCK)
    tl.store(out_ptr + b.to(tl.int64) * n_bytes + byte, packed.to(tl.uint8), mask=byte < n_bytes)


@triton.jit(do_not_specialize=["seed_low", "seed_high", "first_sample"])
def _sample_bits_layers_kernel(
    logits_table_ptr,  # int64 [layers]: the address of each layer's logits [n_weights, 2] (contiguous)
    params_ptr,  # int64 [layers]: each layer's parameter index (its noise stream)
    seed_ptr,  # the seed on the device (read when SEED_ON_DEVICE), else unread
    seed_low,  # an int seed's low and high 32 bits (when not SEED_ON_DEVICE)
    seed_high,
    first_sample,
    out_ptr,  # uint8 [batch, layers, n_bytes]: a sample's masks of every layer side by side
    n_weights,
    n_bytes,
    LOGITS_DTYPE: tl.constexpr,
    SEED_ON_DEVICE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``_sample_bits_kernel`` for several layers of one shape in one launch: program (i, b, layer)."""
    layer = tl.program_id(2)
    b = tl.program_id(1)
    logits_ptr = tl.load(logits_table_ptr + layer).to(tl.pointer_type(LOGITS_DTYPE))
    param = tl.load(params_ptr + layer)
    if SEED_ON_DEVICE:
        param_key = _param_key(seed_ptr, param, True)
    else:
        param_key = _seed_param_key(tl.cast(seed_low, tl.uint32), tl.cast(seed_high, tl.uint32), param)
    byte = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ka, kb = _sample_keys(param_key, first_sample, b)
    packed = _packed_sample_bits(logits_ptr, byte, ka, kb, n_weights, BLOCK)
    out = out_ptr + (b.to(tl.int64) * tl.num_programs(2) + layer) * n_bytes + byte
    tl.store(out, packed.to(tl.uint8), mask=byte < n_bytes)


@triton.jit
def _step_values_kernel(
    tokens_ptr,  # [n_tokens] int64 or int32 (contiguous)
    safe_tokens_ptr,  # [n_tokens], tokens' dtype: the ids clamped into [0, vocab_size)
    n_tokens,
    vocab_size,
    logits_table_ptr,  # int64 [layers]: the address of each layer's contiguous logits
    numels_ptr,  # int64 [layers]: their element counts
    out_ptr,  # int64 [layers + 1, programs, 2]
    LOGITS_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Program (i, row) reduces block i of a layer's logits (row < layers) or of the token ids (the last row).

    A layer's row gets (the largest bit pattern of |logit| as fp32, 0): for non-negative floats the bit
    patterns order as the values do, +inf above every finite one and NaN above +inf. The tokens' row gets
    (min, max) of the block's ids (int64's extremes where the block is empty), and stores the clamped ids.
    """
    i = tl.program_id(0)
    row = tl.program_id(1)
    offs = i.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    slot = out_ptr + (row.to(tl.int64) * tl.num_programs(0) + i) * 2
    if row < tl.num_programs(1) - 1:
        logits_ptr = tl.load(logits_table_ptr + row).to(tl.pointer_type(LOGITS_DTYPE))
        inside = offs < tl.load(numels_ptr + row)
        logits = tl.load(logits_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        tl.store(slot, tl.max(tl.abs(logits).to(tl.int32, bitcast=True), 0).to(tl.int64))
        tl.store(slot + 1, tl.zeros((), tl.int64))
    else:
        inside = offs < n_tokens
        ids = tl.load(tokens_ptr + offs, mask=inside, other=0).to(tl.int64)
        tl.store(safe_tokens_ptr + offs, tl.minimum(tl.maximum(ids, 0), vocab_size - 1), mask=inside)
        tl.store(slot, tl.min(tl.where(inside, ids, _INT64_MAX), 0))
        tl.store(slot + 1, tl.max(tl.where(inside, ids, _INT64_MIN), 0))


@triton.jit
def _codes(codebook_ptr):
    """(c0, c1) in fp32, scalars: the first row of a codebook table [layers, 2] (any float dtype, contiguous)."""
    return tl.load(codebook_ptr).to(tl.float32), tl.load(codebook_ptr + 1).to(tl.float32)


@triton.jit
def _codes_of_rows(codebook_ptr, out, layer_rows, inside):
    """(c0, c1) in fp32 of each of W's rows ``out`` (a vector): codebook table row out // layer_rows (0 outside)."""
    row = out // layer_rows
    code0 = tl.load(codebook_ptr + 2 * row, mask=inside, other=0.0).to(tl.float32)
    code1 = tl.load(codebook_ptr + 2 * row + 1, mask=inside, other=0.0).to(tl.float32)
    return code0, code1


@triton.jit
def _mask_bit(bits_ptr, weight, mask):
    byte = tl.load(bits_ptr + (weight >> 3), mask=mask, other=0).to(tl.int32)
    return (byte >> (weight & 7)) & 1


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
        code0, code1 = _codes(codebook_ptr)
    elif not OUT_ON_K:  # one codebook row per output column: loaded once, outside the k loop
        code0, code1 = _codes_of_rows(codebook_ptr, offs_n, layer_rows, offs_n < n_cols)
        code0, code1 = code0[None, :], code1[None, :]
    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, reduce_dim, BLOCK_K):
        kk = k0 + offs_k
        if STACKED and OUT_ON_K:  # one codebook row per reduced index: loaded per k block
            code0, code1 = _codes_of_rows(codebook_ptr, kk, layer_rows, kk < reduce_dim)
            code0, code1 = code0[:, None], code1[:, None]
        a = tl.load(
            a_base + offs_t[:, None] * stride_at + kk[None, :] * stride_ak,
            mask=(offs_t[:, None] < time) & (kk[None, :] < reduce_dim),
            other=0.0,
        )
        w_mask = (kk[:, None] < reduce_dim) & (offs_n[None, :] < n_cols)
        w = tl.load(weight_ptr + kk[:, None] * stride_wk + offs_n[None, :] * stride_wn, mask=w_mask, other=0.0)
        bit = _mask_bit(bits_base, kk[:, None] * bit_stride_k + offs_n[None, :] * bit_stride_n, w_mask)
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


@triton.jit
def _logaddexp(a, b):
    top = tl.maximum(a, b)
    return top + _log(1.0 + tl.exp(-tl.abs(a - b)))


@triton.jit
def _gumbel_rao_jacobian(theta0, theta1, chosen, counter0, counter1, inv_tau, DRAWS: tl.constexpr):
    """mean over m of y_m0 y_m1, y_m = softmax(z_m / tau), z_m the Gumbels conditioned on the sample
    (category 1 where ``chosen``): ``gradients.GumbelRao`` for K = 2, its draws
    U'_m = ``noise.conditional_uniform`` of the element counters (the 23-bit hashes behind U)."""
    log_z = _logaddexp(theta0, theta1)
    total = tl.zeros(theta0.shape, tl.float32)
    for m in tl.static_range(DRAWS):
        ka = _absorb(tl.full((), _CONDITIONAL_KEY, tl.uint32), tl.full((), m, tl.uint32))
        kb = _absorb(ka, tl.full((), 1, tl.uint32))
        log_e0 = _log(-_log(_uniform(counter0, ka, kb)))
        log_e1 = _log(-_log(_uniform(counter1, ka, kb)))
        log_e_chosen = tl.where(chosen, log_e1, log_e0)
        z0 = tl.where(chosen, -_logaddexp(log_e0 - theta0, log_e_chosen - log_z), log_z - log_e0)
        z1 = tl.where(chosen, log_z - log_e1, -_logaddexp(log_e1 - theta1, log_e_chosen - log_z))
        y1 = tl.sigmoid((z1 - z0) * inv_tau)
        total += y1 * (1.0 - y1)
    return total / DRAWS


@triton.jit
def _masked_weight_grad_kernel(
    # Operands. Shapes in [brackets]; (lhs, rhs) = (dy, x), or (x, dy) where LHS_IS_X.
    lhs_ptr,  # [batch, time, rows]
    rhs_ptr,  # [batch, time, cols]
    mask_bits_ptr,  # uint8, sample b's K = 2 mask bits from b * mask_stride on
    logits_ptr,  # [out_features, in_features, 2] (read only when NOISE is an estimator's code)
    out_ptr,  # fp32 [splits, 3, out_features, in_features]: the partial sums, one plane each
    # The noise of sample first_sample + b (read only when NOISE is an estimator's code): see _param_key.
    seed_ptr,
    key,
    first_sample,
    # Sizes: rows x cols is out_features x in_features, or in_features x out_features where LHS_IS_X.
    batch,
    time,
    rows,
    cols,
    mask_stride,
    samples_per_split,
    # Strides, in elements.
    stride_lb,
    stride_lt,
    stride_lr,
    stride_rb,
    stride_rt,
    stride_rc,
    # The estimator's temperature; the codebook table [layers, 2] in device memory (read only when NOISE is an
    # estimator's code), its row out // layer_rows for W's row out.
    inv_tau,
    codebook_ptr,
    layer_rows,
    # Compile-time switches and tiles.
    STACKED: tl.constexpr,  # the table has a row per layer (else one row)
    LHS_IS_X: tl.constexpr,
    NOISE: tl.constexpr,
    SEED_ON_DEVICE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    PRECISION: tl.constexpr,
    DRAWS: tl.constexpr,
):
    """Per tile of W, over this split's samples b, with G_b = dy_b^T x_b:

    out[split, 0] = sum_b G_b, out[split, 1] = sum_b G_b * bit_b and, for the
    Gumbel-softmax estimator (NOISE = GUMBEL_SOFTMAX), out[split, 2] = sum_b G_b * alpha_b with
    alpha_b = y0 y1 (c1 - c0) / tau, y = softmax((theta + G(U_b)) / tau); for Gumbel-Rao
    (NOISE = GUMBEL_RAO) alpha_b = mean_m y_m0 y_m1 (c1 - c0) / tau over its DRAWS conditional draws.

    A program's tile is [BLOCK_R rows, BLOCK_C columns] of lhs_b^T rhs_b: of G_b, or of G_b^T where LHS_IS_X
    (then its rows index W's columns). One loop runs over (sample, time tile), so that Triton's
    pipeliner loads the next sample's tiles while a sample's G_b is folded into the sums.
    """
    split = tl.program_id(2)
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_t = tl.arange(0, BLOCK_T)
    tile_mask = (offs_r[:, None] < rows) & (offs_c[None, :] < cols)
    if LHS_IS_X:  # W[o, i] at o * in_features + i, with o a column and i a row of the tile
        weight = offs_c[None, :] * rows + offs_r[:, None]
    else:
        weight = offs_r[:, None] * cols + offs_c[None, :]
    if NOISE != NO_NOISE:  # the coefficient's math in fp32, whatever the logits' dtype
        param_key = _param_key(seed_ptr, key, SEED_ON_DEVICE)
        if not STACKED:
            code0, code1 = _codes(codebook_ptr)
        elif LHS_IS_X:  # W's rows are the tile's columns
            code0, code1 = _codes_of_rows(codebook_ptr, offs_c, layer_rows, offs_c < cols)
            code0, code1 = code0[None, :], code1[None, :]
        else:
            code0, code1 = _codes_of_rows(codebook_ptr, offs_r, layer_rows, offs_r < rows)
            code0, code1 = code0[:, None], code1[:, None]
        gap = code1 - code0
        theta0 = tl.load(logits_ptr + 2 * weight, mask=tile_mask, other=0.0).to(tl.float32)
        theta1 = tl.load(logits_ptr + 2 * weight + 1, mask=tile_mask, other=0.0).to(tl.float32)
    sum_all = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    sum_set = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    sum_alpha = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    g = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    b_start = split * samples_per_split
    time_tiles = tl.cdiv(time, BLOCK_T)
    for step in range(0, (tl.minimum(batch, b_start + samples_per_split) - b_start) * time_tiles):
        b = b_start + step // time_tiles
        t0 = (step % time_tiles) * BLOCK_T
        b64 = tl.cast(b, tl.int64)
        tt = t0 + offs_t
        lhs = tl.load(
            lhs_ptr + b64 * stride_lb + tt[None, :] * stride_lt + offs_r[:, None] * stride_lr,
            mask=(tt[None, :] < time) & (offs_r[:, None] < rows),
            other=0.0,
        )
        rhs = tl.load(
            rhs_ptr + b64 * stride_rb + tt[:, None] * stride_rt + offs_c[None, :] * stride_rc,
            mask=(tt[:, None] < time) & (offs_c[None, :] < cols),
            other=0.0,
        )
        g = tl.dot(lhs, rhs, g, input_precision=PRECISION)
        if t0 + BLOCK_T >= time:  # g is this sample's G_b (or G_b^T): fold it into the sums
            chosen = _mask_bit(mask_bits_ptr + b64 * mask_stride, weight, tile_mask) != 0
            sum_all += g
            sum_set += tl.where(chosen, g, 0.0)
            if NOISE == GUMBEL_SOFTMAX:
                ka, kb = _sample_keys(param_key, first_sample, b)
                z0 = theta0 + _gumbel(_uniform((2 * weight).to(tl.uint32), ka, kb))
                z1 = theta1 + _gumbel(_uniform((2 * weight + 1).to(tl.uint32), ka, kb))
                y1 = tl.sigmoid((z1 - z0) * inv_tau)
                sum_alpha += g * (y1 * (1.0 - y1) * gap * inv_tau)
            if NOISE == GUMBEL_RAO:
                ka, kb = _sample_keys(param_key, first_sample, b)
                jacobian = _gumbel_rao_jacobian(
                    theta0,
                    theta1,
                    chosen,
                    _counter((2 * weight).to(tl.uint32), ka, kb),
                    _counter((2 * weight + 1).to(tl.uint32), ka, kb),
                    inv_tau,
                    DRAWS,
                )
                sum_alpha += g * (jacobian * gap * inv_tau)
            g = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    plane = rows * cols
    out = out_ptr + split.to(tl.int64) * 3 * plane + weight
    tl.store(out, sum_all, mask=tile_mask)
    tl.store(out + plane, sum_set, mask=tile_mask)
    if NOISE != NO_NOISE:
        tl.store(out + 2 * plane, sum_alpha, mask=tile_mask)


@triton.jit
def _param_grads_kernel(
    # Operands. Shapes in [brackets].
    partial_ptr,  # fp32 [splits, 3, n_weights]: _masked_weight_grad_kernel's partial sums
    weight_ptr,  # [out_features, in_features] (read only when HAS_DLOGITS)
    logits_ptr,  # [out_features, in_features, 2] (read only for STE, REINMAX and GAPPED_STRAIGHT_THROUGH)
    dw_ptr,  # [out_features, in_features]: dL/dW, stored in W's dtype (when HAS_DW)
    dlogits_ptr,  # [out_features, in_features, 2]: dL/dtheta, stored in the logits' dtype (when HAS_DLOGITS)
    # Sizes.
    n_weights,
    splits,
    # Scalars of the estimator; the codebook table [layers, 2] in device memory, its row
    # weight // layer_weights for flat weight index weight (layer_weights: the weights of a layer).
    inv_tau,
    gst_gap,
    codebook_ptr,
    layer_weights,
    # Compile-time switches and the block.
    STACKED: tl.constexpr,  # the table has a row per layer (else one row)
    ESTIMATOR: tl.constexpr,
    HAS_DW: tl.constexpr,
    HAS_DLOGITS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The weight and logit gradients of a K = 2 layer from the batch sums, elementwise over the weights.

    With S = sum_b G_b, S1 = sum_b G_b * bit_b, S0 = S - S1 and d = c1 - c0:
    dL/dW = c0 S0 + c1 S1, and dL/dtheta_1 = -dL/dtheta_0 = W * A, where A is,
    for ste (p = softmax(theta / tau)): p0 p1 d / tau * S;
    for reinmax (r = softmax(theta)): sum over the sampled category s of
    (2 q0(s) q1(s) - r0 r1 / 2) d * S_s, with q(1) = (p0 / 2, (1 + p1) / 2) and
    q(0) = ((1 + p0) / 2, p1 / 2), i.e. pi1 = (p + D) / 2;
    for gst (theta' = the gapped logits of each sample s, gap ``gst_gap``, q = softmax(theta' / tau)):
    sum over s of q0(s) q1(s) d / tau * S_s;
    for gumbel and gumbel_rao: the batch sum of G_b * alpha_b, the third partial sum.
    These are ``gradients``' formulas for K = 2, where J(pi) c = pi0 pi1 d (-1, 1).
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_weights
    if STACKED:
        code0, code1 = _codes_of_rows(codebook_ptr, offs, layer_weights, mask)
    else:
        code0, code1 = _codes(codebook_ptr)
    sum_all = tl.zeros((BLOCK,), tl.float32)
    sum_set = tl.zeros((BLOCK,), tl.float32)
    sum_alpha = tl.zeros((BLOCK,), tl.float32)
    for split in range(splits):
        base = partial_ptr + tl.cast(split, tl.int64) * 3 * n_weights + offs
        sum_all += tl.load(base, mask=mask, other=0.0)
        sum_set += tl.load(base + n_weights, mask=mask, other=0.0)
        if ESTIMATOR == GUMBEL_SOFTMAX or ESTIMATOR == GUMBEL_RAO:
            sum_alpha += tl.load(base + 2 * n_weights, mask=mask, other=0.0)
    sum_unset = sum_all - sum_set
    if HAS_DW:
        tl.store(dw_ptr + offs, code0 * sum_unset + code1 * sum_set, mask=mask)
    if HAS_DLOGITS:
        w = tl.load(weight_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if ESTIMATOR == GUMBEL_SOFTMAX or ESTIMATOR == GUMBEL_RAO:
            d1 = w * sum_alpha
        elif ESTIMATOR == GAPPED_STRAIGHT_THROUGH:
            theta0 = tl.load(logits_ptr + 2 * offs, mask=mask, other=0.0).to(tl.float32)
            theta1 = tl.load(logits_ptr + 2 * offs + 1, mask=mask, other=0.0).to(tl.float32)
            top = tl.maximum(theta0, theta1)
            lead_set = top - tl.minimum(theta0, top - gst_gap)  # theta'_1 - theta'_0 where category 1 was drawn
            lead_unset = tl.minimum(theta1, top - gst_gap) - top  # ... where category 0 was drawn
            coefficient_set = tl.sigmoid(lead_set * inv_tau) * tl.sigmoid(-lead_set * inv_tau)
            coefficient_unset = tl.sigmoid(lead_unset * inv_tau) * tl.sigmoid(-lead_unset * inv_tau)
            d1 = w * (code1 - code0) * inv_tau * (coefficient_unset * sum_unset + coefficient_set * sum_set)
        else:
            theta0 = tl.load(logits_ptr + 2 * offs, mask=mask, other=0.0).to(tl.float32)
            theta1 = tl.load(logits_ptr + 2 * offs + 1, mask=mask, other=0.0).to(tl.float32)
            gap = code1 - code0
            p1 = tl.sigmoid((theta1 - theta0) * inv_tau)
            p0 = tl.sigmoid((theta0 - theta1) * inv_tau)
            if ESTIMATOR == STRAIGHT_THROUGH:
                d1 = w * (p0 * p1 * gap * inv_tau) * sum_all
            else:
                r1 = tl.sigmoid(theta1 - theta0)
                first_order = 0.5 * r1 * tl.sigmoid(theta0 - theta1) * gap
                coefficient_set = 0.5 * p0 * (1.0 + p1) * gap - first_order
                coefficient_unset = 0.5 * (1.0 + p0) * p1 * gap - first_order
                d1 = w * (coefficient_unset * sum_unset + coefficient_set * sum_set)
        tl.store(dlogits_ptr + 2 * offs, -d1, mask=mask)
        tl.store(dlogits_ptr + 2 * offs + 1, d1, mask=mask)


# Tile configurations and dot precision: the defaults of the launchers below, chosen by sweeps (python -m
# tools.probes.profile_gpu --sweep fp32 bf16 --sweep-widths 512 2048): the weight gradient's at the seed
# preset's shapes (fp32 on an H100, 16-bit on an H200); the masked matmul's per shape, on an H100, at the
# layer shapes of d_model 512 and 2048, batch 16 and 64 (docs/PERFORMANCE.md, "Tiles per shape").
SAMPLER_BLOCK = 1024
EPILOGUE_BLOCK = 1024
MATMUL_TILES = {"BLOCK_T": 128, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 8}
MATMUL_TILES_16BIT = {"BLOCK_T": 128, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4}
# The masked matmul's tiles by (activations 16-bit, input gradient, output of >= LARGE_OUTPUT elements): an
# output of batch x time x n_cols >= 2**22 elements fills an H100 with larger tiles.
LARGE_OUTPUT = 2**22
MATMUL_TILES_BY_SHAPE = {
    (False, False, False): MATMUL_TILES,
    (False, False, True): {"BLOCK_T": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8},
    (False, True, False): MATMUL_TILES,
    (False, True, True): {"BLOCK_T": 128, "BLOCK_N": 128, "BLOCK_K": 32, "num_warps": 8},
    (True, False, False): MATMUL_TILES_16BIT,
    (True, False, True): MATMUL_TILES_16BIT,
    (True, True, False): {"BLOCK_T": 64, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4},
    (True, True, True): {"BLOCK_T": 128, "BLOCK_N": 256, "BLOCK_K": 32, "num_warps": 8, "num_stages": 3},
}
WEIGHT_GRAD_TILES = {"BLOCK_R": 32, "BLOCK_C": 64, "BLOCK_T": 32, "num_warps": 4}
WEIGHT_GRAD_TILES_16BIT = {"BLOCK_R": 64, "BLOCK_C": 64, "BLOCK_T": 64, "num_warps": 4}
# The fp32 weight gradient of a layer with batch x out x in >= TIME_MAJOR_MIN_PRODUCTS reduces G_b^T =
# x_b^T dy_b over a time-major copy of dy, so that the dot's second operand is contiguous along the reduced
# dimension (time), with these tiles: 1.5-2.2x faster from 2048 x 512 at batch 64, copy included (H100
# sweeps; G_b^T with a copy of dy beat G_b with a copy of x by 2-35% at every shape, even where dy is the
# wider). 16-bit activations gain nothing from a copy (the tensor cores take either layout of 16 bits).
# Estimators that sum per-sample noise (gumbel, gumbel_rao) keep the other layout: with these tiles their
# backward ran 29-31% slower at batch 64 in the H100 suite (not profiled; they hold three more 64 x 64
# tiles of state, theta0, theta1 and sum_alpha, which may spill registers at 4 warps). That is not
# 3c51ebe's kernel: the loop is the flat one (0-7% slower than the nested loops at WEIGHT_GRAD_TILES, ste,
# kernel alone); unmeasured for the noise estimators.
WEIGHT_GRAD_TILES_TIME_MAJOR = {"BLOCK_R": 64, "BLOCK_C": 64, "BLOCK_T": 64, "num_warps": 4, "num_stages": 3}
TIME_MAJOR_MIN_PRODUCTS = 2**24
TARGET_PROGRAMS = 264  # the weight gradient splits the batch until two waves of an H100's 132 SMs are busy
# The input gradient reads W from a transposed copy: its dot operand is then contiguous along the reduced
# dimension, as the forward's is; 1.9-2.4x faster in fp32 and 2.4-3.8x in bf16 at batch 64 (H100 sweep).
INPUT_GRAD_WEIGHT_COPY = True
DOT_PRECISION = "tf32x3"  # see the module docstring; "ieee" is 4x slower at the same accuracy


def _cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints on the host (``triton.cdiv`` is a constexpr function: slow to call from Python)."""
    return -(-a // b)


def _seed_arguments(seed, param: int, placeholder: torch.Tensor) -> tuple:
    """The kernels' (seed_ptr, key, SEED_ON_DEVICE) for ``seed``, an int or an int64 tensor on the device
    (see ``_param_key``); ``placeholder`` fills the unused pointer."""
    if isinstance(seed, torch.Tensor):
        return seed, param, True
    return placeholder, noise.param_key(seed, param), False


def uniform(seed, param: int, samples: range, numel: int, device) -> torch.Tensor:
    """float32 [len(samples), numel]: ``noise.uniform`` of consecutive ``samples``, computed on ``device``.

    ``seed`` is an int, or an int64 tensor on ``device`` read by the kernel (a CUDA graph replays its value).
    """
    out = torch.empty(len(samples), numel, dtype=torch.float32, device=device)
    grid = (_cdiv(numel, SAMPLER_BLOCK), len(samples))
    seed_ptr, key, on_device = _seed_arguments(seed, param, out)
    launch(
        _uniform_kernel, grid, seed_ptr, key, samples.start, out, numel, SEED_ON_DEVICE=on_device, BLOCK=SAMPLER_BLOCK
    )
    return out


def sample_index(logits: torch.Tensor, seed, param: int, samples: range) -> torch.Tensor:
    """uint8 [B, *logits.shape[:-1]]: the Gumbel-max category of every weight for each sample (seed: as ``uniform``)."""
    logits = logits.contiguous()
    n_weights = logits.numel() // logits.shape[-1]
    out = torch.empty(len(samples), *logits.shape[:-1], dtype=torch.uint8, device=logits.device)
    grid = (_cdiv(n_weights, SAMPLER_BLOCK), len(samples))
    seed_ptr, key, on_device = _seed_arguments(seed, param, logits)
    launch(
        _sample_index_kernel,
        grid,
        logits,
        seed_ptr,
        key,
        samples.start,
        out,
        n_weights,
        K=logits.shape[-1],
        SEED_ON_DEVICE=on_device,
        BLOCK=SAMPLER_BLOCK,
    )
    return out


def sample_bits(logits: torch.Tensor, seed, param: int, samples: range) -> torch.Tensor:
    """uint8 [B, ceil(W / 8)]: the K = 2 sample packed as bits (``sampler.draw_bits``' layout); seed: as ``uniform``."""
    logits = logits.contiguous()
    n_weights = logits.numel() // 2
    mask_bytes = _cdiv(n_weights, 8)
    out = torch.empty(len(samples), mask_bytes, dtype=torch.uint8, device=logits.device)
    grid = (_cdiv(mask_bytes, SAMPLER_BLOCK // 8), len(samples))
    seed_ptr, key, on_device = _seed_arguments(seed, param, logits)
    launch(
        _sample_bits_kernel,
        grid,
        logits,
        seed_ptr,
        key,
        samples.start,
        out,
        n_weights,
        mask_bytes,
        SEED_ON_DEVICE=on_device,
        BLOCK=SAMPLER_BLOCK // 8,
    )
    return out


# The activations' (x, dy) dtypes the masked matmul and its gradients take; the fused layer runs float64 (whose
# products would not accumulate in float64 here) through its torch path instead.
ACTIVATION_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# The logits dtypes sample_bits_layers reads (its kernel casts the table's addresses to pointers of one of them).
LAYER_LOGITS_DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.bfloat16: tl.bfloat16,
    torch.float16: tl.float16,
}


# The logits dtypes step_values reads: those that fp32 holds exactly (its check is made in fp32).
STEP_VALUES_LOGITS_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
STEP_VALUES_BLOCK = 4096


def step_values(
    tokens: torch.Tensor, vocab_size: int, logits_table: torch.Tensor, numels: torch.Tensor, logits_dtype, largest: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reductions a forward pass's value checks need, in one launch: max |logit| of layers, the ids' range.

    Args:
        tokens: token ids ``[B, T]``, int64 or int32.
        vocab_size: the ids' upper bound (exclusive).
        logits_table: int64 ``[layers]`` on the device: the address of each layer's contiguous logits, all of
            ``logits_dtype`` (a key of ``STEP_VALUES_LOGITS_DTYPES``); they must outlive the launch.
        numels: int64 ``[layers]`` on the device: their element counts; ``largest`` the largest of them.

    Returns:
        (the ids clamped into ``[0, vocab_size)``, of the tokens' shape and dtype;
        int64 ``[layers + 1, programs, 2]``: row l < layers holds, in ``[:, 0]``, the fp32 bit patterns of
        blocks' largest |logit| of layer l (their maximum, read as an fp32, is the layer's max |logit|, NaN
        where any logit is NaN); the last row holds blocks' (min, max) of the ids).

    Example::

        >>> safe, values = step_values(tokens, 1024, table, numels, torch.float32, 2 * 256 * 256)
        >>> largest = values[:-1, :, 0].max().int().view(torch.float32)
    """
    tokens = tokens.contiguous()
    safe_tokens = torch.empty_like(tokens)
    programs = _cdiv(max(largest, tokens.numel()), STEP_VALUES_BLOCK)
    out = torch.empty(len(logits_table) + 1, programs, 2, dtype=torch.int64, device=tokens.device)
    launch(
        _step_values_kernel,
        (programs, len(logits_table) + 1),
        tokens,
        safe_tokens,
        tokens.numel(),
        vocab_size,
        logits_table,
        numels,
        out,
        LOGITS_DTYPE=STEP_VALUES_LOGITS_DTYPES[logits_dtype],
        BLOCK=STEP_VALUES_BLOCK,
    )
    return safe_tokens, out


def sample_bits_layers(
    logits_table: torch.Tensor, params: torch.Tensor, like: torch.Tensor, seed, samples: range
) -> torch.Tensor:
    """uint8 [B, layers, ceil(W / 8)]: ``sample_bits`` of several layers' logits of one shape, in one launch.

    Args:
        logits_table: int64 ``[layers]`` on the device: the address of each layer's contiguous logits
            ``[..., 2]``, every one of ``like``'s shape and dtype (they must outlive the launch).
        params: int64 ``[layers]`` on the device: each layer's parameter index.
        like: one of the layers' logits (its shape, dtype and device).
        seed: as ``uniform``. samples: a range of consecutive sample indices.

    Returns:
        the layers' packed masks, sample by sample: ``out[:, l]`` is
        ``sample_bits(logits_l, seed, params[l], samples)``.
        A sample's masks of consecutive layers are adjacent, so where W is a multiple of 8 they are the
        masks of those layers' weights stacked along ``out`` (``fused.fused_linears`` reads them so).
    """
    n_weights = like.numel() // 2
    mask_bytes = _cdiv(n_weights, 8)
    out = torch.empty(len(samples), len(params), mask_bytes, dtype=torch.uint8, device=like.device)
    grid = (_cdiv(mask_bytes, SAMPLER_BLOCK // 8), len(samples), len(params))
    on_device = isinstance(seed, torch.Tensor)
    seed_value = 0 if on_device else seed
    launch(
        _sample_bits_layers_kernel,
        grid,
        logits_table,
        params,
        seed if on_device else logits_table,
        seed_value & noise.MASK32,
        seed_value >> 32,
        samples.start,
        out,
        n_weights,
        mask_bytes,
        LOGITS_DTYPE=LAYER_LOGITS_DTYPES[like.dtype],
        SEED_ON_DEVICE=on_device,
        BLOCK=SAMPLER_BLOCK // 8,
    )
    return out


def _sample_stride(mask_bits: torch.Tensor) -> int:
    """The bytes from one sample's mask bits to the next's: packed bits ``[B, bytes]``, each sample's contiguous
    (a view of one layer's in ``sample_bits_layers``' output, or several adjacent layers')."""
    if mask_bits.dtype != torch.uint8 or mask_bits.dim() != 2 or (mask_bits.stride(1) != 1 and mask_bits.shape[1] > 1):
        raise ValueError(
            f"mask_bits must be uint8 [batch, bytes] with each sample's bytes contiguous, got {mask_bits.dtype} "
            f"of shape {tuple(mask_bits.shape)} and strides {mask_bits.stride()}"
        )
    return mask_bits.stride(0)


def _codebook_table(codebook: torch.Tensor, out_features: int, layer_rows: int | None, device) -> tuple:
    """The kernels' (codebook table ``[layers, 2]``, rows of W per layer, whether layers > 1) for ``codebook``:
    a K = 2 codebook ``[2]`` (one layer: passed as it is) or a table ``[layers, 2]`` whose row l holds the codebook
    of W's rows ``l * layer_rows`` to ``(l + 1) * layer_rows - 1``; a floating tensor on the kernels' device, read
    by the kernels when they run (never copied to the host)."""
    if not isinstance(codebook, torch.Tensor) or not codebook.is_floating_point():
        raise TypeError(
            f"codebook must be a floating-point tensor [2] or [layers, 2] on the device, got {type(codebook).__name__}"
            + (f" of dtype {codebook.dtype}" if isinstance(codebook, torch.Tensor) else "")
        )
    if codebook.device != device:
        raise ValueError(f"codebook must be on the activations' device {device}, got {codebook.device}")
    if codebook.shape == (2,):  # one layer's: the kernels read it as the table [1, 2] at the same address
        return codebook.contiguous(), out_features, False
    if codebook.dim() != 2 or codebook.shape[1] != 2 or codebook.shape[0] < 1:
        raise ValueError(f"codebook must have shape [2] or [layers, 2], got {tuple(codebook.shape)}")
    layers = codebook.shape[0]
    if layer_rows is None:
        layer_rows = out_features // layers
    if layer_rows < 1 or layers * layer_rows != out_features:
        raise ValueError(
            f"a codebook table of {layers} rows needs W's {out_features} rows split into {layers} layers of "
            f"layer_rows each, got layer_rows={layer_rows}"
        )
    return codebook.contiguous(), layer_rows, layers > 1


def _tiles_for(dtype: torch.dtype, fp32_tiles: dict, tiles_16bit: dict) -> dict:
    return fp32_tiles if dtype == torch.float32 else tiles_16bit


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
        tiles = MATMUL_TILES_BY_SHAPE[a.dtype != torch.float32, transpose_weight, large]
    codebook, layer_rows, stacked = _codebook_table(codebook, out_features, layer_rows, a.device)
    c = torch.empty(batch, time, n_cols, dtype=a.dtype, device=a.device)
    bit_stride_n, bit_stride_k = (1, in_features) if transpose_weight else (in_features, 1)
    stride_wn, stride_wk = bit_stride_n, bit_stride_k
    if transpose_weight and weight_copy:
        weight = weight.t().contiguous()  # [in, out]: B[k, n] = W^T[n, k]
        stride_wn, stride_wk = out_features, 1
    grid = (_cdiv(time, tiles["BLOCK_T"]), _cdiv(n_cols, tiles["BLOCK_N"]), batch)
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
        _sample_stride(mask_bits),
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
        tiles: ``MATMUL_TILES``' keys (the kernel's tile sizes and warps); None: ``MATMUL_TILES_BY_SHAPE``'s
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


def _time_major(activations: torch.Tensor) -> torch.Tensor:
    """A copy of ``[B, T, F]`` activations, same shape and values, laid out with T contiguous (strides F T, 1, T)."""
    return activations.transpose(1, 2).contiguous().transpose(1, 2)


def _weight_grad_partials(dy, x, mask_bits, codebook, layer_rows, noisy, tiles, precision, target_programs, time_major):
    """fp32 [splits, 3, out, in]: the partial sums of ``masked_weight_grad``, one group of samples a split.

    ``noisy``: None, or (estimator in ``NOISE_ESTIMATORS``, logits, seed, param, first_sample, tau).
    ``time_major``: whether the kernel reduces G_b^T = x_b^T dy_b over a time-major copy of dy (else G_b
    over dy and x); None: where no noise is summed, the activations are fp32 and batch x out x in >=
    ``TIME_MAJOR_MIN_PRODUCTS``.
    """
    batch, time, out_features = dy.shape
    in_features = x.shape[2]
    if time_major is None:
        time_major = (
            noisy is None
            and dy.dtype == torch.float32
            and batch * out_features * in_features >= TIME_MAJOR_MIN_PRODUCTS
        )
    if tiles is None and time_major:
        tiles = WEIGHT_GRAD_TILES_TIME_MAJOR
    tiles = tiles or _tiles_for(dy.dtype, WEIGHT_GRAD_TILES, WEIGHT_GRAD_TILES_16BIT)
    lhs, rhs = (x, _time_major(dy)) if time_major else (dy, x)
    rows, cols = lhs.shape[2], rhs.shape[2]
    tile_count = _cdiv(rows, tiles["BLOCK_R"]) * _cdiv(cols, tiles["BLOCK_C"])
    splits = max(1, min(batch, target_programs // tile_count))
    per_split = _cdiv(batch, splits)
    splits = _cdiv(batch, per_split)
    partial = torch.empty(splits, 3, out_features, in_features, dtype=torch.float32, device=dy.device)
    if noisy is None:
        estimator, logits, seed, param, first_sample, inv_tau = None, dy, 0, 0, 0, 1.0  # placeholders: unread
    else:
        estimator, logits, seed, param, first_sample, tau = noisy
        logits, inv_tau = logits.contiguous(), 1.0 / tau
    seed_ptr, key, on_device = _seed_arguments(seed, param, logits)
    codebook, layer_rows, stacked = _codebook_table(codebook, out_features, layer_rows, dy.device)
    grid = (_cdiv(rows, tiles["BLOCK_R"]), _cdiv(cols, tiles["BLOCK_C"]), splits)
    launch(
        _masked_weight_grad_kernel,
        grid,
        lhs,
        rhs,
        mask_bits,
        logits,
        partial,
        seed_ptr,
        key,
        first_sample,
        batch,
        time,
        rows,
        cols,
        _sample_stride(mask_bits),
        per_split,
        *lhs.stride(),
        *rhs.stride(),
        inv_tau,
        codebook,
        layer_rows,
        STACKED=stacked,
        LHS_IS_X=time_major,
        NOISE=NO_NOISE.value if estimator is None else ESTIMATOR_CODES[estimator],
        SEED_ON_DEVICE=on_device,
        PRECISION=precision,
        DRAWS=GUMBEL_RAO_DRAWS,
        **tiles,
    )
    return partial


def masked_weight_grad(
    dy,
    x,
    mask_bits,
    codebook,
    gumbel=None,
    tiles=None,
    precision=DOT_PRECISION,
    target_programs=TARGET_PROGRAMS,
    time_major=None,
    layer_rows=None,
):
    """Sums over the batch of G_b = dy_b^T x_b, unmasked and masked: what the weight and logit gradients need.

    The batch is split into groups of samples reduced by separate programs
    (until about ``target_programs`` run), so the partial sums take
    3 * splits * out * in floats, whatever the batch size. Large fp32 layers
    (``TIME_MAJOR_MIN_PRODUCTS``; not with ``gumbel``) reduce over a
    time-major copy of dy, made and freed here: B * T * out values.

    Args:
        dy: ``[B, T, out]``.
        x: ``[B, T, in]``.
        mask_bits, codebook, layer_rows: as ``masked_linear`` (the codebook is read only with ``gumbel``).
        gumbel: None, or (logits ``[out, in, 2]``, seed, param, first_sample, tau) to also sum the
            straight-through Gumbel-softmax coefficient alpha_b = y0 y1 (c1 - c0) / tau with
            y = softmax((theta + G(U_b)) / tau), the noise recomputed from its counter-based hash
            (seed: as ``uniform``).
        tiles: ``WEIGHT_GRAD_TILES``' keys (BLOCK_R spans out, or in where the copy is read; BLOCK_C the
            other); None: ``WEIGHT_GRAD_TILES_TIME_MAJOR`` where the copy is read, else ``WEIGHT_GRAD_TILES``
            for fp32 activations, ``WEIGHT_GRAD_TILES_16BIT`` for bf16 and fp16.
        precision: as ``masked_linear``.
        target_programs: about how many programs to split the batch over.
        time_major: whether to reduce over the time-major copy; None: where no noise is summed, the
            activations are fp32 and B * out * in >= ``TIME_MAJOR_MIN_PRODUCTS``.

    Returns:
        (sum_b G_b, sum_b G_b * bit_b, sum_b G_b * alpha_b or None), fp32 ``[out, in]`` each.
    """
    noisy = None if gumbel is None else ("gumbel", *gumbel)
    partial = _weight_grad_partials(
        dy, x, mask_bits, codebook, layer_rows, noisy, tiles, precision, target_programs, time_major
    )
    sums = partial.sum(0)
    return sums[0], sums[1], (sums[2] if gumbel is not None else None)


def masked_param_grads(
    dy,
    x,
    mask_bits,
    codebook,
    weight,
    logits,
    estimator: str,
    tau: float,
    noise_stream: tuple = (0, 0, 0),
    need_weight: bool = True,
    need_logits: bool = True,
    tiles=None,
    precision=DOT_PRECISION,
    target_programs=TARGET_PROGRAMS,
    time_major=None,
    layer_rows=None,
):
    """dL/dW and dL/dtheta of a fused K = 2 layer in two launches: the batch sums, then ``_param_grads_kernel``.

    Args:
        dy, x, mask_bits, codebook, layer_rows: as ``masked_linear``.
        weight: W ``[out, in]``; logits: theta ``[out, in, 2]``.
        estimator: a name in ``ESTIMATOR_CODES``; tau: its temperature.
        noise_stream: (seed, param, first_sample) of the masks' noise (Gumbel-softmax and Gumbel-Rao recompute it).
        need_weight, need_logits: which gradients to compute.
        tiles, precision, target_programs, time_major: as ``masked_weight_grad`` (whose default layout
            also leaves out the estimators in ``NOISE_ESTIMATORS``: gumbel_rao's noise is summed too).

    Returns:
        (dL/dW in W's dtype or None, dL/dtheta in the logits' dtype or None).
    """
    noisy = (estimator, logits, *noise_stream, tau) if estimator in NOISE_ESTIMATORS else None
    partial = _weight_grad_partials(
        dy, x, mask_bits, codebook, layer_rows, noisy, tiles, precision, target_programs, time_major
    )
    codebook, layer_rows, stacked = _codebook_table(codebook, weight.shape[0], layer_rows, dy.device)
    dw = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_weight else None
    dlogits = torch.empty_like(logits, memory_format=torch.contiguous_format) if need_logits else None
    n_weights = weight.numel()
    launch(
        _param_grads_kernel,
        (_cdiv(n_weights, EPILOGUE_BLOCK),),
        partial,
        weight.contiguous(),
        logits.contiguous(),
        dw if need_weight else partial,
        dlogits if need_logits else partial,
        n_weights,
        partial.shape[0],
        1.0 / tau,
        GST_GAP,
        codebook,
        layer_rows * weight.shape[1],
        STACKED=stacked,
        ESTIMATOR=ESTIMATOR_CODES[estimator],
        HAS_DW=need_weight,
        HAS_DLOGITS=need_logits,
        BLOCK=EPILOGUE_BLOCK,
    )
    return dw, dlogits
