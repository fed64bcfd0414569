"""Gradient estimators for a categorical sample.

Notation: logits theta [..., K]; tau > 0; U uniform noise of theta's shape;
G = -log(-log U); the sample s = argmax_k(theta_k + G_k) ~ Categorical(softmax(theta));
D = one_hot(s); J(p) = diag(p) - p p^T; g = dL/dD.

Every estimator returns D itself in the forward pass (so all estimators see
the same sample for the same noise) and differs only in its backward pass,
``logit_grad``: dL/dtheta as a function of (theta, D, U, tau, g). Each one is
linear in g, which the fused implementation relies on (it applies
``logit_grad`` to g = codebook to get dm/dtheta of a mask m = D . c).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks
from .noise import conditional_uniform, conditional_uniforms, gumbel


def simplex_jvp(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """J(p) g = p * (g - <p, g>) along the last axis, J(p) = diag(p) - p p^T."""
    return p * (g - (p * g).sum(-1, keepdim=True))


def sample_index(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """s = argmax_k(theta_k + G_k): the Gumbel-max sample, int64 [...]; the first maximum wins a tie.

    A compare per category, as the Triton sampler does: torch.argmax over a
    last axis of 2 is fifteen times slower on CPU.
    """
    values = logits + gumbel(uniform)
    best = values[..., 0]
    index = torch.zeros(best.shape, dtype=torch.int64, device=values.device)
    for k in range(1, values.shape[-1]):
        take = values[..., k] > best
        best = torch.where(take, values[..., k], best)
        index = torch.where(take, k, index)
    return index


def _one_hot(index: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """one_hot(index) [..., K] in the logits' dtype, K = the logits' last axis; a scatter (``F.one_hot`` reads the
    indices' values to check them, which torch.func.vmap cannot)."""
    return torch.zeros_like(logits).scatter(-1, index.long().unsqueeze(-1), 1.0)


class _OneHotEstimator(torch.autograd.Function):
    """Forward: D = one_hot(index) in the logits' dtype. Backward: dL/dtheta = ``logit_grad(..., g)``, computed in
    ``torch.promote_types(logits.dtype, torch.float32)`` (fp32 for 16-bit logits) and returned in the logits' dtype.

    Subclasses define only ``logit_grad(logits, one_hot, uniform, tau, grad)``;
    each gets the one backward below, bound to its class (torch.compile
    traces a static ``backward``, not a classmethod).
    """

    needs_uniform = False
    generate_vmap_rule = True  # torch.func.vmap batches forward and backward as they are (torch ops only)

    @staticmethod
    def forward(logits, index, uniform, tau):
        return _one_hot(index, logits)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, index, uniform, tau = inputs
        ctx.tau = tau
        ctx.save_for_backward(logits, index, uniform)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)

        def backward(ctx, grad):
            logits, index, uniform = ctx.saved_tensors
            dtype = torch.promote_types(logits.dtype, torch.float32)  # 16-bit logits: the math in fp32
            one_hot = _one_hot(index, logits).to(dtype)
            theta_grad = cls.logit_grad(logits.to(dtype), one_hot, uniform, ctx.tau, grad.to(dtype))
            return theta_grad.to(logits.dtype), None, None, None

        cls.backward = staticmethod(backward)

    @classmethod
    def binary_logit_grad(cls, logits, index, uniform, tau, grad):
        """``logit_grad``'s category-1 component for K = 2, from the sample's index [...]; category 0's is its
        negative (every estimator's J(.) g sums to zero over K). Estimators with a cheaper closed form
        override it (the fused CPU backward calls it per sample)."""
        one_hot = F.one_hot(index.long(), 2).to(logits.dtype)
        return cls.logit_grad(logits, one_hot, uniform, tau, grad)[..., 1]


