"""What every benchmark shares: the device and preset, the parameter grid, and one training step.

Device and preset are chosen once per process: CUDA and the ``seed`` preset
where a GPU exists, else the CPU and ``small``. ``ESTIMATORS_BENCH_DEVICE``
(cpu, cuda) and ``ESTIMATORS_BENCH_PRESET`` force them; ``tools/asv.py``
then names the asv machine after the preset, so presets never share a series.

The parameter grid is the same on every machine (asv publishes one
benchmarks.json for all of them); a machine skips what it does not run by
raising NotImplementedError in setup, which asv shows as n/a.

Timing (see docs/BENCHMARKING.md): on CUDA the forward pass (logits and
loss) and the backward pass (every parameter's gradient) are each captured
once in a CUDA graph, and a timed call replays the graph and synchronises,
so the figure is device time, free of Python launch overhead. On CPU a timed
call runs the pass eagerly; the backward replays one retained autograd graph.

Memory: every combination's peak is measured in one process (asv's
setup_cache) and each track_ benchmark reports its own; the peak of one
step is exact however many steps ran before it (the allocator's peak
statistics are reset per step), and one process spares ~120 CUDA start-ups.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys

# Fork-safe device check: torch.cuda.is_available() would initialise the CUDA
# driver in asv's forkserver, and CUDA does not survive a fork.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # noqa: E402

import estimators  # noqa: E402

ESTIMATORS = ("ste", "reinmax", "gumbel")
IMPLEMENTATIONS = ("current", "loop", "einsum", "bmm", "vmap", "fused", "compiled")
FLOOR = "shared"
BATCHES = (1, 2, 8, 16, 32, 64)
CPU_BATCHES = (1, 2, 8, 16)  # 32 and 64 would cost minutes per commit on a 2-core CPU
CPU_THREADS = int(os.environ.get("ESTIMATORS_BENCH_THREADS", "1"))
COMPILED_BATCH = 16  # torch.compile costs 5-20 s per process: one batch size is the baseline
SEED = 1234
DEFAULT_PRESET = {"cuda": "seed", "cpu": "small"}


def _choose(variable: str, default: str, choices) -> str:
    value = os.environ.get(variable, default)
    if value not in choices:
        raise ValueError(f"{variable}={value!r}; valid choices: {', '.join(choices)}")
    return value


DEVICE = _choose("ESTIMATORS_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu", ("cpu", "cuda"))
PRESET = _choose("ESTIMATORS_BENCH_PRESET", DEFAULT_PRESET[DEVICE], tuple(estimators.PRESETS))
# Before any parallel work: asv forks every benchmark process from one server process, and
# OpenMP's thread pool does not survive a fork. GPU benchmarks do no CPU work worth threads.
torch.set_num_threads(CPU_THREADS if DEVICE == "cpu" else 1)


class TimingAttributes:
    """asv timing attributes: few samples on a noisy CPU, more on a GPU; one round, one call per sample."""

    rounds = 1
    number = 1
    warmup_time = 0.01  # one untimed call: the setup of a sample re-runs before every call anyway
    # (min samples, max samples, max seconds): CUDA-graph replays spread by ~0.1% (docs/BENCHMARKING.md)
    repeat = (5, 20, 0.5) if DEVICE == "cuda" else (3, 10, 2.0)
    timeout = 600


def require(estimator: str, implementation: str, batch: int) -> None:
    """Raise NotImplementedError (asv: n/a) for what this machine or this commit does not run."""
    if implementation == "compiled" and batch != COMPILED_BATCH:
        raise NotImplementedError(f"compiled is benchmarked at batch {COMPILED_BATCH} (each process compiles)")
    if estimator not in estimators.ESTIMATORS:
        raise NotImplementedError(f"estimator {estimator!r} does not exist at this commit")
    if implementation != FLOOR and implementation not in estimators.IMPLEMENTATIONS:
        raise NotImplementedError(f"implementation {implementation!r} does not exist at this commit")
    if implementation == FLOOR and getattr(estimators, "FLOOR", None) != FLOOR:
        raise NotImplementedError("the shared-mask floor does not exist at this commit")
    if DEVICE == "cpu" and batch not in CPU_BATCHES:
        raise NotImplementedError(f"batch {batch} is not benchmarked on CPU")
    if DEVICE == "cpu" and implementation == "compiled":
        raise NotImplementedError("compiled is benchmarked on CUDA only (inductor's CPU compile costs more per process)")


def _build_cpu_model():
    try:
        return estimators.build_model(PRESET, device="cpu", seed=0)
    except Exception as error:  # a commit without this preset or API: setup says n/a
        return error


def _prepare_triton():
    """Import Triton and compute its JIT cache key without touching CUDA.

    The key hashes Triton's sources and libtriton (0.4 s on the H100 host), and
    the first launch imports Gluon (0.1 s); done before the fork, neither is
    repeated in every benchmark process.
    """
    try:
        from estimators import triton_kernels  # noqa: F401
        try:
            from triton.runtime.cache import triton_key  # Triton >= 3.3
        except ImportError:
            from triton.compiler.compiler import triton_key
        triton_key()
        import triton.experimental.gluon.language  # noqa: F401
    except Exception:  # no Triton, or another layout: each process pays on first use
        pass


def _import_compiler():
    """Import dynamo and inductor without touching CUDA.

    On the H100 host this takes ~8 s (torch's modules there are compiled from
    source at every import); done before the fork, a `compiled` process takes
    2-3 s instead of 11.
    """
    try:
        import torch._dynamo  # noqa: F401
        import torch._inductor.compile_fx  # noqa: F401
    except Exception:  # another torch layout: each compiled process pays on first use
        pass


def _in_asv_forkserver() -> bool:
    """Whether this process is asv's forkserver, which imports the suite once and forks every benchmark from it.

    asv's discovery and setup_cache run in processes of their own, which fork
    nothing: they skip the work below that only pays for itself across forks.
    """
    return os.environ.get("ASV") == "true" and sys.argv[1:2] == ["run_server"]


_CPU_MODEL = None
if _in_asv_forkserver():
    _CPU_MODEL = _build_cpu_model()
    if DEVICE == "cuda":
        _prepare_triton()
        _import_compiler()


@functools.cache
def model():
    built = _build_cpu_model() if _CPU_MODEL is None else _CPU_MODEL
    if isinstance(built, Exception):
        raise NotImplementedError(f"preset {PRESET!r} cannot be built at this commit: {built!r}")
    return built.to(DEVICE)


def tokens(batch: int) -> torch.Tensor:
    config = estimators.PRESETS[PRESET]
    generator = torch.Generator().manual_seed(batch)
    return torch.randint(0, config.vocab_size, (batch, config.seq_len), generator=generator).to(DEVICE)


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class TrainingStep:
    """Forward (logits and next-token loss) and backward (gradients of all parameters) of one batch.

    Nothing is built until it is used: a memory benchmark, which reports a
    figure from setup_cache, never starts CUDA in its process. The timer is
    built in asv's untimed warm-up call, and only for the pass it times.
    """

    def __init__(self, estimator: str, implementation: str, batch: int):
        self.batch = batch
        self.kwargs = dict(estimator=estimator, implementation=implementation, seed=SEED)
        if DEVICE == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    @functools.cached_property
    def inputs(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The model's parameters and this batch's tokens, on the device."""
        return list(model().parameters()), tokens(self.batch)

    def loss(self) -> torch.Tensor:
        batch_tokens = self.inputs[1]
        return estimators.next_token_loss(model()(batch_tokens, **self.kwargs), batch_tokens)

    def gradients(self, loss: torch.Tensor):
        return torch.autograd.grad(loss, self.inputs[0], retain_graph=True)

    @functools.cached_property
    def timer(self):
        return GraphTimer(self) if DEVICE == "cuda" else EagerTimer(self)

    def peak_memory(self) -> int:
        """Bytes allocated at the peak of a fresh step, above what was allocated before it."""
        inputs_outside_the_peak = self.inputs  # noqa: F841 (built before the baseline is read)
        if DEVICE == "cuda":
            synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            grads = self.gradients(self.loss())
            synchronize()
            del grads
            return torch.cuda.max_memory_allocated() - before
        return cpu_peak_memory(lambda: self.gradients(self.loss()))


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


