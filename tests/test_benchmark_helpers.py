"""The suite's building blocks (benchmarks/): the grid, the training step, its timers and memory."""

import contextlib
import functools
import subprocess
import sys
import warnings

import pytest
import torch

import estimators
from benchmarks import grid, skips
from benchmarks import step as step_module
from benchmarks.machine import DEVICE
from benchmarks.skips import Cell, Machine, runs, skip_reason
from benchmarks.workload import random_tokens


@pytest.fixture
def step():
    return step_module.TrainingStep("ste", "bmm", 2)


def test_the_grid_covers_every_estimator_and_implementation_of_the_package():
    """A new estimator or implementation gets benchmarks: the grid (only appended to) names it."""
    assert set(estimators.ESTIMATORS) <= set(grid.ESTIMATORS)
    assert set(estimators.IMPLEMENTATIONS) <= set(grid.IMPLEMENTATIONS)
    assert grid.FLOOR == estimators.FLOOR


def test_what_runs_where():
    assert not runs("current", 2, "*") and runs("current", 1, "cuda")
    assert runs("compiled", 16, "cuda") and not runs("compiled", 16, "cpu")
    assert "batch" in skip_reason(Cell("step", "ste", "compiled", 2), Machine("cpu"))
    assert runs("bmm", 64, "cuda") and not runs("bmm", 64, "cpu")
    assert runs("bmm", 64, "*")


def test_importing_the_tools_changes_no_torch_setting():
    """The tools import the suite's grid and machine; only the benchmark modules set torch's thread count."""
    code = (
        "import torch; torch.set_num_threads(2); "
        "import tools.reporting.report, tools.run.gate, tools.probes.floor, benchmarks.step, benchmarks.workload; "
        "print(torch.get_num_threads())"
    )
    threads = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert threads.strip() == "2"


def test_a_step_builds_nothing_until_it_runs(step):
    """A memory benchmark's process reports a cached figure: making its step must not touch the device."""
    assert not {"inputs", "timer"} & set(vars(step))


def _counting(step, method):
    """Replace ``step``'s bound ``method`` by one that counts its calls; returns the count, a list of one int."""
    calls, original = [0], getattr(step, method)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(step, method, counted)
    return calls


def test_the_eager_timer_runs_only_the_pass_it_is_asked_for(step):
    """CPU: a timed forward runs no backward; a timed backward differentiates one retained forward, built on the
    first (asv's untimed warm-up) call, and runs no forward after it."""
    timer = step_module.EagerTimer(step)
    losses, gradients = _counting(step, "loss"), _counting(step, "gradients")
    timer.forward()
    assert (losses[0], gradients[0]) == (1, 0)
    timer.backward()
    assert (losses[0], gradients[0]) == (2, 1)
    timer.backward()
    assert (losses[0], gradients[0]) == (2, 2)


class _Graph:
    """A stand-in for a captured torch.cuda.CUDAGraph that counts its replays."""

    def __init__(self):
        self.replays = 0

    def replay(self):
        self.replays += 1


class _UncapturedGraphTimer(step_module.GraphTimer):
    """GraphTimer's dispatch over stand-in graphs, so that it runs without CUDA."""

    @functools.cached_property
    def forward_graph(self):
        return _Graph()

    @functools.cached_property
    def backward_graph(self):
        return _Graph()


def test_the_graph_timer_replays_only_the_pass_it_is_asked_for(step):
    timer = _UncapturedGraphTimer(step)
    timer.forward()
    assert "backward_graph" not in vars(timer) and timer.forward_graph.replays == 1
    timer.backward()
    assert (timer.forward_graph.replays, timer.backward_graph.replays) == (1, 1)
    timer.forward_backward()
    assert (timer.forward_graph.replays, timer.backward_graph.replays) == (2, 2)


