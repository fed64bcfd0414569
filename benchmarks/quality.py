"""Estimator quality: two problems small enough for exact answers, and each estimator's figures on them.

Both draw their noise from the package's counter-based stream with fixed seeds, so every figure is a
deterministic function of the estimator's code: an A/A comparison is identical, and a changed backward
formula moves them. They use only the public API (``estimators.estimate``, ``noise.uniform``) and run on
the CPU in seconds, on every machine.

Gradient fidelity (``gradient_fidelity``). A stochastic layer of n = 16 binary weights with logits
theta [16, 2] and masks m = D c, c = (0, 1); the loss L(m) = ||A m - b||^2 with A [8, 16] and b [8]
fixed. Its exact expected gradient enumerates all 2^16 configurations:
    d/dtheta_ik E[L] = sum_m L(m) p(m) (1[m_i = k] - p_ik),  p = softmax(theta) per weight.
Each estimator gives N = 2048 single-sample estimates g_n; reported: 1 - mean_n cos(g_n, grad)
(the mean cosine similarity as in the ReinMax paper, turned so that lower is better), the relative bias
||mean_n g_n - grad|| / ||grad|| and the relative spread sqrt(mean_n ||g_n - mean g||^2) / ||grad||.

Polynomial programming (``polynomial_programming``, after Tucker et al. 2017 and the ReinMax paper):
theta in R^{128 x 2}, z = D c, minimise E ||z - 0.45||^2 / 128 with Adam (lr 0.1, 100 steps, one sample
a step, theta = 0 at the start); reported: the exact expected loss at the end minus its minimum
(0.45^2, every z_i = 0), so lower is better and 0 is optimal.
"""

from __future__ import annotations

import functools

import torch

import estimators
from estimators import noise

CODEBOOK = torch.tensor([0.0, 1.0], dtype=torch.float64)
FIDELITY_WEIGHTS = 16
FIDELITY_SAMPLES = 2048
FIDELITY_SEED = 11
PROGRAM_SIZE = 128
PROGRAM_TARGET = 0.45
PROGRAM_STEPS = 100
PROGRAM_LR = 0.1
PROGRAM_SEED = 12


@functools.cache
def _fidelity_problem():
    generator = torch.Generator().manual_seed(FIDELITY_SEED)
    theta = torch.randn(FIDELITY_WEIGHTS, 2, generator=generator, dtype=torch.float64)
    a = torch.randn(8, FIDELITY_WEIGHTS, generator=generator, dtype=torch.float64)
    b = torch.randn(8, generator=generator, dtype=torch.float64)
    return theta, a, b


def _layer_loss(masks: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L(m) = ||A m - b||^2 for each row of masks [..., n]."""
    return ((masks @ a.T - b) ** 2).sum(-1)


@functools.cache
def exact_fidelity_gradient() -> torch.Tensor:
    """d E[L] / d theta [16, 2], by enumerating the 2^16 mask configurations (float64)."""
    theta, a, b = _fidelity_problem()
    n = FIDELITY_WEIGHTS
    bits = (torch.arange(2**n).unsqueeze(-1) >> torch.arange(n)) & 1  # [2^n, n]: configuration, weight
    one_hot = torch.nn.functional.one_hot(bits, 2).to(torch.float64)  # [2^n, n, 2]
    log_p = torch.log_softmax(theta, -1)
    weight = torch.exp((one_hot * log_p).sum((-1, -2))) * _layer_loss(one_hot @ CODEBOOK, a, b)  # p(m) L(m)
    return torch.einsum("c,cik->ik", weight, one_hot) - torch.softmax(theta, -1) * weight.sum()


def gradient_fidelity(estimator: str, tau: float) -> dict[str, float]:
    """The estimator's N single-sample gradients against the exact one: see the module docstring."""
    theta, a, b = _fidelity_problem()
    logits = theta.expand(FIDELITY_SAMPLES, *theta.shape).clone().requires_grad_()
    uniform = noise.uniform(FIDELITY_SEED, 0, range(FIDELITY_SAMPLES), theta.shape).double()
    sample = estimators.estimate(estimator, logits, uniform, tau=tau)
    _layer_loss(sample @ CODEBOOK, a, b).sum().backward()
    estimates = logits.grad.reshape(FIDELITY_SAMPLES, -1)  # g_n, one row a sample
    exact = exact_fidelity_gradient().reshape(-1)
    mean = estimates.mean(0)
    cosine = torch.nn.functional.cosine_similarity(estimates, exact.expand_as(estimates), dim=-1)
    return {
        "one_minus_cosine": float(1 - cosine.mean()),
        "relative_bias": float((mean - exact).norm() / exact.norm()),
        "relative_spread": float(((estimates - mean) ** 2).sum(-1).mean().sqrt() / exact.norm()),
    }


def polynomial_programming(estimator: str, tau: float) -> float:
    """Excess expected loss after ``PROGRAM_STEPS`` Adam steps: see the module docstring."""
    theta = torch.zeros(PROGRAM_SIZE, 2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=PROGRAM_LR)
    for step in range(PROGRAM_STEPS):
        uniform = noise.uniform(PROGRAM_SEED, 0, [step], theta.shape)[0].double()
        z = estimators.estimate(estimator, theta, uniform, tau=tau) @ CODEBOOK
        optimizer.zero_grad()
        ((z - PROGRAM_TARGET) ** 2).mean().backward()
        optimizer.step()
    with torch.no_grad():
        expected = (torch.softmax(theta, -1) * (CODEBOOK - PROGRAM_TARGET) ** 2).sum(-1).mean()
    return float(expected - PROGRAM_TARGET**2)
