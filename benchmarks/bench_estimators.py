"""The estimators alone: ``estimate`` on a large [B, N, K] tensor, forward and backward."""

import functools

import torch

import estimators

from . import grid, skips
from .machine import DEVICE, TimingAttributes, configure_process, synchronize

configure_process()

# One seed-preset layer's logits per sample at batch 16 on CUDA; a quarter of that on CPU (~30 ms forward).
SHAPE = (16, 512 * 512, 2) if DEVICE == "cuda" else (16, 256 * 256, 2)


@functools.cache
def _inputs(estimator: str):
    """Logits (requiring grad), noise, and the graph of a linear loss of the sample: built once per process."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(SHAPE, generator=generator).to(DEVICE).requires_grad_()
    uniform = torch.rand(SHAPE, generator=generator).clamp(1e-6, 1 - 1e-6).to(DEVICE)
    weights = torch.randn(SHAPE, generator=generator).to(DEVICE)
    loss = (estimators.estimate(estimator, logits, uniform) * weights).sum()
    return logits, uniform, loss


class Estimate(TimingAttributes):
    """``estimators.estimate(name, logits, uniform)`` and the gradient of a linear loss of its output."""

    version = "1"
    params = [list(grid.ESTIMATORS)]
    param_names = ["estimator"]

    def setup(self, estimator):
        skips.skip(skips.Cell("estimator", estimator))
        self.logits, self.uniform, self.loss = _inputs(estimator)

    def time_forward(self, estimator):
        estimators.estimate(estimator, self.logits, self.uniform)
        synchronize()

    def time_backward(self, estimator):
        torch.autograd.grad(self.loss, self.logits, retain_graph=True)
        synchronize()