class GraphTimer:
    """CUDA: the forward, and the backward of the captured forward, each captured once in a CUDA graph.

    A graph is captured on first use (a forward benchmark never captures a
    backward); a call replays one and synchronises.
    """

    def __init__(self, step: TrainingStep):
        self.step = step

    @staticmethod
    def _warm_up(run):
        """One eager run off the capture stream: first use (module loading, cuBLAS, the allocator) is not captured."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run()
        torch.cuda.current_stream().wait_stream(side)

    @functools.cached_property
    def forward_graph(self) -> torch.cuda.CUDAGraph:
        self._warm_up(self.step.loss)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.loss = self.step.loss()
        graph.replay()
        synchronize()
        return graph

    @functools.cached_property
    def backward_graph(self) -> torch.cuda.CUDAGraph:
        self._warm_up(lambda: self.step.gradients(self.step.loss()))
        forward_graph = self.forward_graph  # its loss is what the backward differentiates
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=forward_graph.pool()):
            self.gradients = self.step.gradients(self.loss)
        graph.replay()
        synchronize()
        return graph

    def forward(self):
        self.forward_graph.replay()
        synchronize()

    def backward(self):
        self.backward_graph.replay()
        synchronize()


@functools.cache
def training_step(estimator: str, implementation: str, batch: int) -> TrainingStep:
    """One parameter combination's step, built once per process (asv re-runs setup before every call)."""
    return TrainingStep(estimator, implementation, batch)


