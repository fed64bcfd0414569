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

from . import _checks

# The hash's constants, read by the Triton kernels (``estimators.kernels.hashing``) too: this is their one source.
MASK32 = 0xFFFFFFFF
MIX_MULTIPLIERS = (0x21F0AAAD, 0x735A2D97)
GOLDEN = 0x61C88647  # 2**32 - 0x9E3779B9, the golden-ratio increment, negated
UNIFORM_BITS = 23  # U = ((h >> 9) + 0.5) / 2**23
UNIFORM_STEP = 2.0**-UNIFORM_BITS  # the spacing of U's values, float32's epsilon


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
    return mix32(key ^ mix32(value + GOLDEN))


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


def _mix32_inplace(x: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """``mix32`` on a uint32 array, in place (uint32 arithmetic wraps modulo 2**32); ``scratch``: x's shape."""
    scratch = np.empty_like(x) if scratch is None else scratch
    np.right_shift(x, 16, out=scratch)
    x ^= scratch
    return _mix32_rest(x, scratch)


_MIX_MULTIPLIERS_UINT32 = tuple(np.uint32(m) for m in MIX_MULTIPLIERS)


def _mix32_rest(x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``mix32`` after its first step ``x ^= x >> 16``, in place."""
    m1, m2 = _MIX_MULTIPLIERS_UINT32
    x *= m1
    np.right_shift(x, 15, out=scratch)
    x ^= scratch
    x *= m2
    np.right_shift(x, 15, out=scratch)
    x ^= scratch
    return x


# Elements hashed by one numpy call: the in-place steps stay in cache, and the calls' overhead stays small.
_BLOCK = 1 << 16
_ONE_BITS = 0x3F800000  # the bits of float32 1.0


def _uniform_numpy(keys: np.ndarray, numel: int, start: int = 0, step: int = 1, out: np.ndarray | None = None):
    """U of elements ``start + step * j`` (j < numel) for each row of ``keys``: float32 [len(keys), numel].

    ``out``: a float32 [len(keys), numel] array to fill (a view will do).
    """

    def elements(first, count):
        return np.arange(start + step * first, start + step * (first + count), step, dtype=np.uint32)

    return _hash_uniform(keys, numel, elements, out)


def _hash_uniform(keys: np.ndarray, numel: int, elements, out: np.ndarray | None = None) -> np.ndarray:
    """U = ((h >> 9) + 0.5) 2**-23, h = mix32(mix32(e ^ ka) ^ kb), for each key row and counter e: [len(keys), numel].

    ``elements(first, count)`` gives counters first .. first + count - 1 as a new uint32 array. The
    steps run on uint32 arrays in place, a block of counters for a few rows at a time (in cache).
    Two rewrites leave every bit as it is: mix32(e ^ ka)'s first step ``x ^= x >> 16`` gives
    (e ^ e >> 16) ^ (ka ^ ka >> 16) (shifts distribute over xor), so the counters' part is
    computed once a block for all rows; and U is formed as the float with biased exponent 127 and
    mantissa h >> 9, 1 + (h >> 9) 2**-23, minus 1 - 2**-24 (exact by Sterbenz' lemma).
    """
    keys = np.asarray(keys, dtype=np.uint32).reshape(-1, 2)
    if out is None:
        out = np.empty((len(keys), numel), dtype=np.float32)
    if numel == 0 or len(keys) == 0:
        return out
    width = min(numel, _BLOCK)
    rows = max(1, _BLOCK // width)
    key_a = (keys[:, 0] ^ (keys[:, 0] >> np.uint32(16)))[:, None]
    key_b = keys[:, 1:]
    bits, scratch = np.empty(rows * width, dtype=np.uint32), np.empty(rows * width, dtype=np.uint32)
    offset = np.float32(1 - UNIFORM_STEP / 2)
    for first in range(0, numel, width):
        count = min(width, numel - first)
        counters = elements(first, count)
        counters ^= counters >> np.uint32(16)
        for row in range(0, len(keys), rows):
            stop = min(row + rows, len(keys))
            h = bits[: (stop - row) * count].reshape(stop - row, count)
            tmp = scratch[: h.size].reshape(h.shape)
            np.bitwise_xor(counters, key_a[row:stop], out=h)
            _mix32_rest(h, tmp)
            h ^= key_b[row:stop]
            _mix32_inplace(h, tmp)
            h >>= np.uint32(32 - UNIFORM_BITS)
            h |= np.uint32(_ONE_BITS)
            np.subtract(h.view(np.float32), offset, out=out[row:stop, first : first + count])
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


def check_uniform_arguments(
    seed: object, param: int, samples: Sequence[int], shape: Sequence[int], device: torch.device | str
) -> tuple[Seed, list[int], int]:
    """``uniform``'s arguments checked: (the seed, as ``_checks.check_seed`` returns it; the samples as a list;
    the number of elements of ``shape``); ValueError where a seed, parameter or sample index, or the element
    count, leaves the hash's 32-bit counters."""
    seed = _checks.check_seed(seed, device)
    samples = list(samples)
    if not 0 <= param <= MASK32 or any(not 0 <= s <= MASK32 for s in samples):
        raise ValueError("param and sample indices must lie in [0, 2**32)")
    numel = int(np.prod(shape, dtype=np.int64))
    if numel >= 2**32:
        raise ValueError(f"a parameter of {numel} elements exceeds the 2**32 element counter")
    return seed, samples, numel


def uniform(
    seed: Seed,
    param: int,
    samples: Sequence[int],
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    *,
    category_major: bool = False,
) -> torch.Tensor:
    """Uniform noise in (0, 1), float32 [len(samples), *shape], for parameter ``param``, hashed on the CPU.

    Row ``i`` is the noise of sample ``samples[i]``; it depends only on
    (seed, param, samples[i], element index), never on the other rows.
    ``seed`` is a ``Seed``: an int, or an int64 tensor (its value read here). The result is moved to
    ``device``; ``sampler.uniform`` computes the same bits on the device where the Triton kernels run.
    ``category_major``: the same values, stored with the last axis outermost (``u[..., k]`` is
    contiguous), as the CPU paths for K = 2 read them.
    """
    seed, samples, numel = check_uniform_arguments(seed, param, samples, shape, device)
    keys = sample_keys(seed_value(seed), param, samples)
    if not category_major:
        return torch.from_numpy(_uniform_numpy(keys, numel)).view(len(samples), *shape).to(device)
    categories = shape[-1] if len(shape) else 1
    planes = np.empty((len(samples), categories, numel // max(categories, 1)), dtype=np.float32)
    for k in range(categories):
        _uniform_numpy(keys, planes.shape[-1], start=k, step=categories, out=planes[:, k])
    return torch.from_numpy(planes).movedim(1, -1).view(len(samples), *shape).to(device)


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
    if _numpy_path(uniform):
        return conditional_uniforms(uniform, [draw])[0]
    ka, kb = conditional_keys(draw)
    counter = torch.floor(uniform.float() * 2.0**UNIFORM_BITS).to(torch.int64)
    h = _mix32_tensor(_mix32_tensor(counter ^ ka) ^ kb)
    return ((h >> (32 - UNIFORM_BITS)).to(torch.float32) + 0.5) * 2.0**-UNIFORM_BITS


def _numpy_path(tensor: torch.Tensor) -> bool:
    """Whether the uint32 steps run in numpy: on the CPU, outside torch.compile (which traces torch ops only) and
    outside torch.func transforms (whose wrapped tensors have no storage numpy can read)."""
    return (
        tensor.device.type == "cpu" and not torch.compiler.is_compiling() and torch.func.debug_unwrap(tensor) is tensor
    )


def conditional_uniforms(uniform: torch.Tensor, draws: Sequence[int]) -> torch.Tensor:
    """``conditional_uniform`` of each draw, stacked: float32 [len(draws), *uniform.shape].

    On the CPU, the uint32 steps of ``uniform``'s CPU path on the counters n, each block of
    counters hashed under every draw's keys, in U's memory layout (so a category-major U gives
    category-major draws).
    """
    if not _numpy_path(uniform):
        return torch.stack([conditional_uniform(uniform, draw) for draw in draws])
    values = uniform.detach().float()
    order = sorted(range(values.dim()), key=lambda dim: -values.stride(dim))  # the dims in memory order
    stored = values.permute(order).contiguous()  # U in memory order: a view where U is dense
    counter = (stored.numpy().reshape(-1) * np.float32(2.0**UNIFORM_BITS)).astype(np.uint32)  # n, exactly

    def elements(first, count):
        return counter[first : first + count].copy()

    keys = np.array([conditional_keys(draw) for draw in draws], dtype=np.uint32).reshape(-1, 2)
    drawn = torch.from_numpy(_hash_uniform(keys, counter.size, elements)).view(len(keys), *stored.shape)
    return drawn.permute(0, *(1 + order.index(dim) for dim in range(values.dim())))


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise G = -log(-log U)."""
    return -torch.log(-torch.log(u))