@pytest.mark.cuda
@pytest.mark.skipif(DEVICE != "cuda", reason="the suite runs on CUDA only where a GPU exists")
def test_timer_times_only_the_pass_it_is_asked_for(step):
    """A forward benchmark never captures a backward graph."""
    assert isinstance(step.timer, step_module.GraphTimer)
    step.timer.forward()
    assert "forward_graph" in vars(step.timer) and "backward_graph" not in vars(step.timer)
    step.timer.backward()
    assert "backward_graph" in vars(step.timer)


def test_a_peak_excludes_the_inputs():
    """A fresh step's peak leaves out the tokens and the model it puts on the device first."""
    step_module.TrainingStep("ste", "bmm", 2).peak_memory()  # first use (cuBLAS workspaces, ...) out of the way
    fresh = step_module.TrainingStep("ste", "bmm", 2).peak_memory()
    prebuilt = step_module.TrainingStep("ste", "bmm", 2)
    prebuilt.inputs  # noqa: B018
    assert fresh > 0
    assert fresh == prebuilt.peak_memory()


@pytest.mark.cuda
@pytest.mark.skipif(DEVICE != "cuda", reason="the suite runs on CUDA only where a GPU exists")
def test_graph_replays_compute_the_eager_step(step):
    torch.backends.cuda.matmul.allow_tf32 = False
    eager_loss = step.loss()
    eager_grads = step.gradients(eager_loss)
    step.timer.backward()  # captures the forward, then the backward of the captured loss, and replays both
    torch.testing.assert_close(step.timer.loss, eager_loss)
    for replayed, eager in zip(step.timer.gradients, eager_grads, strict=True):
        torch.testing.assert_close(replayed, eager)


def _accumulated_leaves(loss: torch.Tensor) -> set[int]:
    """ids of the leaves whose AccumulateGrad nodes ``loss``'s autograd graph reaches."""
    leaves, seen, pending = set(), set(), [loss.grad_fn]
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "AccumulateGrad":
            leaves.add(id(node.variable))
        pending.extend(next_node for next_node, _ in node.next_functions)
    return leaves


def test_parameter_aliases_share_storage_but_not_leaves():
    model = estimators.build_model(
        estimators.ModelConfig(d_model=16, n_head=2, n_layer=1, d_ff=24, vocab_size=20, seq_len=8)
    )
    aliases = step_module.parameter_aliases(model)
    assert list(aliases) == [name for name, _ in model.named_parameters()]
    for alias, parameter in zip(aliases.values(), model.parameters(), strict=True):
        assert alias is not parameter and alias.is_leaf and alias.requires_grad
        assert alias.data_ptr() == parameter.data_ptr() and alias.shape == parameter.shape
    with torch.no_grad():
        model.head.weight.add_(1.0)  # an in-place update of a weight is the alias's too
    torch.testing.assert_close(aliases["head.weight"], model.head.weight, rtol=0, atol=0)


def test_the_graph_timer_differentiates_its_own_leaves(step):
    """The capture's loss reaches only the timer's aliases, never the AccumulateGrad nodes of an eager loss kept
    alive on the model's parameters, and its gradients are the eager step's (run here on the CPU, uncaptured)."""
    held = step.loss()  # another graph on the model's own parameters, kept alive while the timer's is built
    timer = step_module.GraphTimer(step)  # builds nothing on the device until a graph is used
    loss = timer.loss_of_aliases()
    parameters = {id(p) for p in step.inputs[0]}
    assert _accumulated_leaves(held) == parameters
    assert _accumulated_leaves(loss) == {id(p) for p in timer.parameters.values()}
    assert not _accumulated_leaves(loss) & parameters
    torch.testing.assert_close(loss, held, rtol=0, atol=0)
    for alias_gradient, eager_gradient in zip(timer.gradients_of_aliases(loss), step.gradients(held), strict=True):
        torch.testing.assert_close(alias_gradient, eager_gradient)


