"""Counter-based uniform noise: a pure function of (seed, sample, parameter, element).

Parameter ``p`` under ``seed`` has a 32-bit key ``pk = param_key(seed, p)``;
its sample ``b`` has two keys ``ka = absorb(pk, b)``, ``kb = absorb(ka, 1)``
with ``absorb(k, v) = mix32(k ^ mix32(v + 0x61C88647))``; element ``e`` (the
flat index into the parameter's logits, shape [..., K]) gets

    h = mix32(mix32(e ^ ka) ^ kb)
    U = ((h >> 9) + 0.5) * 2**-23        # exact in float32, strictly inside (0, 1)

where ``mix32`` is a 32-bit integer finaliser (xorshift-multiply, constants
from Wellons' hash prospector). Only integer arithmetic reaches the bits of
U, so the CPU path (numpy uint32) and the CUDA path (Triton kernels doing
the same uint32 operations, deriving the sample keys from ``pk`` in
registers) agree bit for bit, and sample b's noise does not depend on the
batch it sits in. Two keys, applied in two rounds, keep the streams of
different samples from being shifted copies of each other. Every constant
is below 2**31, so products of 32-bit values fit in int64 and Triton types
the literals as 32-bit.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from . import _backend, _checks

MASK32 = 0xFFFFFFFF
MIX_MULTIPLIERS = (0x21F0AAAD, 0x735A2D97)
_GOLDEN = 0x61C88647  # 2**32 - 0x9E3779B9, the golden-ratio increment, negated
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


def absorb(key: int, value: int) -> int:
    return mix32(key ^ mix32(value + _GOLDEN))


@functools.lru_cache(maxsize=4096)
def param_key(seed: int, param: int) -> int:
    """The 32-bit key of parameter ``param``'s noise under ``seed`` (a 64-bit seed is folded in)."""
    return absorb(absorb(absorb(0, seed & MASK32), seed >> 32), param)


def sample_keys(seed: int, param: int, samples: Sequence[int]) -> np.ndarray:
    """Keys ``(ka, kb)`` of each sample, as a uint32 array [len(samples), 2]."""
    key = param_key(seed, param)
    keys = np.empty((len(samples), 2), dtype=np.uint32)
    for row, sample in enumerate(samples):
        ka = absorb(key, sample)
        keys[row] = ka, absorb(ka, 1)
    return keys


def _mix32_inplace(x: np.ndarray) -> np.ndarray:
    m1, m2 = (np.uint32(m) for m in MIX_MULTIPLIERS)
    x ^= x >> np.uint32(16)
    x *= m1  # uint32 arithmetic wraps modulo 2**32
    x ^= x >> np.uint32(15)
    x *= m2
    x ^= x >> np.uint32(15)
    return x


_CHUNK = 1 << 16  # elements hashed at a time: the in-place steps stay in cache (1.7x faster)


def _uniform_numpy(keys: np.ndarray, numel: int) -> np.ndarray:
    out = np.empty((len(keys), numel), dtype=np.float32)
    elements = np.arange(numel, dtype=np.uint32)
    for row, (ka, kb) in enumerate(keys):
        for start in range(0, numel, _CHUNK):
            h = elements[start : start + _CHUNK] ^ ka
            _mix32_inplace(h)
            h ^= kb
            _mix32_inplace(h)
            h >>= np.uint32(32 - UNIFORM_BITS)
            u = out[row, start : start + _CHUNK]
            u[...] = h  # exact: h < 2**23
            u += np.float32(0.5)
            u *= np.float32(2.0**-UNIFORM_BITS)
    return out


Seed = int | torch.Tensor
"""A seed: an int in [0, 2**64), or a 0-d int64 tensor whose 64 bits are the seed (two's complement:
seed - 2**64 for seeds of 2**63 and above). On a CUDA device, the Triton kernels read a tensor seed's
value when they run, so a CUDA graph captured with it draws new noise after ``seed.add_(1)``."""


def seed_value(seed: Seed) -> int:
    """A seed as an int in [0, 2**64) (a tensor seed's value: a device synchronisation on CUDA)."""
    if isinstance(seed, torch.Tensor):
        return int(seed.item()) & (2**64 - 1)
    return seed