class StraightThrough(_OneHotEstimator):
    """Straight-through estimator (Bengio, Leonard & Courville 2013, arXiv:1308.3432).

    Output D + p - sg(p) with p = softmax(theta / tau), so
        dL/dtheta = J(p) g / tau.
    """

    @staticmethod
    def logit_grad(logits, one_hot, uniform, tau, grad):
        return simplex_jvp(torch.softmax(logits / tau, dim=-1), grad) / tau


class ReinMax(_OneHotEstimator):
    """ReinMax (Liu, Liu, Gao, Chen & Han, NeurIPS 2023, arXiv:2304.08612), second order.

    pi0 = softmax(theta), pi1 = (softmax(theta / tau) + D) / 2,
        dL/dtheta = 2 J(pi1) g - J(pi0) g / 2.
    """

    @staticmethod
    def logit_grad(logits, one_hot, uniform, tau, grad):
        pi0 = torch.softmax(logits, dim=-1)
        pi1 = (torch.softmax(logits / tau, dim=-1) + one_hot) / 2
        return 2 * simplex_jvp(pi1, grad) - simplex_jvp(pi0, grad) / 2


class GumbelSoftmax(_OneHotEstimator):
    """Straight-through Gumbel-softmax (Jang, Gu & Poole, ICLR 2017, arXiv:1611.01144).

    y = softmax((theta + G) / tau), output D + y - sg(y), so
        dL/dtheta = J(y) g / tau.
    G is computed from U in the wider of U's and the logits' dtypes (fp64 for fp64 logits and fp32 noise).
    """

    needs_uniform = True

    @staticmethod
    def logit_grad(logits, one_hot, uniform, tau, grad):
        noise = gumbel(uniform.to(torch.promote_types(uniform.dtype, logits.dtype)))
        return simplex_jvp(torch.softmax((logits + noise) / tau, dim=-1), grad) / tau

    @classmethod
    def binary_logit_grad(cls, logits, index, uniform, tau, grad):
        """K = 2: y1 (1 - y1) (g1 - g0) / tau with y1 = sigmoid(x), x = ((theta1 + G1) - (theta0 + G0)) / tau.

        With l_k = log U_k (negative), G1 - G0 = log(l0 / l1), so r = e^-x = (e^(theta0 - theta1) l1 / l0)^(1 / tau)
        and y1 (1 - y1) = r / (1 + r)^2 = 1 / (r + 2 + 1 / r): two logarithms a weight for tau = 1 (r is
        formed through its logarithm otherwise), and no cancellation where y1 nears 0 or 1.
        """
        log_u = torch.log(uniform.to(torch.promote_types(uniform.dtype, logits.dtype)))
        ratio = log_u[..., 1] / log_u[..., 0]  # e^-(G1 - G0)
        shift = logits[..., 0] - logits[..., 1]
        if tau == 1:
            r = ratio * torch.exp(shift)
        else:
            r = torch.exp((shift + torch.log(ratio)) / tau)
        denominator = torch.reciprocal(r).add_(r).add_(2)
        return ((grad[..., 1] - grad[..., 0]) / tau) / denominator


# Module constants, not class attributes: torch.compile cannot read an autograd.Function's attributes.
GST_GAP = 1.0  # gapped straight-through's gap
GUMBEL_RAO_DRAWS = 4  # Gumbel-Rao's conditional draws M (see GumbelRao)


class GappedStraightThrough(_OneHotEstimator):
    """Gapped straight-through (Fan, Chi, Rudnicky & Ramadge, ICML 2022, arXiv:2206.07235), gap 1.

    With m = max_k theta_k and s the sample: theta'_s = m and
    theta'_k = min(theta_k, m - gap) for k != s, the shift theta' - theta held
    constant; p' = softmax(theta' / tau), so
        dL/dtheta = J(p') g / tau.
    The sampled category leads every other by at least the gap, as a one-hot does.
    """

    @staticmethod
    def logit_grad(logits, one_hot, uniform, tau, grad):
        top = logits.amax(-1, keepdim=True)
        shifted = torch.where(one_hot.bool(), top, torch.minimum(logits, top - GST_GAP))
        return simplex_jvp(torch.softmax(shifted / tau, dim=-1), grad) / tau


