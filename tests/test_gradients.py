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
    raise AssertionError(name)


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
