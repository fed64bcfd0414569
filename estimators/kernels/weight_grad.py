"""The weight and logit gradients of the fused K = 2 layer: batch sums of G_b = dy_b^T x_b, then the estimators'
elementwise formulas (``gradients``' for K = 2), in two launches.

The estimators are compile-time codes, their positions in ``gradients.ESTIMATORS``; GST_GAP and
GUMBEL_RAO_DRAWS are ``gradients``' own values, so these kernels compute what the CPU estimators do.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..gradients import ESTIMATORS, GST_GAP, GUMBEL_RAO_DRAWS
from .hashing import (
    CONDITIONAL_KEY,
    absorb,
    accurate_log,
    gumbel,
    hash_counter,
    hash_uniform,
    parameter_key,
    sample_keys,
    seed_arguments,
)
from .launch import cdiv, launch
from .masks import codebook_codes, codebook_codes_of_rows, codebook_table, mask_bit, sample_stride
from .tiles import (
    DOT_PRECISION,
    EPILOGUE_BLOCK,
    TIME_MAJOR_MIN_PRODUCTS,
    WEIGHT_GRAD_TILES,
    WEIGHT_GRAD_TILES_16BIT,
    WEIGHT_GRAD_TILES_TIME_MAJOR,
    tiles_for,
)
from .tiles import (
    target_programs as default_target_programs,
)

ESTIMATOR_CODES = {name: code for code, name in enumerate(ESTIMATORS)}
STRAIGHT_THROUGH = tl.constexpr(ESTIMATOR_CODES["ste"])
REINMAX = tl.constexpr(ESTIMATOR_CODES["reinmax"])
GUMBEL_SOFTMAX = tl.constexpr(ESTIMATOR_CODES["gumbel"])
GAPPED_STRAIGHT_THROUGH = tl.constexpr(ESTIMATOR_CODES["gst"])
GUMBEL_RAO = tl.constexpr(ESTIMATOR_CODES["gumbel_rao"])
NO_NOISE = tl.constexpr(-1)  # the weight-gradient kernel's NOISE where no estimator's noise is summed
NOISE_ESTIMATORS = ("gumbel", "gumbel_rao")  # their coefficient needs each sample's noise: summed per sample


@triton.jit
def _logaddexp(a, b):
    top = tl.maximum(a, b)
    return top + accurate_log(1.0 + tl.exp(-tl.abs(a - b)))


@triton.jit
def _gumbel_rao_jacobian(theta0, theta1, chosen, counter0, counter1, inv_tau, DRAWS: tl.constexpr):
    """mean over m of y_m0 y_m1, y_m = softmax(z_m / tau), z_m the Gumbels conditioned on the sample
    (category 1 where ``chosen``): ``gradients.GumbelRao`` for K = 2, its draws
    U'_m = ``noise.conditional_uniform`` of the element counters (the 23-bit hashes behind U)."""
    log_z = _logaddexp(theta0, theta1)
    total = tl.zeros(theta0.shape, tl.float32)
    for m in tl.static_range(DRAWS):
        ka = absorb(tl.full((), CONDITIONAL_KEY, tl.uint32), tl.full((), m, tl.uint32))
        kb = absorb(ka, tl.full((), 1, tl.uint32))
        log_e0 = accurate_log(-accurate_log(hash_uniform(counter0, ka, kb)))
        log_e1 = accurate_log(-accurate_log(hash_uniform(counter1, ka, kb)))
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
    # The noise of sample first_sample + b (read only when NOISE is an estimator's code): see hashing.parameter_key.
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
        param_key = parameter_key(seed_ptr, key, SEED_ON_DEVICE)
        if not STACKED:
            code0, code1 = codebook_codes(codebook_ptr)
        elif LHS_IS_X:  # W's rows are the tile's columns
            code0, code1 = codebook_codes_of_rows(codebook_ptr, offs_c, layer_rows, offs_c < cols)
            code0, code1 = code0[None, :], code1[None, :]
        else:
            code0, code1 = codebook_codes_of_rows(codebook_ptr, offs_r, layer_rows, offs_r < rows)
            code0, code1 = code0[:, None], code1[:, None]
        code_delta = code1 - code0
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
            chosen = mask_bit(mask_bits_ptr + b64 * mask_stride, weight, tile_mask) != 0
            sum_all += g
            sum_set += tl.where(chosen, g, 0.0)
            if NOISE == GUMBEL_SOFTMAX:
                ka, kb = sample_keys(param_key, first_sample, b)
                z0 = theta0 + gumbel(hash_uniform((2 * weight).to(tl.uint32), ka, kb))
                z1 = theta1 + gumbel(hash_uniform((2 * weight + 1).to(tl.uint32), ka, kb))
                y1 = tl.sigmoid((z1 - z0) * inv_tau)
                sum_alpha += g * (y1 * (1.0 - y1) * code_delta * inv_tau)
            if NOISE == GUMBEL_RAO:
                ka, kb = sample_keys(param_key, first_sample, b)
                jacobian = _gumbel_rao_jacobian(
                    theta0,
                    theta1,
                    chosen,
                    hash_counter((2 * weight).to(tl.uint32), ka, kb),
                    hash_counter((2 * weight + 1).to(tl.uint32), ka, kb),
                    inv_tau,
                    DRAWS,
                )
                sum_alpha += g * (jacobian * code_delta * inv_tau)
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
        code0, code1 = codebook_codes_of_rows(codebook_ptr, offs, layer_weights, mask)
    else:
        code0, code1 = codebook_codes(codebook_ptr)
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
            code_delta = code1 - code0
            p1 = tl.sigmoid((theta1 - theta0) * inv_tau)
            p0 = tl.sigmoid((theta0 - theta1) * inv_tau)
            if ESTIMATOR == STRAIGHT_THROUGH:
                d1 = w * (p0 * p1 * code_delta * inv_tau) * sum_all
            else:
                r1 = tl.sigmoid(theta1 - theta0)
                first_order = 0.5 * r1 * tl.sigmoid(theta0 - theta1) * code_delta
                coefficient_set = 0.5 * p0 * (1.0 + p1) * code_delta - first_order
                coefficient_unset = 0.5 * (1.0 + p0) * p1 * code_delta - first_order
                d1 = w * (coefficient_unset * sum_unset + coefficient_set * sum_set)
        tl.store(dlogits_ptr + 2 * offs, -d1, mask=mask)
        tl.store(dlogits_ptr + 2 * offs + 1, d1, mask=mask)


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
    tiles = tiles or tiles_for(dy.dtype, WEIGHT_GRAD_TILES, WEIGHT_GRAD_TILES_16BIT)
    lhs, rhs = (x, _time_major(dy)) if time_major else (dy, x)
    rows, cols = lhs.shape[2], rhs.shape[2]
    tile_count = cdiv(rows, tiles["BLOCK_R"]) * cdiv(cols, tiles["BLOCK_C"])
    if target_programs is None:
        target_programs = default_target_programs(dy.get_device())
    splits = max(1, min(batch, target_programs // tile_count))
    per_split = cdiv(batch, splits)
    splits = cdiv(batch, per_split)
    partial = torch.empty(splits, 3, out_features, in_features, dtype=torch.float32, device=dy.device)
    if noisy is None:
        estimator, logits, seed, param, first_sample, inv_tau = None, dy, 0, 0, 0, 1.0  # placeholders: unread
    else:
        estimator, logits, seed, param, first_sample, tau = noisy
        logits, inv_tau = logits.contiguous(), 1.0 / tau
    seed_ptr, key, on_device = seed_arguments(seed, param, logits)
    codebook, layer_rows, stacked = codebook_table(codebook, out_features, layer_rows, dy.device)
    grid = (cdiv(rows, tiles["BLOCK_R"]), cdiv(cols, tiles["BLOCK_C"]), splits)
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
        sample_stride(mask_bits),
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
    target_programs=None,
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
        target_programs: about how many programs to split the batch over; None: ``tiles.target_programs``
            of dy's device (two a streaming multiprocessor).
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
    target_programs=None,
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
    codebook, layer_rows, stacked = codebook_table(codebook, weight.shape[0], layer_rows, dy.device)
    dw = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_weight else None
    dlogits = torch.empty_like(logits, memory_format=torch.contiguous_format) if need_logits else None
    n_weights = weight.numel()
    launch(
        _param_grads_kernel,
        (cdiv(n_weights, EPILOGUE_BLOCK),),
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