class GumbelRao(_OneHotEstimator):
    """Gumbel-Rao Monte Carlo (Paulus, Maddison & Krause, ICLR 2021, arXiv:2010.04838), M = ``GUMBEL_RAO_DRAWS``.

    Straight-through Gumbel-softmax, Rao-Blackwellised over the Gumbel noise
    given the sample s: with Z = sum_k exp(theta_k) and E ~ Exp(1) i.i.d.,
        z_s = log Z - log E_s,   z_k = -log(E_k exp(-theta_k) + E_s / Z)  (k != s)
    are Gumbel perturbations of theta conditioned on argmax = s; y_m = softmax(z_m / tau)
    with z_m - theta held constant, and
        dL/dtheta = (1 / M) sum_m J(y_m) g / tau.
    Its expectation given s is straight-through Gumbel-softmax's, with less variance. E_m =
    -log U'_m, U'_m = ``noise.conditional_uniform(U, m)``: drawn from the sample's own noise,
    so reproducible and batch-invariant. ``GUMBEL_RAO_DRAWS`` = 4, measured on benchmarks/quality.py's problem: the
    relative spread falls from 1.25 (one draw, Gumbel-softmax's) to 1.13 at 4 draws, 1.10 at 8 and 1.08
    at 32 (tau = 1; 1.99, 1.56, 1.47, 1.40 at tau = 0.5): 4 draws take about three quarters of what 32
    give, and the backward's cost grows linearly in the draws.
    """

    needs_uniform = True

    @staticmethod
    def logit_grad(logits, one_hot, uniform, tau, grad):
        # In fp32 at least: a 16-bit U' rounds to 1 within 2**-9 of it, and log(-log 1) is -inf.
        dtype = torch.promote_types(logits.dtype, torch.float32)
        theta, chosen = logits.to(dtype), one_hot.bool()
        log_z = torch.logsumexp(theta, dim=-1, keepdim=True)
        total = 0
        for draw in range(GUMBEL_RAO_DRAWS):
            log_e = torch.log(-torch.log(conditional_uniform(uniform, draw).to(dtype)))
            log_e_chosen = torch.where(chosen, log_e, 0).sum(-1, keepdim=True)
            z = torch.where(chosen, log_z - log_e_chosen, -torch.logaddexp(log_e - theta, log_e_chosen - log_z))
            total = total + simplex_jvp(torch.softmax(z / tau, dim=-1), grad.to(dtype))
        return (total / (GUMBEL_RAO_DRAWS * tau)).to(logits.dtype)

    @classmethod
    def binary_logit_grad(cls, logits, index, uniform, tau, grad):
        """K = 2: (g1 - g0) / (M tau) sum_m y1m (1 - y1m), y_m = softmax(z_m / tau).

        With s the sample and o the other category, the z above give z_s - z_o = log q,
        q = 1 + (1 + e^(theta_s - theta_o)) E_o / E_s, so y1 (1 - y1) = 1 / (r + 2 + 1 / r) with
        r = q^(1 / tau): two logarithms a weight and a draw (the E's), no log-sum-exp.
        """
        dtype = torch.promote_types(logits.dtype, torch.float32)
        theta, drew_1 = logits.to(dtype), index.to(dtype)  # drew_1: 1 where s = 1, else 0
        # A = 1 + e^(theta_s - theta_o): theta_s - theta_o = +-(theta1 - theta0), the sign exact.
        scale = torch.exp((2 * drew_1 - 1) * (theta[..., 1] - theta[..., 0])).add_(1)
        log_u = torch.log(conditional_uniforms(uniform, range(GUMBEL_RAO_DRAWS)).to(dtype))  # [M, ..., 2]
        ratio = log_u[..., 0] / log_u[..., 1]  # E_0 / E_1
        # E_o / E_s: the ratio where s = 1, its inverse where s = 0 (an exact select: both are finite).
        ratio = torch.addcmul(ratio.reciprocal().mul_(1 - drew_1), ratio, drew_1)
        q = ratio.mul_(scale).add_(1)
        r = q if tau == 1 else q.pow_(1 / tau)
        total = torch.reciprocal(r).add_(r).add_(2).reciprocal_().sum(0)
        return ((grad[..., 1] - grad[..., 0]) / (GUMBEL_RAO_DRAWS * tau) * total).to(logits.dtype)