def peak_memories(combinations) -> dict:
    """{(estimator, implementation, batch): peak bytes of one step, or the reason it has none}."""
    peaks, warmed_up = {}, False
    for estimator, implementation, batch in combinations:
        try:
            require(estimator, implementation, batch)
            step = TrainingStep(estimator, implementation, batch)
            if not warmed_up:  # first-use allocations (cuBLAS workspaces, ...) stay out of every figure
                step.peak_memory()
                warmed_up = True
            peaks[estimator, implementation, batch] = step.peak_memory()
            del step
        except NotImplementedError as skipped:
            peaks[estimator, implementation, batch] = str(skipped)
        except torch.OutOfMemoryError:
            peaks[estimator, implementation, batch] = "out of memory"
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return peaks


def skip_if_out_of_memory(method):
    """A benchmark method whose CUDA out-of-memory error shows as n/a (asv's SkipNotImplemented)."""
    from asv_runner.benchmarks.mark import SkipNotImplemented

    @functools.wraps(method)
    def guarded(self, *params):
        try:
            return method(self, *params)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise SkipNotImplemented("out of memory") from None

    return guarded


def cpu_peak_memory(run) -> int:
    """Peak live bytes of CPU tensors while ``run()`` executes, from the autograd profiler's memory events.

    Each operator reports the bytes it allocated minus those it freed (its
    self memory); summed in start order they trace the live tensor bytes at
    operator granularity. The peak is taken relative to the start of ``run``.
    The profiler without Kineto gives the same events without Kineto's ~1 s
    start-up in every benchmark process.
    """
    with torch.autograd.profiler.profile(use_kineto=False, profile_memory=True) as prof:
        result = run()
        del result
    events = sorted(prof.function_events, key=lambda event: event.time_range.start)
    live = itertools.accumulate(event.self_cpu_memory_usage for event in events)
    return max(0, max(live, default=0))