@pytest.mark.cuda
@pytest.mark.skipif(DEVICE != "cuda", reason="the suite runs on CUDA only where a GPU exists")
@pytest.mark.parametrize("implementation", ["bmm", "fused"])
def test_a_capture_is_independent_of_graphs_the_process_holds(implementation):
    """An eager loss of the same model, built on the default stream and kept alive, holds AccumulateGrad nodes of
    the parameters on the legacy stream; a backward capture that reached one would fail
    (cudaErrorStreamCaptureImplicit). The timer captures both passes anyway, and its replays are the eager step."""
    step = step_module.TrainingStep("ste", implementation, 2)
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    held = step.loss()
    eager_gradients = step.gradients(held)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step.timer.forward_backward()
    assert not [w for w in caught if "AccumulateGrad node's stream" in str(w.message)]
    step.timer.forward_backward()  # a second replay of both graphs: the same numbers
    torch.testing.assert_close(step.timer.loss, held)
    for replayed, eager in zip(step.timer.gradients, eager_gradients, strict=True):
        torch.testing.assert_close(replayed, eager)
    for again, eager in zip(step.gradients(held), eager_gradients, strict=True):  # the held graph is intact
        torch.testing.assert_close(again, eager)


@contextlib.contextmanager
def _forward_dtypes(step):
    """The dtypes of the logits ``step``'s model returns inside the block (a list, filled as forwards run)."""
    dtypes = []
    handle = step._model().register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    try:
        yield dtypes
    finally:
        handle.remove()


def _gradients_of(step):
    """Record what ``step.gradients`` returns from now on (a list, one entry per call)."""
    returned, original = [], step.gradients

    def recorded(*args, **kwargs):
        returned.append(original(*args, **kwargs))
        return returned[-1]

    step.gradients = recorded
    return returned


def _assert_a_gradient_for_every_parameter(step, gradients):
    parameters = list(step._model().parameters())
    assert len(gradients) == len(parameters)
    for gradient, parameter in zip(gradients, parameters, strict=True):
        assert gradient.shape == parameter.shape and gradient.dtype == parameter.dtype
        assert gradient.isfinite().all()
    assert any(gradient.count_nonzero() for gradient in gradients)


def test_the_eager_step_runs_a_forward_and_a_backward():
    """bench_eager's step, on the suite's device: one forward in the step's precision, then every gradient."""
    _assert_one_eager_step(step_module.TrainingStep("ste", "bmm", 2, "fp32"), torch.float32)


def _assert_one_eager_step(eager, dtype):
    """``eager.eager()`` runs one forward whose logits are ``dtype``, then a gradient for every parameter."""
    returned = _gradients_of(eager)
    with _forward_dtypes(eager) as dtypes:
        eager.eager()
    assert dtypes == [dtype] and len(returned) == 1
    _assert_a_gradient_for_every_parameter(eager, returned[0])


@pytest.mark.cuda
@pytest.mark.skipif(DEVICE != "cuda", reason="the suite runs on CUDA only where a GPU exists")
def test_the_width_and_eager_steps_run():
    """bench_width's step (a wider model, both graphs replayed) and bench_eager's step (bf16)."""
    wide = step_module.TrainingStep("ste", "fused", 2, "fp32", width=1024)
    assert wide._model().config.d_model == 1024 and wide._model().config.d_ff == 4096
    wide.timer.forward_backward()
    assert wide.timer.loss.isfinite() and len(wide.timer.gradients) == len(wide.inputs[0])
    _assert_one_eager_step(step_module.TrainingStep("ste", "fused", 2, "bf16"), torch.bfloat16)


def test_width_models_keep_the_preset_but_its_width():
    from benchmarks.workload import preset_config

    base, wide = preset_config(), preset_config(1024)
    assert (wide.d_model, wide.d_ff) == (1024, 4096)
    assert (wide.n_layer, wide.n_head, wide.seq_len, wide.vocab_size) == (
        base.n_layer,
        base.n_head,
        base.seq_len,
        base.vocab_size,
    )


def test_peak_memories_say_why_a_combination_has_no_figure():
    compiled, missing = Cell("step", "ste", "compiled", 2), Cell("step", "no-such-estimator", "bmm", 2)
    peaks = step_module.peak_memories([compiled, missing])
    assert "batch" in peaks[compiled]
    assert "does not exist" in peaks[missing]