ESTIMATOR_FUNCTIONS: dict[str, type[_OneHotEstimator]] = {
    "ste": StraightThrough,
    "reinmax": ReinMax,
    "gumbel": GumbelSoftmax,
    "gst": GappedStraightThrough,
    "gumbel_rao": GumbelRao,
}
ESTIMATORS = tuple(ESTIMATOR_FUNCTIONS)
# Whether each estimator's backward reads the noise U: a plain dict, which torch.compile reads (not the
# autograd.Function's attribute).
NEEDS_UNIFORM: dict[str, bool] = {name: function.needs_uniform for name, function in ESTIMATOR_FUNCTIONS.items()}


def estimate(name: str, logits: torch.Tensor, uniform: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    r"""Draw a one-hot categorical sample whose backward pass is a gradient estimator's.

    The forward pass is the Gumbel-max sample, the same for every estimator:
    D = one_hot(argmax_k(theta_k + G_k)) with G = -log(-log U). The backward
    pass returns the named estimator's dL/dtheta for the upstream g = dL/dD
    (formulas in this module's docstring and in each estimator's class).

    Args:
        name: one of ``ESTIMATORS``: ``"ste"``, ``"reinmax"``, ``"gumbel"``, ``"gst"`` or ``"gumbel_rao"``.
        logits: theta, floating point ``[..., K]`` with K >= 2 categories on the last axis; no NaN.
        uniform: U, noise of the logits' shape, dtype and device, strictly inside (0, 1)
            (e.g. ``noise.uniform``, or ``torch.rand``).
        tau: temperature, a finite number > 0, used by the backward pass only.

    It runs under torch.func transforms (``vmap``, ``grad`` and their compositions), giving what the eager call
    gives; there the value checks (finite logits, noise in (0, 1), the tau bound), which read values that a
    transformed tensor does not expose, are skipped: the caller vouches for them.

    Returns:
        D, one-hot ``[..., K]`` in the logits' dtype; differentiable with respect to ``logits``. The backward's
        math runs in fp32 for 16-bit logits (in the logits' dtype otherwise); the gradient comes back in the
        logits' dtype.

    Raises:
        ValueError: an unknown ``name`` (the error lists the valid ones), tau <= 0, non-finite logits, a tau
            so small that the estimator's (logits + noise) / tau or 1 / tau overflows the logits' dtype, noise
            outside (0, 1) or of another shape or device, meta tensors.
        TypeError: non-floating logits, noise of another dtype, sparse (non-strided) logits or noise.

    Example::

        >>> logits = torch.randn(4, 3, requires_grad=True)
        >>> d = estimate("reinmax", logits, torch.rand(4, 3), tau=0.5)
        >>> d.sum(-1)
        tensor([1., 1., 1., 1.], grad_fn=<SumBackward1>)
        >>> (d * torch.randn(4, 3)).sum().backward()  # logits.grad holds ReinMax's estimate
    """
    _checks.check_choice("estimator", name, ESTIMATORS)
    tau = _checks.check_tau(tau)
    _checks.check_logits_and_noise(logits, uniform, tau, ESTIMATOR_FUNCTIONS[name].needs_uniform)
    index = sample_index(logits.detach(), uniform)
    return ESTIMATOR_FUNCTIONS[name].apply(logits, index, uniform, tau)
