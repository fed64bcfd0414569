"""The one sampler every implementation draws its masks from.

For logits theta [out, in, K] of parameter ``param``, sample ``b`` draws
s_b = argmax_k(theta_k + G_k(U_b)) with U_b the counter-based noise of
``noise.uniform``. On CPU this is ``gradients.sample_index`` on that noise (for
K = 2, a shortcut that gives the same bits); on CUDA a Triton kernel computes the
same noise and argmax in registers without writing U (also on CPU under
TRITON_INTERPRET=1). Implementations differ only in how they apply the masks,
never in which masks they draw. ``uniform`` is ``noise.uniform`` computed on the
device where the kernels run. (CPU and CUDA noise agree bit for bit; the float
argmax on top may differ where two categories tie to the last bit.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import _backend, _device_tables, noise
from .gradients import sample_index
from .noise import gumbel


def uniform(
    seed: noise.Seed,
    param: int,
    samples: Sequence[int],
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    *,
    category_major: bool = False,
) -> torch.Tensor:
    """``noise.uniform``, computed on ``device`` by a Triton kernel where the kernels run (the same bits).

    ``seed``: an int, or an int64 tensor (``noise.Seed``), which the kernel reads when it runs. The kernels'
    noise keeps the default layout whatever ``category_major``; elsewhere this is ``noise.uniform``.
    """
    kernels = _backend.triton_kernels(device)
    if kernels is None:
        return noise.uniform(seed, param, samples, shape, device, category_major=category_major)
    seed, samples, numel = noise.check_uniform_arguments(seed, param, samples, shape, device)
    return noise.over_runs(samples, lambda run: kernels.uniform(seed, param, run, numel, device)).view(
        len(samples), *shape
    )


def draw_index(logits: torch.Tensor, seed: noise.Seed, param: int, samples: Sequence[int]) -> torch.Tensor:
    """Category index of every weight for each sample: uint8 [len(samples), *logits.shape[:-1]].

    ``seed``: an int, or an int64 tensor on the logits' device (``noise.Seed``).
    """
    logits = logits.detach()
    kernels = _backend.triton_kernels(logits.device)
    if kernels is not None:
        return noise.over_runs(samples, lambda run: kernels.sample_index(logits, seed, param, run))
    if logits.device.type == "cpu" and logits.shape[-1] == 2 and _sums_in_float32(logits):
        return _binary_index_cpu(logits, seed, param, samples)
    uniform = noise.uniform(seed, param, samples, logits.shape, logits.device)
    return sample_index(logits, uniform).to(torch.uint8)


def _sums_in_float32(logits: torch.Tensor) -> bool:
    """Whether ``sample_index`` adds the logits and the float32 Gumbels in float32 (fp32, bf16, fp16 logits)."""
    return torch.promote_types(logits.dtype, torch.float32) == torch.float32


# The K = 2 CPU sampler's margin M = 2**-12 + 2**-18 (|theta0| + |theta1|) (see _binary_index_cpu).
_MARGIN = 2.0**-12
_MARGIN_PER_LOGIT = 2.0**-18
_BLOCK = 1 << 16  # weights (times samples) it decides at a time


def _binary_index_cpu(logits: torch.Tensor, seed: noise.Seed, param: int, samples: Sequence[int]) -> torch.Tensor:
    """``sample_index`` of K = 2 logits on ``noise.uniform``'s noise, bit for bit, from two logarithms a weight.

    ``sample_index`` takes s = 1 iff a1 > a0, with a_k = fl(theta_k + G_k) and G_k = -log(-log U_k)
    in float32. With l_k = log U_k < 0 the real T = (theta1 + g1) - (theta0 + g0), g_k the exact
    Gumbel, is theta1 - theta0 + log(l0 / l1). So, with a margin
    M = 2**-12 + 2**-18 (|theta0| + |theta1|) and, for each weight, hi = exp(M - (theta1 - theta0))
    and lo = exp(-M - (theta1 - theta0)): s = 1 where l0 < hi l1 (T > M), s = 0 where
    l0 > lo l1 (T < -M), and the few weights in between (a fraction of at most about M / 2) take
    ``sample_index``'s own steps.

    Why it is exact: over all 2**23 values U takes, torch's float32 log U is within 0.7 ulp and
    G within 6e-7 of the exact values (checked, as is that both do not depend on where U sits in
    a tensor), so a_k is within 6e-7 + 2**-24 (|theta_k| + 17) of theta_k + g_k, and
    |T| > 4e-6 + 2**-24 (|theta0| + |theta1|) fixes a1 > a0 or a1 < a0. The tests themselves,
    with l_k, hi and lo in float32 (the roundings of theta1 - theta0, M, the exponent, exp, log
    and the products, at a few ulp each), misjudge T by less than 2e-6 + 2**-23 (|theta0| + |theta1|):
    M covers both many times over. Where hi or lo leaves float32's normal range, its test
    claims nothing (hi = inf, lo = 0) or what |theta1 - theta0| > 87 + M already decides (hi = 0,
    lo = inf); NaN in either (NaN or infinite logits) claims nothing.
    """
    with np.errstate(all="ignore"):  # inf and NaN in hi and lo
        theta = logits.float().reshape(-1, 2)
        theta0, theta1 = theta.unbind(-1)
        difference = theta1 - theta0
        margin = theta0.abs().add_(theta1.abs()).mul_(_MARGIN_PER_LOGIT).add_(_MARGIN)
        hi = torch.exp(margin - difference).numpy()
        lo = torch.exp(margin.neg_().sub_(difference)).numpy()
        theta = theta.numpy()
        uniform = noise.uniform(seed, param, samples, logits.shape, category_major=True)
        planes = uniform.movedim(-1, 1).reshape(len(samples), 2, theta.shape[0])  # U_0, U_1 [B, 2, W]: contiguous
        index = np.empty((len(samples), theta.shape[0]), dtype=np.bool_)
        rows = max(1, _BLOCK // max(theta.shape[0], 1))  # samples at a time: the passes stay in cache
        zero = np.empty((rows, theta.shape[0]), dtype=np.bool_)
        product = np.empty((rows, theta.shape[0]), dtype=np.float32)
        near = [np.empty(0, dtype=np.int64)]  # flat indices into index [B, W] where neither test holds
        for first in range(0, len(samples), rows):
            block = slice(first, first + rows)
            log_u = torch.log(planes[block]).numpy()
            one, no, scratch = index[block], zero[: len(log_u)], product[: len(log_u)]
            np.less(log_u[:, 0], np.multiply(log_u[:, 1], hi, out=scratch), out=one)
            np.greater(log_u[:, 0], np.multiply(log_u[:, 1], lo, out=scratch), out=no)
            near.append(np.flatnonzero(np.equal(one, no, out=no)) + first * theta.shape[0])  # (not both: lo < hi)
        near = np.divmod(np.concatenate(near), theta.shape[0])  # (sample, weight)
        if len(near[0]):
            near_u = planes.numpy()[near[0], :, near[1]].T  # [2, n]
            values = torch.from_numpy(theta[near[1]].T) + gumbel(torch.from_numpy(near_u))
            index[near] = (values[1] > values[0]).numpy()
    return torch.from_numpy(index).view(torch.uint8).view(len(samples), *logits.shape[:-1])


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
    which reads each layer's logits through a table of their addresses on the device. Each layer's
    masks are a view ``[B, bytes]`` of the group's ``[B, layers, bytes]``, in which a sample's masks of
    consecutive layers (in ``layers``' order) are adjacent. The tables are
    kept in ``tables`` (the caller's: it must outlive every CUDA graph that replays the launch) by
    ``_device_tables``, under the logits' current addresses. Returns {} where the kernels do not run (the
    CPU draws layer by layer), and leaves out a group whose table would have to be built while a CUDA graph
    is being captured (a host-to-device copy cannot be captured): those layers draw one by one.

    Args:
        layers: modules with ``logits`` ``[out, in, 2]`` and ``param_id``.
        seed: as ``draw_bits``. samples: a range of consecutive sample indices.
        tables: the caller's dict of device tables (``_device_tables``), {} at first.

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
        # Read once and held until the launch: a parametrised ``logits`` is a new tensor at every read, whose
        # memory a later read could reuse.
        logits = layer.logits.detach()
        if logits.shape[-1] == 2 and logits.is_contiguous() and logits.dtype in kernels.LAYER_LOGITS_DTYPES:
            groups.setdefault((tuple(logits.shape), logits.dtype, logits.device), []).append((layer.param_id, logits))
    drawn = {}
    for group in groups.values():
        device = group[0][1].device
        table = _device_tables.columns(
            tables, device, (tuple(logits.data_ptr() for _, logits in group), tuple(param for param, _ in group))
        )
        if table is None:  # a CUDA graph is being captured and the table was never built: layer by layer
            continue
        bits = kernels.sample_bits_layers(*table, group[0][1], seed, samples)
        drawn.update((param, bits[:, index]) for index, (param, _) in enumerate(group))
    return drawn
