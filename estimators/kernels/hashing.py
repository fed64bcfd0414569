"""The counter-based noise of ``estimators.noise`` in Triton device code, and the seed arguments the kernels take.

Each function repeats ``noise.py``'s uint32 steps exactly, with its constants (the tests compare bits):
element e of sample b of parameter p under seed s has U = ((h >> 9) + 0.5) 2**-23 with
h = mix32(mix32(e ^ ka) ^ kb), (ka, kb) the sample's keys derived from ``noise.param_key(s, p)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from .. import noise
from .._interpreter import INTERPRETED

_INTERPRETED = tl.constexpr(INTERPRETED)
_MIX_1 = tl.constexpr(noise.MIX_MULTIPLIERS[0])
_MIX_2 = tl.constexpr(noise.MIX_MULTIPLIERS[1])
_GOLDEN = tl.constexpr(noise.GOLDEN)
_COUNTER_SHIFT = tl.constexpr(32 - noise.UNIFORM_BITS)  # h >> 9: the 23-bit counter hash n
_UNIFORM_STEP = tl.constexpr(noise.UNIFORM_STEP)
CONDITIONAL_KEY = tl.constexpr(noise.CONDITIONAL_KEY)


@triton.jit
def mix32(x):
    """``noise.mix32`` on uint32 values (products wrap modulo 2**32)."""
    x = x ^ (x >> 16)
    x = x * _MIX_1
    x = x ^ (x >> 15)
    x = x * _MIX_2
    x = x ^ (x >> 15)
    return x


@triton.jit
def hash_counter(element, ka, kb):
    """The 23-bit hash n of ``element`` (uint32) under keys (ka, kb): U = (n + 0.5) 2**-23."""
    return mix32(mix32(element ^ ka) ^ kb) >> _COUNTER_SHIFT


@triton.jit
def hash_uniform(element, ka, kb):
    """U of ``element`` (uint32) under sample keys (ka, kb): ``noise.uniform``'s formula."""
    return (hash_counter(element, ka, kb).to(tl.float32) + 0.5) * _UNIFORM_STEP


@triton.jit
def accurate_log(x):
    """log x, accurate near x = 1, where log x is tiny: libdevice's logf on the GPU, as torch uses
    (the interpreter has no libdevice)."""
    if _INTERPRETED:
        return tl.log(x)
    else:
        return libdevice.log(x)


@triton.jit
def gumbel(u):
    """G = -log(-log U): ``noise.gumbel``."""
    return -accurate_log(-accurate_log(u))


@triton.jit
def absorb(key, value):
    """``noise.absorb``: mix32(key ^ mix32(value + GOLDEN)) on uint32 values."""
    return mix32(key ^ mix32(value + _GOLDEN))


@triton.jit
def seed_param_key(seed_low, seed_high, param):
    """``noise.param_key(seed, param)`` from the seed's low and high 32 bits (uint32 each)."""
    low = absorb(tl.full((), 0, tl.uint32), seed_low)
    return absorb(absorb(low, seed_high), tl.cast(param, tl.uint32))


@triton.jit
def parameter_key(seed_ptr, key, SEED_ON_DEVICE: tl.constexpr):
    """The parameter's 32-bit key (``noise.param_key``): ``key`` itself, computed on the host, or, where the
    seed lives in device memory (an int64 at ``seed_ptr``, its 64 bits the seed), computed here from the
    seed and the parameter index ``key``, so a captured CUDA graph reads the seed's value at each replay."""
    if SEED_ON_DEVICE:
        seed = tl.load(seed_ptr)  # int64 -> uint32 keeps the low 32 bits
        return seed_param_key(seed.to(tl.uint32), (seed >> 32).to(tl.uint32), key)
    else:
        return tl.cast(key, tl.uint32)


@triton.jit
def sample_keys(param_key, first_sample, b):
    """Keys (ka, kb) of sample first_sample + b, as ``noise.sample_keys``."""
    ka = absorb(tl.cast(param_key, tl.uint32), tl.cast(first_sample, tl.uint32) + tl.cast(b, tl.uint32))
    return ka, absorb(ka, tl.full((), 1, tl.uint32))


def seed_arguments(seed, param: int, placeholder: torch.Tensor) -> tuple:
    """The kernels' (seed_ptr, key, SEED_ON_DEVICE) for ``seed``, an int or an int64 tensor on the device
    (see ``parameter_key``); ``placeholder`` fills the unused pointer."""
    if isinstance(seed, torch.Tensor):
        return seed, param, True
    return placeholder, noise.param_key(seed, param), False
