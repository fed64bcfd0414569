"""Each estimator against an independent float64 formula, and the forward sample's distribution."""

import math

import numpy as np
import pytest
import torch

import estimators
from estimators import noise


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _jacobian(p):
    """J(p) = diag(p) - p p^T, one K x K matrix per row."""
    return np.einsum("nk,kl->nkl", p, np.eye(p.shape[-1])) - np.einsum("nk,nl->nkl", p, p)


def expected_logit_grad(name, theta, u, tau, g):
    """dL/dtheta from docs/DESIGN.md section 2, in numpy float64, written from the formulas alone."""
    gumbel = -np.log(-np.log(u))
    one_hot = np.eye(theta.shape[-1])[np.argmax(theta + gumbel, -1)]
    apply = lambda p: np.einsum("nkl,nl->nk", _jacobian(p), g)  # noqa: E731
    if name == "ste":
        return apply(_softmax(theta / tau)) / tau
    if name == "reinmax":
        pi0 = _softmax(theta)
        pi1 = (_softmax(theta / tau) + one_hot) / 2
        return 2 * apply(pi1) - apply(pi0) / 2
    if name == "gumbel":
        return apply(_softmax((theta + gumbel) / tau)) / tau
    if name == "gst":  # Fan et al. 2022: the sample leads every other category by the gap (1)
        top = theta.max(-1, keepdims=True)
        return apply(_softmax(np.where(one_hot == 1, top, np.minimum(theta, top - 1.0)) / tau)) / tau
    if name == "gumbel_rao":  # Paulus et al. 2021: Gumbels conditioned on the sample, M draws
        log_z = np.log(np.exp(theta).sum(-1, keepdims=True))
        draws = estimators.gradients.GUMBEL_RAO_DRAWS
        total = 0.0
        for m in range(draws):
            e = -np.log(_conditional_uniform(u, m))  # Exp(1)
            e_s = (e * one_hot).sum(-1, keepdims=True)
            z = np.where(one_hot == 1, log_z - np.log(e_s), -np.log(e * np.exp(-theta) + e_s / np.exp(log_z)))
            total = total + apply(_softmax(z / tau))
        return total / (draws * tau)
    raise AssertionError(name)


