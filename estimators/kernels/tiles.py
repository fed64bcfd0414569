"""The kernels' tile sizes, dot precision and batch split: the launch wrappers' defaults.

A tile table is the keyword arguments ``launch`` passes to a kernel (its BLOCK_* constexprs, ``num_warps`` and,
where set, ``num_stages``), kept as plain dicts: the wrappers pass them as they are, with no conversion per
launch, and callers may pass their own through a wrapper's ``tiles``. They were chosen by sweeps
(``python -m tools.probes.profile_gpu --sweep fp32 bf16 --sweep-widths 512 2048``): the weight gradient's at
the seed preset's shapes (fp32 on an H100, 16-bit on an H200); the masked matmul's per shape, on an H100, at
the layer shapes of d_model 512 and 2048, batch 16 and 64 (docs/PERFORMANCE.md, "Tiles per shape").
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from .._interpreter import INTERPRETED

SAMPLER_BLOCK = 1024  # the samplers' elements (weights) a program
EPILOGUE_BLOCK = 1024  # the parameter gradients' weights a program

MATMUL_TILES = {"BLOCK_T": 128, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 8}
MATMUL_TILES_16BIT = {"BLOCK_T": 128, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4}
LARGE_OUTPUT = 2**22  # an output of batch x time x n_cols elements from which larger tiles fill an H100


class MatmulShape(NamedTuple):
    """What the masked matmul's tiles depend on."""

    sixteen_bit: bool  # the activations are bf16 or fp16 (else fp32)
    input_grad: bool  # the input gradient dy (W * M) (else the forward x (W * M)^T)
    large_output: bool  # the output has >= LARGE_OUTPUT elements


MATMUL_TILES_BY_SHAPE = {
    MatmulShape(sixteen_bit=False, input_grad=False, large_output=False): MATMUL_TILES,
    MatmulShape(sixteen_bit=False, input_grad=False, large_output=True): {
        "BLOCK_T": 128,
        "BLOCK_N": 128,
        "BLOCK_K": 64,
        "num_warps": 8,
    },
    MatmulShape(sixteen_bit=False, input_grad=True, large_output=False): MATMUL_TILES,
    MatmulShape(sixteen_bit=False, input_grad=True, large_output=True): {
        "BLOCK_T": 128,
        "BLOCK_N": 128,
        "BLOCK_K": 32,
        "num_warps": 8,
    },
    MatmulShape(sixteen_bit=True, input_grad=False, large_output=False): MATMUL_TILES_16BIT,
    MatmulShape(sixteen_bit=True, input_grad=False, large_output=True): MATMUL_TILES_16BIT,
    MatmulShape(sixteen_bit=True, input_grad=True, large_output=False): {
        "BLOCK_T": 64,
        "BLOCK_N": 64,
        "BLOCK_K": 32,
        "num_warps": 4,
    },
    MatmulShape(sixteen_bit=True, input_grad=True, large_output=True): {
        "BLOCK_T": 128,
        "BLOCK_N": 256,
        "BLOCK_K": 32,
        "num_warps": 8,
        "num_stages": 3,
    },
}

WEIGHT_GRAD_TILES = {"BLOCK_R": 32, "BLOCK_C": 64, "BLOCK_T": 32, "num_warps": 4}
WEIGHT_GRAD_TILES_16BIT = {"BLOCK_R": 64, "BLOCK_C": 64, "BLOCK_T": 64, "num_warps": 4}
# The fp32 weight gradient of a layer with batch x out x in >= TIME_MAJOR_MIN_PRODUCTS reduces G_b^T =
# x_b^T dy_b over a time-major copy of dy, so that the dot's second operand is contiguous along the reduced
# dimension (time), with these tiles: 1.5-2.2x faster from 2048 x 512 at batch 64, copy included (H100
# sweeps; G_b^T with a copy of dy beat G_b with a copy of x by 2-35% at every shape, even where dy is the
# wider). 16-bit activations gain nothing from a copy (the tensor cores take either layout of 16 bits).
# Estimators that sum per-sample noise (gumbel, gumbel_rao) keep the other layout: with these tiles their
# backward ran 29-31% slower at batch 64 in the H100 suite (they hold three more 64 x 64 tiles of state,
# theta0, theta1 and sum_alpha, which may spill registers at 4 warps).
WEIGHT_GRAD_TILES_TIME_MAJOR = {"BLOCK_R": 64, "BLOCK_C": 64, "BLOCK_T": 64, "num_warps": 4, "num_stages": 3}
TIME_MAJOR_MIN_PRODUCTS = 2**24

# The input gradient reads W from a transposed copy: its dot operand is then contiguous along the reduced
# dimension, as the forward's is; 1.9-2.4x faster in fp32 and 2.4-3.8x in bf16 at batch 64 (H100 sweep).
INPUT_GRAD_WEIGHT_COPY = True
# fp32 dots as three TF32 tensor-core products (see ``masked_linear``'s module docstring); "ieee" is 4x slower
# at the same accuracy.
DOT_PRECISION = "tf32x3"

WAVES = 2  # the weight gradient splits the batch until this many programs per SM are busy
INTERPRETER_SMS = 132  # the SM count assumed under Triton's interpreter (an H100's), which has no SMs


def tiles_for(dtype: torch.dtype, fp32_tiles: dict, tiles_16bit: dict) -> dict:
    """``fp32_tiles`` for fp32 activations, else (bf16, fp16) ``tiles_16bit``."""
    return fp32_tiles if dtype == torch.float32 else tiles_16bit


def target_programs(device_index: int) -> int:
    """About how many programs keep CUDA device ``device_index`` busy: ``WAVES`` per streaming multiprocessor
    (264 on an H100 or H200, 132 SMs). Under Triton's interpreter, ``WAVES`` per ``INTERPRETER_SMS``, so that
    the interpreter splits a batch, and so sums it, as an H100 does. Read from the device once, then cached."""
    if INTERPRETED:
        return WAVES * INTERPRETER_SMS
    return _target_programs_on(device_index)


@functools.cache
def _target_programs_on(device_index: int) -> int:
    return WAVES * torch.cuda.get_device_properties(device_index).multi_processor_count
