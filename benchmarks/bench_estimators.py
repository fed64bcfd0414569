"""The estimators alone: ``estimate`` on a large [B, N, K] tensor, forward and backward.

The forward is ``estimators.estimate`` itself, validation included (it
synchronises, so it runs eagerly). The backward, the estimator's own
formula, is timed like the training step's: a CUDA-graph replay on CUDA
(eager timing spread by 4-9% there, too much to see a 10% change), an
eager replay of a retained autograd graph on CPU.
"""

import functools

import torch

import estimators

from .common import DEVICE, ESTIMATORS, TimingAttributes, synchronize

# One seed-preset layer's logits per sample at batch 16 on CUDA; a quarter of that on CPU (~30 ms forward).
SHAPE = (16, 512 * 512, 2) if DEVICE == "cuda" else (16, 256 * 256, 2)


class _Inputs:
    """Logits (requiring grad), noise, and the backward of a linear loss of the sample."""

    def __init__(self, estimator: str):
        generator = torch.Generator().manual_seed(0)
        self.logits = torch.randn(SHAPE, generator=generator).to(DEVICE).requires_grad_()
        self.uniform = torch.rand(SHAPE, generator=generator).clamp(1e-6, 1 - 1e-6).to(DEVICE)
        weights = torch.randn(SHAPE, generator=generator).to(DEVICE)
        self.loss = (estimators.estimate(estimator, self.logits, self.uniform) * weights).sum()
        self.backward = self._captured_backward() if DEVICE == "cuda" else self._gradient

    def _gradient(self):
        return torch.autograd.grad(self.loss, self.logits, retain_graph=True)

    def _captured_backward(self):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._gradient()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.gradient = self._gradient()
        return graph.replay


@functools.cache
def _inputs(estimator: str) -> _Inputs:
    return _Inputs(estimator)


class Estimate(TimingAttributes):
    """``estimators.estimate(name, logits, uniform)`` and the gradient of a linear loss of its output."""

    version = "2"  # 2: the backward is a CUDA-graph replay on CUDA
    params = [list(ESTIMATORS)]
    param_names = ["estimator"]

    def setup(self, estimator):
        if estimator not in estimators.ESTIMATORS:
            raise NotImplementedError(f"estimator {estimator!r} does not exist at this commit")
        self.inputs = _inputs(estimator)

    def time_forward(self, estimator):
        estimators.estimate(estimator, self.inputs.logits, self.inputs.uniform)
        synchronize()

    def time_backward(self, estimator):
        self.inputs.backward()
        synchronize()
