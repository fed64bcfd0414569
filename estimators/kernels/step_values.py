"""The reductions of a forward pass's value checks in one launch (``step_value_check.StepValueCheck``'s)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import cdiv, launch

_INT64_MAX = tl.constexpr(2**63 - 1)  # the neutral elements of the ids' min and max
_INT64_MIN = tl.constexpr(-(2**63))


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
    programs = cdiv(max(largest, tokens.numel()), STEP_VALUES_BLOCK)
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