def _conditional_uniform(u, draw):
    """noise.conditional_uniform's documented formula, in numpy: U'_m from the 23 bits U carries."""
    counter = np.floor(u.astype(np.float32).astype(np.float64) * 2**23).astype(np.uint32)
    ka, kb = noise.conditional_keys(draw)
    h = noise._mix32_inplace(counter ^ np.uint32(ka))
    h = noise._mix32_inplace(h ^ np.uint32(kb))
    return ((h >> np.uint32(9)).astype(np.float64) + 0.5) * 2.0**-23


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
@pytest.mark.parametrize("k", [2, 3, 7])
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradient_matches_float64_formula(name, k, tau, dtype):
    gen = torch.Generator().manual_seed(k * 100 + int(tau * 10))
    theta = (torch.randn(64, k, generator=gen, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    u = torch.rand(64, k, generator=gen, dtype=torch.float64).clamp(1e-6, 1 - 1e-6).to(dtype)
    g = torch.randn(64, k, generator=gen, dtype=torch.float64).to(dtype)

    d = estimators.estimate(name, theta, u, tau=tau)
    (d * g).sum().backward()

    want = expected_logit_grad(name, theta.detach().double().numpy(), u.double().numpy(), tau, g.double().numpy())
    rtol = 1e-12 if dtype == torch.float64 else 2e-5
    np.testing.assert_allclose(theta.grad.double().numpy(), want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_binary_logit_grad_is_the_float64_formulas_category_1(name, tau):
    """The K = 2 form the fused CPU backward uses (GumbelSoftmax's is a closed form of its own)."""
    gen = torch.Generator().manual_seed(int(tau * 10))
    theta = torch.randn(64, 2, generator=gen, dtype=torch.float64) * 2
    u = torch.rand(64, 2, generator=gen, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    codebook = torch.tensor([0.25, -1.5], dtype=torch.float64)  # the fused path's upstream: g = h c
    index = estimators.gradients.sample_index(theta, u)
    got = estimators.gradients.ESTIMATOR_FUNCTIONS[name].binary_logit_grad(theta, index, u, tau, codebook)
    want = expected_logit_grad(name, theta.numpy(), u.numpy(), tau, codebook.expand(64, 2).numpy())
    np.testing.assert_allclose(got.numpy(), want[:, 1], rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(want[:, 0], -want[:, 1], atol=1e-12 * np.abs(want).max())  # why one suffices


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_is_the_gumbel_max_one_hot(name, dtype):
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(10, 6, 4, generator=gen, dtype=dtype)
    u = torch.rand(10, 6, 4, generator=gen, dtype=dtype)
    d = estimators.estimate(name, theta, u)
    assert d.dtype == dtype and d.shape == theta.shape
    want = torch.nn.functional.one_hot(torch.argmax(theta + noise.gumbel(u), -1), 4).to(dtype)
    assert torch.equal(d, want)


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_every_estimator_sees_the_same_sample(name):
    theta = torch.randn(50, 3, generator=torch.Generator().manual_seed(2))
    u = noise.uniform(7, 0, [0], theta.shape)[0]
    assert torch.equal(estimators.estimate(name, theta, u), estimators.estimate("ste", theta, u))


def _check_frequencies(samples, probs, n):
    """Each category's frequency within 5 binomial standard deviations of its probability."""
    freq = np.bincount(samples, minlength=len(probs)) / n
    bound = 5 * np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) <= bound), (freq, probs, bound)


@pytest.mark.parametrize("theta", [[0.0, 1.0], [1.5, -0.5, 0.3], [2.0, 0.0, -1.0, 0.5, -3.0]])
def test_sample_frequencies_follow_softmax_across_elements(theta):
    n = 200_000
    theta = torch.tensor(theta, dtype=torch.float32)
    probs = torch.softmax(theta.double(), -1).numpy()
    logits = theta.expand(n, len(theta))
    u = noise.uniform(3, 5, [0], logits.shape)[0]  # one sample: the element counter varies
    d = estimators.estimate("ste", logits, u)
    _check_frequencies(d.argmax(-1).numpy(), probs, n)


def test_sample_frequencies_follow_softmax_across_samples():
    n = 20_000
    theta = torch.tensor([0.4, -1.0, 1.2], dtype=torch.float32)
    probs = torch.softmax(theta.double(), -1).numpy()
    u = noise.uniform(11, 2, range(n), theta.shape)  # one element: the sample index varies
    d = estimators.estimate("reinmax", theta.expand(n, 3), u)
    _check_frequencies(d.argmax(-1).numpy(), probs, n)


def test_statistical_bound_catches_a_biased_sampler():
    """The frequency check can fail: a sampler off by 2% is rejected at this sample size."""
    n = 200_000
    probs = np.array([0.5, 0.5])
    biased = (np.random.default_rng(0).random(n) < 0.52).astype(np.int64)
    with pytest.raises(AssertionError):
        _check_frequencies(biased, probs, n)


def test_gradients_are_linear_in_the_upstream_gradient():
    """The fused implementation relies on logit_grad being linear in g."""
    gen = torch.Generator().manual_seed(5)
    theta = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    u = torch.rand(20, 3, generator=gen, dtype=torch.float64)
    one_hot = estimators.estimate("ste", theta, u)
    g1, g2 = torch.randn(2, 20, 3, generator=gen, dtype=torch.float64)
    for cls in estimators.gradients.ESTIMATOR_FUNCTIONS.values():
        lhs = cls.logit_grad(theta, one_hot, u, 0.7, 2 * g1 - 3 * g2)
        rhs = 2 * cls.logit_grad(theta, one_hot, u, 0.7, g1) - 3 * cls.logit_grad(theta, one_hot, u, 0.7, g2)
        assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)
        assert math.isclose(float(lhs.sum()), 0.0, abs_tol=1e-9), "J(p) g sums to zero over categories"


def _per_sample_coefficients(name, theta, tau, g, n, seed):
    """Each estimator's dL/dtheta for n noise draws of one row theta, with the upstream g: [n, K], and the samples."""
    logits = theta.expand(n, len(theta))
    u = noise.uniform(seed, 0, [0], logits.shape)[0].double()
    one_hot = estimators.estimate("ste", logits, u)
    cls = estimators.gradients.ESTIMATOR_FUNCTIONS[name]
    return cls.logit_grad(logits, one_hot, u, tau, g.expand(n, len(theta))), one_hot.argmax(-1)


def test_gumbel_rao_averages_gumbel_softmax_given_the_sample_with_less_spread():
    """Given the sample s, Gumbel-Rao's expected gradient is straight-through Gumbel-softmax's (both within
    5 standard errors of each other), and its spread is smaller, for every s."""
    theta = torch.tensor([0.5, -0.3, 1.0], dtype=torch.float64)
    g = torch.tensor([0.7, -1.2, 0.4], dtype=torch.float64)
    n = 60_000
    gumbel, samples = _per_sample_coefficients("gumbel", theta, 0.7, g, n, seed=5)
    rao, same_samples = _per_sample_coefficients("gumbel_rao", theta, 0.7, g, n, seed=5)
    assert torch.equal(samples, same_samples)
    for s in range(3):
        rows = samples == s
        a, b = gumbel[rows], rao[rows]
        standard_error = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
        assert torch.all((a.mean(0) - b.mean(0)).abs() <= 5 * standard_error + 1e-12), s
        assert b.var(0).sum() < a.var(0).sum(), s


def test_the_conditional_check_can_fail():
    """The expectation check above rejects an estimator with the wrong conditional expectation (plain ste)."""
    theta = torch.tensor([0.5, -0.3, 1.0], dtype=torch.float64)
    g = torch.tensor([0.7, -1.2, 0.4], dtype=torch.float64)
    gumbel, samples = _per_sample_coefficients("gumbel", theta, 0.7, g, 60_000, seed=5)
    ste, _ = _per_sample_coefficients("ste", theta, 0.7, g, 60_000, seed=5)
    rows = samples == 2
    standard_error = torch.sqrt(gumbel[rows].var(0) / rows.sum() + ste[rows].var(0) / rows.sum())
    assert not torch.all((gumbel[rows].mean(0) - ste[rows].mean(0)).abs() <= 5 * standard_error + 1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gumbel_rao_is_finite_in_16_bit_logits(dtype):
    """Its conditional draws stay fp32: a 16-bit U' near 1 would round to 1, and log(-log 1) = -inf."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 2, generator=gen).to(dtype).requires_grad_()
    u = (torch.rand(20_000, 2, generator=gen) * 0.99 + 0.005).to(dtype)
    d = estimators.estimate("gumbel_rao", logits, u, tau=0.5)
    (d * torch.randn(20_000, 2, generator=gen).to(dtype)).sum().backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_estimate_under_torch_func_transforms_equals_the_eager_call(name):
    """vmap and grad (and both) give the eager call's samples and gradients bit for bit; the value checks, which
    cannot read a transformed tensor's values, are skipped there (estimate's docstring)."""
    generator = torch.Generator().manual_seed(0)
    logits, upstream = torch.randn(5, 3, generator=generator), torch.randn(5, 3, generator=generator)
    uniform = torch.rand(5, 3, generator=generator).clamp(0.01, 0.99)
    leaf = logits.clone().requires_grad_()
    sample = estimators.estimate(name, leaf, uniform, tau=0.7)
    (sample * upstream).sum().backward()

    def loss(theta, u, g):
        return (estimators.estimate(name, theta, u, tau=0.7) * g).sum()

    batched = torch.func.vmap(lambda theta, u: estimators.estimate(name, theta, u, tau=0.7))(logits, uniform)
    assert torch.equal(batched, sample.detach())
    assert torch.equal(torch.func.grad(loss)(logits, uniform, upstream), leaf.grad)
    assert torch.equal(torch.func.vmap(torch.func.grad(loss))(logits, uniform, upstream), leaf.grad)
    over_the_noise = torch.func.vmap(lambda u: estimators.estimate(name, logits[0], u, tau=0.7))(uniform)
    assert torch.equal(over_the_noise, torch.stack([estimators.estimate(name, logits[0], u) for u in uniform]))