def uniform(
    seed: Seed,
    param: int,
    samples: Sequence[int],
    shape: Sequence[int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Uniform noise in (0, 1), float32 [len(samples), *shape], for parameter ``param``.

    Row ``i`` is the noise of sample ``samples[i]``; it depends only on
    (seed, param, samples[i], element index), never on the other rows.
    ``seed`` is a ``Seed``: an int, or an int64 tensor (read on the device where the kernels run).
    """
    if not isinstance(seed, torch.Tensor):
        _checks.check_seed(seed)
    samples = list(samples)
    if not 0 <= param <= MASK32 or any(not 0 <= s <= MASK32 for s in samples):
        raise ValueError("param and sample indices must lie in [0, 2**32)")
    numel = int(np.prod(shape, dtype=np.int64))
    if numel >= 2**32:
        raise ValueError(f"a parameter of {numel} elements exceeds the 2**32 element counter")
    kernels = _backend.triton_kernels(device)
    if kernels is not None:
        return over_runs(samples, lambda run: kernels.uniform(seed, param, run, numel, device)).view(
            len(samples), *shape
        )
    keys = sample_keys(seed_value(seed), param, samples)
    return torch.from_numpy(_uniform_numpy(keys, numel)).view(len(samples), *shape).to(device)


def contiguous_runs(samples: Sequence[int]) -> list[range]:
    """Split sample indices into runs of consecutive ones (a batch's rows are one run)."""
    if isinstance(samples, range) and samples.step == 1:
        return [samples]
    runs: list[range] = []
    for sample in samples:
        if runs and runs[-1].stop == sample:
            runs[-1] = range(runs[-1].start, sample + 1)
        else:
            runs.append(range(sample, sample + 1))
    return runs


def over_runs(samples: Sequence[int], launch) -> torch.Tensor:
    """``launch(run)`` for each run of consecutive samples (kernels take a first sample and a count),
    concatenated along the first axis."""
    parts = [launch(run) for run in contiguous_runs(samples)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


CONDITIONAL_KEY = 0x2545F491  # the key of the further draws derived from an element's noise


def conditional_keys(draw: int) -> tuple[int, int]:
    """Keys (ka, kb) of further draw ``draw`` (see ``conditional_uniform``)."""
    ka = absorb(CONDITIONAL_KEY, draw)
    return ka, absorb(ka, 1)


def _mix32_tensor(x: torch.Tensor) -> torch.Tensor:
    """``mix32`` on an int64 tensor of values in [0, 2**32) (products stay below 2**63)."""
    m1, m2 = MIX_MULTIPLIERS
    x = x ^ (x >> 16)
    x = (x * m1) & MASK32
    x = x ^ (x >> 15)
    x = (x * m2) & MASK32
    return x ^ (x >> 15)


def conditional_uniform(uniform: torch.Tensor, draw: int) -> torch.Tensor:
    """Further uniform noise in (0, 1), a pure function of each element's noise U (float32, U's shape).

    n = floor(U * 2**23) is the 23-bit counter hash that U carries (``uniform``'s
    U = (n + 0.5) 2**-23); draw m of the element is U'_m = ((h >> 9) + 0.5) 2**-23
    with h = mix32(mix32(n ^ ka_m) ^ kb_m) and (ka_m, kb_m) = ``conditional_keys(m)``.
    So an estimator that needs more noise than the sample's (Gumbel-Rao's conditional
    draws) takes it from U alone: reproducible, batch-invariant, and the Triton kernels
    recompute it from the same counters. The draws depend on n alone, not on the element's
    keys: two elements whose U agree (one pair in 2**23) get the same further draws. That
    biases no element's expectation; it correlates the draws of such pairs.
    """
    counter = torch.floor(uniform.float() * 2.0**UNIFORM_BITS).to(torch.int64)
    ka, kb = conditional_keys(draw)
    h = _mix32_tensor(_mix32_tensor(counter ^ ka) ^ kb)
    return ((h >> (32 - UNIFORM_BITS)).to(torch.float32) + 0.5) * 2.0**-UNIFORM_BITS


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise G = -log(-log U)."""
    return -torch.log(-torch.log(u))
