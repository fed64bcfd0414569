"""One training step of the preset's model, and how the suite times and measures it.

Timing (docs/BENCHMARKING.md): on CUDA the forward pass (logits and loss)
and the backward pass (every parameter's gradient) are each captured once in
a CUDA graph, and a timed call replays the graph and synchronises, so the
figure is device time, free of Python launch overhead (``GraphTimer``). On
CPU a timed call runs the pass eagerly; the backward replays one retained
autograd graph (``EagerTimer``).

Memory: every combination's peak is measured in one process (asv's
setup_cache, ``peak_memories``) and each track_ benchmark reports its own;
the peak of one step is exact however many steps ran before it (the
allocator's peak statistics are reset per step), and one process spares
~120 CUDA start-ups.
"""

from __future__ import annotations

import functools

import torch

import estimators

from . import memory, skips
from .grid import DENSE, SEED
from .machine import DEVICE, synchronize
from .precision import forward_precision, matmul_precision
from .workload import dense_model, model, tokens


class TrainingStep:
    """Forward (logits and next-token loss) and backward (gradients of all parameters) of one batch.

    ``implementation`` is one of the package's, ``grid.FLOOR``, or
    ``grid.DENSE`` (the plain model of benchmarks/dense.py; ``estimator`` is
    then unused); ``precision`` one of ``grid.PRECISIONS``.

    Nothing is built until it is used: a memory benchmark, which reports a
    figure from setup_cache, never starts CUDA in its process. The timer is
    built in asv's untimed warm-up call, and only for the pass it times.
    """

    def __init__(self, estimator: str, implementation: str, batch: int, precision: str = "fp32", width=None):
        self.batch = batch
        self.precision = precision
        self.width = width  # None: the preset's d_model; else the width benchmark's model (workload.preset_config)
        self.dense = implementation == DENSE
        self.kwargs = {} if self.dense else dict(estimator=estimator, implementation=implementation, seed=SEED)

    @functools.cached_property
    def inputs(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The model's parameters and this batch's tokens, on the device."""
        return list(self._model().parameters()), tokens(self.batch)

    def _model(self):
        return dense_model(self.width) if self.dense else model(self.width)

    def loss(self, parameters: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The batch's next-token loss; ``parameters`` ({name: tensor}) replace the model's own for this call
        (``torch.func.functional_call``), None runs the model as it is."""
        batch_tokens = self.inputs[1]
        with forward_precision(self.precision, DEVICE):
            if parameters is None:
                logits = self._model()(batch_tokens, **self.kwargs)
            else:
                logits = torch.func.functional_call(self._model(), parameters, (batch_tokens,), self.kwargs)
            return estimators.next_token_loss(logits, batch_tokens)

    def gradients(self, loss: torch.Tensor, inputs=None):
        """d loss / d ``inputs`` (default: the model's parameters), keeping ``loss``'s graph for another call."""
        with matmul_precision(self.precision):
            return torch.autograd.grad(loss, self.inputs[0] if inputs is None else inputs, retain_graph=True)

    def eager(self) -> None:
        """One step as a training loop runs it: forward and backward launched from Python, then synchronise."""
        self.gradients(self.loss())
        synchronize()

    @functools.cached_property
    def timer(self):
        return GraphTimer(self) if DEVICE == "cuda" else EagerTimer(self)

    def peak_memory(self) -> int:
        """Bytes allocated at the peak of a fresh step, above what was allocated before it.

        The model and the tokens are put on the device first, so they stay out of the figure.
        """
        self.inputs  # noqa: B018
        return memory.peak_bytes(lambda: self.gradients(self.loss()), DEVICE)


class EagerTimer:
    """CPU: the forward runs eagerly; the backward replays the retained autograd graph of one forward."""

    def __init__(self, step: TrainingStep):
        self.step = step

    def forward(self):
        self.step.loss()

    @functools.cached_property
    def loss(self):
        return self.step.loss()

    def backward(self):
        self.step.gradients(self.loss)


def parameter_aliases(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """{name: a new leaf parameter sharing that parameter's storage} for every parameter of ``module``.

    What is differentiated with respect to an alias is the same function of the same numbers, but its
    autograd leaf (and the AccumulateGrad node built for it) is the alias's alone: graphs others keep
    alive through the module's own parameters never enter a graph built on the aliases.
    """
    return {
        name: torch.nn.Parameter(parameter.detach(), requires_grad=parameter.requires_grad)
        for name, parameter in module.named_parameters()
    }


class GraphTimer:
    """CUDA: the forward, and the backward of the captured forward, each captured once in a CUDA graph.

    A graph is captured on first use (a forward benchmark never captures a
    backward); a call replays one and synchronises.

    Capture must not depend on what else the process holds. The forward runs
    the model on the timer's own aliases of its parameters
    (``parameter_aliases``, through ``torch.func.functional_call``) and the
    backward differentiates with respect to them: an autograd graph kept alive
    elsewhere (an eager loss built on the default stream, say) holds
    AccumulateGrad nodes of the model's parameters on that stream, and a
    backward that reached one would make the capture depend on the default
    stream (``cudaErrorStreamCaptureImplicit``). The aliases share the
    parameters' storage, so the replays compute the eager step's loss and
    gradients on the same numbers, and see in-place updates of the weights.
    Warm-up and capture run on one side stream of the timer's (torch's recipe).
    """

    def __init__(self, step: TrainingStep):
        self.step = step

    @functools.cached_property
    def parameters(self) -> dict[str, torch.nn.Parameter]:
        """The timer's leaf aliases of the model's parameters, in ``step.inputs[0]``'s order."""
        return parameter_aliases(self.step._model())

    def loss_of_aliases(self) -> torch.Tensor:
        return self.step.loss(self.parameters)

    def gradients_of_aliases(self, loss: torch.Tensor):
        return self.step.gradients(loss, list(self.parameters.values()))

    @functools.cached_property
    def stream(self) -> torch.cuda.Stream:
        return torch.cuda.Stream()

    def _warm_up(self, run):
        """One eager run on the capture stream before capture: first use (module loading, cuBLAS, the allocator)
        is not captured."""
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            run()
        torch.cuda.current_stream().wait_stream(self.stream)

    @functools.cached_property
    def forward_graph(self) -> torch.cuda.CUDAGraph:
        self._warm_up(self.loss_of_aliases)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            self.loss = self.loss_of_aliases()
        graph.replay()
        synchronize()
        return graph

    @functools.cached_property
    def backward_graph(self) -> torch.cuda.CUDAGraph:
        self._warm_up(lambda: self.gradients_of_aliases(self.loss_of_aliases()))
        forward_graph = self.forward_graph  # its loss is what the backward differentiates
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=forward_graph.pool(), stream=self.stream):
            self.gradients = self.gradients_of_aliases(self.loss)
        graph.replay()
        synchronize()
        return graph

    def forward(self):
        self.forward_graph.replay()
        synchronize()

    def backward(self):
        self.backward_graph.replay()
        synchronize()

    def forward_backward(self):
        """The forward's graph, then the backward's: one training step's device time."""
        self.forward_graph.replay()
        self.backward_graph.replay()
        synchronize()


@functools.cache
def training_step(estimator: str, implementation: str, batch: int, precision: str = "fp32", width=None) -> TrainingStep:
    """One parameter combination's step, built once per process (asv re-runs setup before every call)."""
    return TrainingStep(estimator, implementation, batch, precision, width)


def step_arguments(cell: skips.Cell) -> tuple:
    """``TrainingStep``'s (and ``training_step``'s) arguments for the step of ``cell``."""
    return cell.estimator, cell.implementation, cell.batch, cell.precision, cell.width


def peak_memories(cells) -> dict:
    """{cell: peak bytes of one step of the cell (``skips.Cell``), or the reason it has none}.

    A cell that ``skips.skip_reason`` skips on this machine at this commit gets its reason; one that runs
    out of CUDA memory gets "out of memory".
    """
    peaks, warmed_up = {}, False
    for cell in cells:
        try:
            skips.skip(cell)
            step = TrainingStep(*step_arguments(cell))
            if not warmed_up:  # first-use allocations (cuBLAS workspaces, ...) stay out of every figure
                step.peak_memory()
                warmed_up = True
            peaks[cell] = step.peak_memory()
            del step
        except NotImplementedError as skipped:
            peaks[cell] = str(skipped)
        except torch.OutOfMemoryError:
            peaks[cell] = "out of memory"
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return peaks
