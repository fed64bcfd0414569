"""The one sampler every implementation draws its masks from.

For logits theta [out, in, K] of parameter ``param``, sample ``b`` draws
s_b = argmax_k(theta_k + G_k(U_b)) with U_b the counter-based noise of
``noise.uniform``. On CPU this is ``gradients.sample_index`` on that noise; on
CUDA a Triton kernel computes the same noise and argmax in registers without
writing U (also on CPU under TRITON_INTERPRET=1). Implementations differ only in how they apply the masks, never in
which masks they draw. (CPU and CUDA noise agree bit for bit; the float argmax
on top may differ where two categories tie to the last bit.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import _backend, noise
from .gradients import sample_index


def draw_index(logits: torch.Tensor, seed: noise.Seed, param: int, samples: Sequence[int]) -> torch.Tensor:
    """Category index of every weight for each sample: uint8 [len(samples), *logits.shape[:-1]].

    ``seed``: an int, or an int64 tensor on the logits' device (``noise.Seed``).
    """
    logits = logits.detach()
    kernels = _backend.triton_kernels(logits.device)
    if kernels is not None:
        return noise.over_runs(samples, lambda run: kernels.sample_index(logits, seed, param, run))
    uniform = noise.uniform(seed, param, samples, logits.shape, logits.device)
    return sample_index(logits, uniform).to(torch.uint8)


def draw_bits(logits: torch.Tensor, seed: noise.Seed, param: int, samples: Sequence[int]) -> torch.Tensor:
    """For K = 2: the index bits packed 8 to a byte, uint8 [len(samples), ceil(W / 8)].

    W = out * in; bit j of byte i holds weight 8 i + j (flat, row-major).
    """
    if logits.shape[-1] != 2:
        raise ValueError(f"packed masks need K = 2 categories, got K = {logits.shape[-1]}")
    logits = logits.detach()
    kernels = _backend.triton_kernels(logits.device)
    if kernels is not None:
        return noise.over_runs(samples, lambda run: kernels.sample_bits(logits, seed, param, run))
    return pack_bits(draw_index(logits, seed, param, samples))


def pack_bits(index: torch.Tensor) -> torch.Tensor:
    """Pack a 0/1 uint8 index [B, ...] into uint8 [B, ceil(W / 8)], little-endian bit order."""
    flat = index.reshape(index.shape[0], -1).cpu().numpy()
    packed = np.packbits(flat, axis=1, bitorder="little")
    return torch.from_numpy(packed).to(index.device)


def unpack_bits(bits: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of ``pack_bits``: uint8 0/1 [B, *shape]."""
    count = int(np.prod(shape))
    flat = np.unpackbits(bits.cpu().numpy(), axis=1, count=count, bitorder="little")
    return torch.from_numpy(flat).view(bits.shape[0], *shape).to(bits.device)


def draw_bits_by_layer(layers: Sequence, seed: noise.Seed, samples: range, tables: dict) -> dict[int, torch.Tensor]:
    """``draw_bits`` of many layers at once where the Triton kernels run: {param_id: uint8 [B, ceil(W / 8)]}.

    Layers whose logits share a shape and dtype (K = 2, contiguous) are drawn in one kernel launch,
    which reads each layer's logits through a table of their addresses on the device. The tables are
    kept in ``tables`` (the caller's: it must outlive every CUDA graph that replays the launch) under
    the logits' current addresses. Returns {} where the kernels do not run (the CPU draws layer by
    layer), and leaves out a group whose table would have to be built while a CUDA graph is being
    captured (a host-to-device copy cannot be captured): those layers draw one by one.

    Args:
        layers: modules with ``logits`` ``[out, in, 2]`` and ``param_id``.
        seed: as ``draw_bits``. samples: a range of consecutive sample indices.
        tables: the cache of device tables, {} at first.

    Returns:
        each layer's packed masks by ``param_id``: ``draw_bits(layer.logits, seed, layer.param_id, samples)``.
    """
    if not layers:
        return {}
    kernels = _backend.triton_kernels(layers[0].logits.device)
    if kernels is None or not isinstance(samples, range) or samples.step != 1 or len(samples) == 0:
        return {}
    groups: dict[tuple, list] = {}
    for layer in layers:
        logits = layer.logits
        if logits.shape[-1] == 2 and logits.is_contiguous() and logits.dtype in kernels.LAYER_LOGITS_DTYPES:
            groups.setdefault((tuple(logits.shape), logits.dtype, logits.device), []).append(layer)
    drawn = {}
    for group in groups.values():
        device = group[0].logits.device
        key = (device, tuple(layer.logits.data_ptr() for layer in group), tuple(layer.param_id for layer in group))
        table = tables.get(key)
        if table is None:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                continue
            table = tables[key] = tuple(torch.tensor(column, dtype=torch.int64, device=device) for column in key[1:])
        bits = kernels.sample_bits_layers(*table, group[0].logits.detach(), seed, samples)
        drawn.update((layer.param_id, bits[index]) for index, layer in enumerate(group))
    return drawn
