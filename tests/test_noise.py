"""Counter-based noise and the shared sampler: pure, batch-independent, bit-identical across devices."""

import numpy as np
import pytest
import torch

from estimators import _backend, noise, sampler
from estimators.gradients import sample_index


def _mix32(x):
    """The finaliser written out again from its constants, independently of the package."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) % 2**32
    x ^= x >> 15
    x = (x * 0x735A2D97) % 2**32
    return x ^ (x >> 15)


def _scalar_uniform(seed, param, sample, element):
    ka, kb = (int(k) for k in noise.sample_keys(seed, param, [sample])[0])
    h = _mix32(_mix32(element ^ ka) ^ kb)
    return np.float32(((h >> 9) + 0.5) / 2**23)


def test_array_path_matches_scalar_formula():
    u = noise.uniform(1234, 7, [0, 5], (3, 4, 2))
    for row, sample in enumerate([0, 5]):
        flat = u[row].flatten()
        for element in (0, 1, 9, 23):
            assert flat[element].item() == _scalar_uniform(1234, 7, sample, element)


def test_uniform_is_float32_strictly_inside_unit_interval():
    u = noise.uniform(0, 0, range(4), (1000, 2))
    assert u.dtype == torch.float32 and u.shape == (4, 1000, 2)
    assert (u > 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005


def test_extreme_counters_stay_inside_unit_interval():
    keys = np.array([[0, 0], [2**32 - 1, 2**32 - 1]], dtype=np.uint32)
    u = noise._uniform_numpy(keys, 1 << 16)
    assert u.min() > 0 and u.max() < 1


def test_pure_function_of_seed_sample_param_element():
    a = noise.uniform(42, 3, [0, 1, 2, 3], (16, 16, 2))
    assert torch.equal(a, noise.uniform(42, 3, [0, 1, 2, 3], (16, 16, 2)))
    assert torch.equal(a[3], noise.uniform(42, 3, [3], (16, 16, 2))[0]), "a sample's noise ignores the batch"
    assert torch.equal(a[1:3], noise.uniform(42, 3, [1, 2], (16, 16, 2)))
    for other in (noise.uniform(43, 3, [0], (16, 16, 2)), noise.uniform(42, 4, [0], (16, 16, 2)), a[1:2]):
        assert (other[0] != a[0]).float().mean() > 0.99


def test_samples_are_uncorrelated():
    u = noise.uniform(9, 1, range(8), (4096,)).double()
    corr = torch.corrcoef(u)
    off_diagonal = corr[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 5 / 4096**0.5


def test_sixty_four_bit_seeds_are_distinct():
    assert not torch.equal(noise.uniform(2**40, 0, [0], (64,)), noise.uniform(0, 0, [0], (64,)))


def test_cpu_sampler_is_gumbel_argmax_of_the_noise():
    logits = torch.randn(20, 30, 3, generator=torch.Generator().manual_seed(0))
    index = sampler.draw_index(logits, 5, 2, range(4))
    assert index.dtype == torch.uint8 and index.shape == (4, 20, 30)
    want = sample_index(logits, noise.uniform(5, 2, range(4), logits.shape))
    assert torch.equal(index.long(), want)


def _binary_logits_hard_cases():
    """K = 2 logits around the CPU sampler's margin test: exact ties of theta + G, huge and tiny, NaN, inf."""
    gen = torch.Generator().manual_seed(2)
    g = noise.gumbel(noise.uniform(5, 2, [0], (4000, 2))[0])
    tie = torch.randn(4000, 2, generator=gen)
    tie[:, 1] = tie[:, 0] + g[:, 0] - g[:, 1]  # theta1 + G1 = theta0 + G0 up to rounding, for sample 0
    far_tie = torch.randn(4000, 2, generator=gen) * 1e4  # the same where theta + G rounds to a few 1e-3
    far_tie[:, 1] = far_tie[:, 0] + g[:, 0] - g[:, 1]
    up, down = torch.tensor(float("inf")), torch.tensor(-float("inf"))
    odd = torch.randn(4000, 2, generator=gen)
    odd[::7, 0], odd[::11, 1], odd[::13, 0] = float("nan"), float("inf"), -float("inf")
    odd[1::5] = torch.tensor([3.4e38, -3.4e38])
    return [
        tie,
        torch.stack((tie[:, 0], torch.nextafter(tie[:, 1], up)), -1),
        torch.stack((tie[:, 0], torch.nextafter(tie[:, 1], down)), -1),
        far_tie,
        torch.randn(4000, 2, generator=gen).expand(-1, 2).contiguous(),  # theta0 = theta1
        torch.randn(4000, 2, generator=gen) * 1e9,
        torch.randn(4000, 2, generator=gen) * 1e-40,
        torch.randn(4000, 2, generator=gen) * 100,
        odd,
        (torch.randn(50, 40, 2, generator=gen) * 3).to(torch.bfloat16),
    ]


