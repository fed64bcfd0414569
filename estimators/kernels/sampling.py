"""The samplers in Triton: the Gumbel-max masks, and the uniform noise, of ``estimators.noise``'s counters.

Each kernel recomputes the noise of its elements in registers (``hashing``), so the masks need no noise in
memory: sample b's category of weight w is argmax_k(theta[w, k] + G(U_bwk)), the first maximum winning a tie.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import noise
from .hashing import gumbel, hash_uniform, parameter_key, sample_keys, seed_arguments, seed_param_key
from .launch import cdiv, launch
from .tiles import SAMPLER_BLOCK


@triton.jit
def _gumbel_argmax(logits_ptr, weight, ka, kb, mask, K: tl.constexpr):
    """argmax_k(theta[weight, k] + G_k): first maximum wins, as in torch.argmax."""
    best = tl.full(weight.shape, float("-inf"), tl.float32)
    arg = tl.zeros(weight.shape, tl.int32)
    for k in tl.static_range(K):
        element = weight * K + k
        value = tl.load(logits_ptr + element, mask=mask, other=0.0) + gumbel(
            hash_uniform(element.to(tl.uint32), ka, kb)
        )
        take = value > best
        best = tl.where(take, value, best)
        arg = tl.where(take, k, arg)
    return arg


@triton.jit
def _uniform_kernel(seed_ptr, key, first_sample, out_ptr, numel, SEED_ON_DEVICE: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ka, kb = sample_keys(parameter_key(seed_ptr, key, SEED_ON_DEVICE), first_sample, b)
    tl.store(out_ptr + b.to(tl.int64) * numel + offs, hash_uniform(offs.to(tl.uint32), ka, kb), mask=offs < numel)


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
    ka, kb = sample_keys(parameter_key(seed_ptr, key, SEED_ON_DEVICE), first_sample, b)
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
    ka, kb = sample_keys(parameter_key(seed_ptr, key, SEED_ON_DEVICE), first_sample, b)
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
        param_key = parameter_key(seed_ptr, param, True)
    else:
        param_key = seed_param_key(tl.cast(seed_low, tl.uint32), tl.cast(seed_high, tl.uint32), param)
    byte = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ka, kb = sample_keys(param_key, first_sample, b)
    packed = _packed_sample_bits(logits_ptr, byte, ka, kb, n_weights, BLOCK)
    out = out_ptr + (b.to(tl.int64) * tl.num_programs(2) + layer) * n_bytes + byte
    tl.store(out, packed.to(tl.uint8), mask=byte < n_bytes)


def uniform(seed, param: int, samples: range, numel: int, device) -> torch.Tensor:
    """float32 [len(samples), numel]: ``noise.uniform`` of consecutive ``samples``, computed on ``device``.

    ``seed`` is an int, or an int64 tensor on ``device`` read by the kernel (a CUDA graph replays its value).
    """
    out = torch.empty(len(samples), numel, dtype=torch.float32, device=device)
    grid = (cdiv(numel, SAMPLER_BLOCK), len(samples))
    seed_ptr, key, on_device = seed_arguments(seed, param, out)
    launch(
        _uniform_kernel, grid, seed_ptr, key, samples.start, out, numel, SEED_ON_DEVICE=on_device, BLOCK=SAMPLER_BLOCK
    )
    return out


def sample_index(logits: torch.Tensor, seed, param: int, samples: range) -> torch.Tensor:
    """uint8 [B, *logits.shape[:-1]]: the Gumbel-max category of every weight for each sample (seed: as ``uniform``)."""
    logits = logits.contiguous()
    n_weights = logits.numel() // logits.shape[-1]
    out = torch.empty(len(samples), *logits.shape[:-1], dtype=torch.uint8, device=logits.device)
    grid = (cdiv(n_weights, SAMPLER_BLOCK), len(samples))
    seed_ptr, key, on_device = seed_arguments(seed, param, logits)
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
    mask_bytes = cdiv(n_weights, 8)
    out = torch.empty(len(samples), mask_bytes, dtype=torch.uint8, device=logits.device)
    grid = (cdiv(mask_bytes, SAMPLER_BLOCK // 8), len(samples))
    seed_ptr, key, on_device = seed_arguments(seed, param, logits)
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


# The logits dtypes sample_bits_layers reads (its kernel casts the table's addresses to pointers of one of them).
LAYER_LOGITS_DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.bfloat16: tl.bfloat16,
    torch.float16: tl.float16,
}


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
    mask_bytes = cdiv(n_weights, 8)
    out = torch.empty(len(samples), len(params), mask_bytes, dtype=torch.uint8, device=like.device)
    grid = (cdiv(mask_bytes, SAMPLER_BLOCK // 8), len(samples), len(params))
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
