"""How the kernels read a K = 2 mask: bits packed 8 to a byte and a codebook table in device memory.

Sample b's mask of W [out, in] is a row of uint8 bytes (``sampler.draw_bits``): bit j of byte i is weight
8 i + j (flat, row-major). A mask value is m = c0 + (c1 - c0) * bit, with (c0, c1) read from a codebook
table [layers, 2] when a kernel runs (never a host copy: a loaded, cast or edited codebook, or a CUDA graph's
replay, sees its current values); row l of the table holds the codebook of W's rows l * layer_rows to
(l + 1) * layer_rows - 1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def codebook_codes(codebook_ptr):
    """(c0, c1) in fp32, scalars: the first row of a codebook table [layers, 2] (any float dtype, contiguous)."""
    return tl.load(codebook_ptr).to(tl.float32), tl.load(codebook_ptr + 1).to(tl.float32)


@triton.jit
def codebook_codes_of_rows(codebook_ptr, out, layer_rows, inside):
    """(c0, c1) in fp32 of each of W's rows ``out`` (a vector): codebook table row out // layer_rows (0 outside)."""
    row = out // layer_rows
    code0 = tl.load(codebook_ptr + 2 * row, mask=inside, other=0.0).to(tl.float32)
    code1 = tl.load(codebook_ptr + 2 * row + 1, mask=inside, other=0.0).to(tl.float32)
    return code0, code1


@triton.jit
def mask_bit(bits_ptr, weight, mask):
    """Bit ``weight`` (an index tensor) of the packed bits at ``bits_ptr``, as int32 0 or 1 (0 outside ``mask``)."""
    byte = tl.load(bits_ptr + (weight >> 3), mask=mask, other=0).to(tl.int32)
    return (byte >> (weight & 7)) & 1


def sample_stride(mask_bits: torch.Tensor) -> int:
    """The bytes from one sample's mask bits to the next's: packed bits ``[B, bytes]``, each sample's contiguous
    (a view of one layer's in ``sample_bits_layers``' output, or several adjacent layers')."""
    if mask_bits.dtype != torch.uint8 or mask_bits.dim() != 2 or (mask_bits.stride(1) != 1 and mask_bits.shape[1] > 1):
        raise ValueError(
            f"mask_bits must be uint8 [batch, bytes] with each sample's bytes contiguous, got {mask_bits.dtype} "
            f"of shape {tuple(mask_bits.shape)} and strides {mask_bits.stride()}"
        )
    return mask_bits.stride(0)


def codebook_table(codebook: torch.Tensor, out_features: int, layer_rows: int | None, device) -> tuple:
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