_NUMPY_PATH = pytest.mark.skipif(_backend.INTERPRETED, reason="the numpy path: under the interpreter the kernels draw")


@_NUMPY_PATH
@pytest.mark.parametrize("case", range(10))
def test_binary_cpu_sampler_is_sample_index_bit_for_bit(case):
    logits = _binary_logits_hard_cases()[case]
    for seed, samples in ((5, range(3)), (2**63 + 7, [9, 0, 4])):
        index = sampler.draw_index(logits, seed, 2, samples)
        want = sample_index(logits, noise.uniform(seed, 2, samples, logits.shape))
        assert index.dtype == torch.uint8 and torch.equal(index.long(), want)


def test_category_major_noise_and_conditional_draws_are_the_same_values():
    u = noise.uniform(8, 3, [1, 4], (30, 20, 2))
    major = noise.uniform(8, 3, [1, 4], (30, 20, 2), category_major=True)
    assert torch.equal(major, u) and major[0, ..., 1].is_contiguous()  # a sample's category-1 plane
    counter = (u.numpy().astype(np.float64) * 2**23).astype(np.uint32)  # conditional_uniform's formula, in numpy
    ka, kb = noise.conditional_keys(1)
    h = (_mix32(_mix32(counter.astype(object) ^ ka) ^ kb) >> 9).astype(np.float64)
    want = torch.from_numpy(((h + 0.5) / 2**23).astype(np.float32))
    assert torch.equal(noise.conditional_uniform(u, 1), want)
    assert torch.equal(noise.conditional_uniform(major, 1), want)


def test_noise_hashes_on_the_cpu_and_sampler_uniform_launches_where_the_kernels_run(monkeypatch):
    """noise.uniform never reaches the kernels; sampler.uniform gives them each run of consecutive samples."""
    runs = []

    class Kernels:
        @staticmethod
        def uniform(seed, param, run, numel, device):
            runs.append(run)
            return noise.uniform(seed, param, run, (numel,), device)

    monkeypatch.setattr(_backend, "triton_kernels", lambda device: Kernels)
    want = noise.uniform(5, 2, [0, 1, 7], (4, 3, 2))
    assert runs == [], "noise.uniform dispatched to the kernels"
    got = sampler.uniform(5, 2, [0, 1, 7], (4, 3, 2))
    assert runs == [range(0, 2), range(7, 8)] and torch.equal(got, want)


def test_bits_pack_the_index():
    logits = torch.randn(9, 13, 2, generator=torch.Generator().manual_seed(1))  # 117 weights: a partial byte
    index = sampler.draw_index(logits, 1, 0, range(3))
    bits = sampler.draw_bits(logits, 1, 0, range(3))
    assert bits.shape == (3, 15)
    assert torch.equal(sampler.unpack_bits(bits, (9, 13)), index)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_noise_is_bit_identical_to_cpu():
    shape = (257, 129, 2)
    cpu = noise.uniform(77, 11, [0, 3, 1000], shape)
    cuda = sampler.uniform(77, 11, [0, 3, 1000], shape, device="cuda")
    assert torch.equal(cuda.cpu(), cpu)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("k", [2, 3])
def test_cuda_sampler_matches_cpu_up_to_last_bit_ties(k):
    logits = torch.randn(300, 200, k, generator=torch.Generator().manual_seed(k))
    cpu = sampler.draw_index(logits, 3, 1, range(5))
    cuda = sampler.draw_index(logits.cuda(), 3, 1, range(5)).cpu()
    differ = cpu != cuda
    if differ.any():  # only where two categories tie to float32 rounding
        values = (logits + noise.gumbel(noise.uniform(3, 1, range(5), logits.shape))).double()
        top2 = values.topk(2, dim=-1).values
        assert ((top2[..., 0] - top2[..., 1])[differ] < 1e-5).all()
    assert differ.float().mean() < 1e-5
    if k == 2:
        bits = sampler.draw_bits(logits.cuda(), 3, 1, range(5))
        assert torch.equal(sampler.unpack_bits(bits, logits.shape[:-1]).cpu(), cuda)