CPU, CUDA, TWO_GPUS = Machine("cpu"), Machine("cuda"), Machine("cuda", gpus=2)


@pytest.mark.parametrize(
    ("cell", "machine", "reason"),
    [
        (Cell("step", "ste", "fused", 16), CPU, None),
        (Cell("step", "ste", "fused", 32), CPU, "batches 32 and 64 are not benchmarked on CPU"),
        (Cell("step", "ste", "fused", 32), CUDA, None),
        (Cell("step", "gst", "loop", 16), CUDA, "gst is benchmarked with bmm, fused, shared only"),
        (Cell("step", "ste", "loop", 8), CPU, "loop runs at batches 1 on cpu in the default tier"),
        (Cell("step", "ste", "loop", 8), Machine("cpu", "full"), None),
        (Cell("step", "ste", "compiled", 16), CPU, "compiled is benchmarked on CUDA only"),
        (Cell("reduced", "gumbel", "bmm", 16, "bf16"), CUDA, "bmm is benchmarked in reduced precision for ste only"),
        (Cell("eager", "ste", grid.DENSE, 16, "bf16"), CUDA, None),
        (Cell("eager", "ste", "vmap", 16, "bf16"), CUDA, "the eager step of vmap is timed in fp32 in the default"),
        (Cell("eager", "ste", "fused", 16), CPU, "eager steps are timed on CUDA only"),
        (Cell("width", "ste", "bmm", 256, width=1024), CUDA, "batch 256 of the width benchmark runs fused"),
        (Cell("width", "ste", "fused", 256, width=1024), CUDA, None),
        (Cell("ratio", timing="eager", precision="fp32", batch=1), CPU, None),
        (Cell("ratio", timing="eager", precision="fp32", batch=1), CUDA, "ratios of eager steps in fp32 run on cuda"),
        (Cell("data_parallel", "ste", "fused", 64), CUDA, "data-parallel steps are benchmarked on hosts with 2"),
        (Cell("data_parallel", "ste", "fused", 64), TWO_GPUS, None),
        (Cell("estimator", "no-such-estimator"), CPU, "estimator 'no-such-estimator' does not exist at this commit"),
        (Cell("step", "ste", "no-such-implementation", 1), CUDA, "implementation 'no-such-implementation' does not"),
        # what the machine does not run comes first, the tier's rules last
        (Cell("step", "no-such-estimator", "loop", 64), CPU, "batches 32 and 64 are not benchmarked on CPU"),
        (Cell("step", "no-such-estimator", "loop", 8), CPU, "estimator 'no-such-estimator' does not exist"),
    ],
)
def test_the_skip_table_on_named_cells(cell, machine, reason):
    """One function, one argument order: what every benchmark class asks of a cell on a CPU and a faked CUDA host."""
    found = skip_reason(cell, machine)
    assert found is None if reason is None else found.startswith(reason), found


def test_skip_params_hold_the_machines_rules_only():
    """asv's skip_params skip what the machine does not run; what a commit lacks is skipped from setup."""
    assert skip_reason(Cell("step", "no-such-estimator", "fused", 1), CPU, commit=False) is None
    combinations = skips.skip_params([["fused", "compiled"], [1, 16]], lambda i, b: Cell("step", "ste", i, b))
    assert combinations == ([("compiled", 1), ("compiled", 16)] if DEVICE == "cpu" else [("compiled", 1)])
    with pytest.raises(NotImplementedError, match="does not exist at this commit"):
        skips.skip(Cell("estimator", "no-such-estimator"))
    with pytest.raises(ValueError, match="valid choices: step, reduced"):
        Cell("training")


