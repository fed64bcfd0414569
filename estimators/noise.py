"""Counter-based uniform noise: a pure function of (seed, sample, parameter, element).

Sample ``b`` of parameter ``p`` under ``seed`` gets two 32-bit keys ``(ka, kb)``
derived from ``(seed, p, b)``; element ``e`` (the flat index into the
parameter's logits, shape [..., K]) gets

    h = mix32(mix32(e ^ ka) ^ kb)
    U = ((h >> 9) + 0.5) * 2**-23        # exact in float32, strictly inside (0, 1)

where ``mix32`` is a 32-bit integer finaliser (xorshift-multiply, constants
from Wellons' hash prospector). Only integer arithmetic reaches the bits of
U, so the CPU path (numpy uint32) and the CUDA path (a Triton kernel doing
the same uint32 operations) agree bit for bit, and sample b's noise does not
depend on the batch it sits in. Two keys, applied in two rounds, keep the
streams of different samples from being shifted copies of each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import _backend, _checks

MASK32 = 0xFFFFFFFF
MIX_MULTIPLIERS = (0x21F0AAAD, 0x735A2D97)
_GOLDEN = 0x9E3779B9
UNIFORM_BITS = 23  # U = ((h >> 9) + 0.5) / 2**23


def mix32(x: int) -> int:
    """The 32-bit finaliser on a Python int (for keys; the arrays use the same steps)."""
    m1, m2 = MIX_MULTIPLIERS
    x &= MASK32
    x ^= x >> 16
    x = (x * m1) & MASK32
    x ^= x >> 15
    x = (x * m2) & MASK32
    x ^= x >> 15
    return x


def _absorb(key: int, value: int) -> int:
    return mix32(key ^ mix32(value + _GOLDEN))


def sample_keys(seed: int, param: int, samples: Sequence[int]) -> np.ndarray:
    """Keys ``(ka, kb)`` of each sample, as a uint32 array [len(samples), 2]."""
    seed_key = _absorb(_absorb(0, seed & MASK32), seed >> 32)
    param_key = _absorb(seed_key, param)
    keys = np.empty((len(samples), 2), dtype=np.uint32)
    for row, sample in enumerate(samples):
        ka = _absorb(param_key, sample)
        keys[row] = ka, _absorb(ka, 1)
    return keys


def _mix32_inplace(x: np.ndarray) -> np.ndarray:
    m1, m2 = (np.uint32(m) for m in MIX_MULTIPLIERS)
    x ^= x >> np.uint32(16)
    x *= m1  # uint32 arithmetic wraps modulo 2**32
    x ^= x >> np.uint32(15)
    x *= m2
    x ^= x >> np.uint32(15)
    return x


def _uniform_numpy(keys: np.ndarray, numel: int) -> np.ndarray:
    h = np.arange(numel, dtype=np.uint32)[None, :] ^ keys[:, :1]
    _mix32_inplace(h)
    h ^= keys[:, 1:]
    _mix32_inplace(h)
    u = (h >> np.uint32(32 - UNIFORM_BITS)).astype(np.float32)
    u += np.float32(0.5)
    u *= np.float32(2.0**-UNIFORM_BITS)
    return u


def uniform(
    seed: int,
    param: int,
    samples: Sequence[int],
    shape: Sequence[int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Uniform noise in (0, 1), float32 [len(samples), *shape], for parameter ``param``.

    Row ``i`` is the noise of sample ``samples[i]``; it depends only on
    (seed, param, samples[i], element index), never on the other rows.
    """
    _checks.check_seed(seed)
    samples = list(samples)
    if not 0 <= param <= MASK32 or any(not 0 <= s <= MASK32 for s in samples):
        raise ValueError("param and sample indices must lie in [0, 2**32)")
    numel = int(np.prod(shape, dtype=np.int64))
    if numel >= 2**32:
        raise ValueError(f"a parameter of {numel} elements exceeds the 2**32 element counter")
    keys = sample_keys(seed, param, samples)
    kernels = _backend.triton_kernels(device)
    if kernels is not None:
        return kernels.uniform(keys, numel, device).view(len(samples), *shape)
    return torch.from_numpy(_uniform_numpy(keys, numel)).view(len(samples), *shape).to(device)


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise G = -log(-log U)."""
    return -torch.log(-torch.log(u))