def test_dense_is_the_stochastic_architecture_without_masks():
    """With every mask "keep", the stochastic model computes what the Dense model does with the same weights."""
    from benchmarks.dense import build_dense

    config = estimators.ModelConfig(d_model=32, n_head=2, n_layer=2, d_ff=48, vocab_size=40, seq_len=12)
    stochastic = estimators.build_model(config, seed=1)
    with torch.no_grad():
        for layer in stochastic.stochastic_layers():
            layer.logits[..., 0], layer.logits[..., 1] = -40.0, 40.0  # code 1 (keep) always wins
    dense = build_dense(config)
    weights = {k: v for k, v in stochastic.state_dict().items() if not k.endswith(("logits", "codebook"))}
    dense.load_state_dict(weights)  # strict: the same parameters under the same names
    tokens = random_tokens(config, 3, seed=0)
    want = stochastic(tokens, estimator="ste", implementation="bmm", seed=0)
    torch.testing.assert_close(dense(tokens), want)


def test_precisions_switch_autocast_and_tf32_and_restore_them():
    from benchmarks.precision import forward_precision, matmul_precision

    before = torch.backends.cuda.matmul.allow_tf32
    with matmul_precision("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32
    with forward_precision("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert not torch.backends.cuda.matmul.allow_tf32
    with forward_precision("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_a_reduced_precision_step_runs_in_its_precision():
    """The bf16 step's forward runs under bf16 autocast (its logits are bf16, its loss not the fp32 step's), its
    gradients are the fp32 parameters'; the fp32 (dense) step's forward is fp32."""
    bf16, fp32 = (step_module.TrainingStep("ste", "fused", 2, precision=p) for p in ("bf16", "fp32"))
    with _forward_dtypes(bf16) as dtypes:
        loss = bf16.loss()
    assert dtypes == [torch.bfloat16]
    assert loss.isfinite() and loss.item() != fp32.loss().item()
    torch.testing.assert_close(loss, fp32.loss(), rtol=0.05, atol=0)
    _assert_a_gradient_for_every_parameter(bf16, bf16.gradients(loss))
    dense = step_module.TrainingStep(None, grid.DENSE, 2, precision="fp32")
    with _forward_dtypes(dense) as dtypes:
        loss = dense.loss()
    assert dtypes == [torch.float32]
    _assert_a_gradient_for_every_parameter(dense, dense.gradients(loss))


def test_the_reduced_precision_and_dense_grids():
    def reason(kind, estimator, implementation, batch, precision, device):
        return skip_reason(Cell(kind, estimator, implementation, batch, precision), Machine(device), commit=False)

    assert reason("reduced", "ste", "bmm", 16, "bf16", "cuda") is None
    assert reason("reduced", "gumbel", "bmm", 16, "bf16", "*") == "bmm is benchmarked in reduced precision for ste only"
    assert reason("reduced", "gumbel", "fused", 64, "tf32", "cuda") is None
    assert reason("reduced", "ste", "fused", 16, "bf16", "cpu") == "reduced precisions are benchmarked on CUDA only"
    assert reason("dense", None, grid.DENSE, 16, "bf16", "cuda") is None
    assert reason("dense", None, grid.DENSE, 16, "bf16", "cpu")
    assert reason("dense", None, grid.DENSE, 1, "fp32", "cpu") is None
    assert reason("dense", None, grid.DENSE, 8, "fp32", "cpu") == "Dense runs fp32 on cpu at batches (1, 16) only"


def test_a_quality_figure_missing_at_a_commit_is_n_a_from_setup():
    """asv skips (n/a) only on NotImplementedError from setup; from a track_ method it is a failure."""
    from benchmarks.bench_quality import GradientFidelity, PolynomialProgramming

    figures = {("gst", 1.0): "estimator 'gst' does not exist at this commit", ("ste", 1.0): 0.25}
    for benchmark in (GradientFidelity(), PolynomialProgramming()):
        with pytest.raises(NotImplementedError, match="does not exist"):
            benchmark.setup(figures, "gst", 1.0)
        benchmark.setup(figures, "ste", 1.0)
    assert PolynomialProgramming().track_excess_loss(figures, "ste", 1.0) == 0.25
