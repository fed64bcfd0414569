"""A model whose codebook or parameters changed after it was built computes what a model built that way computes.

Every implementation (and the floor) reads the codebook buffer and the parameters when it runs: after
``load_state_dict`` across codebooks, ``.to(dtype)``, a move to another device, an in-place edit of the
codebook buffer and ``torch.nn.utils.parametrize`` of the logits or the weight, its logits and every
gradient equal those of a reference model built directly with the target codebook (and parameters).
The fused implementation's Triton kernels read the codebook from device memory: these tests run them on
CUDA (``cuda`` marks) and, on the CPU, under Triton's interpreter (``test_under_the_interpreter``, fused
only: slow).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

import estimators
from benchmarks.workload import random_tokens
from estimators import _backend
from estimators.config import ModelConfig
from estimators.implementations import fused
from estimators.model import next_token_loss

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# One block, 16 x 16 projections (whole bytes of mask bits: fused stacks q, k, v where the kernels run).
SHAPES = dict(d_model=16, n_head=2, n_layer=1, d_ff=12, vocab_size=23, seq_len=6)
DEFAULT = ModelConfig(**SHAPES)  # codebook (0, 1)
TARGET = ModelConfig(**SHAPES, codebook=(-1.0, 1.0))
ALL = (*estimators.IMPLEMENTATIONS, estimators.FLOOR)
# Under the interpreter only fused runs (the kernels' paths); compiled only on its own cases (each compiles).
IMPLEMENTATIONS = ("fused",) if INTERPRETED else ALL
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_kernels = pytest.mark.skipif(
    _backend.triton_kernels(KERNEL_DEVICE) is None, reason="Triton kernels need CUDA or TRITON_INTERPRET=1"
)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]


@pytest.fixture(autouse=True)
def _fresh_dynamo_cache():
    torch._dynamo.reset()


def _run(model, implementation, estimator="ste"):
    """Logits and {parameter name: gradient} of one step (batch 1 for ``current``, else 2)."""
    device = next(model.parameters()).device
    tokens = random_tokens(DEFAULT, 1 if implementation == "current" else 2, 0, device)
    logits = model(tokens, estimator=estimator, implementation=implementation, seed=77, tau=0.8)
    loss = next_token_loss(logits.float(), tokens, reduction="sum")
    names, parameters = zip(*model.named_parameters(), strict=True)
    return logits.detach(), dict(zip(names, torch.autograd.grad(loss, parameters), strict=True))


def _assert_same(got, want, tolerance=0.0, what=""):
    """Logits and gradients equal (``tolerance``: relative to each tensor's largest entry, for other paths)."""
    (logits, grads), (want_logits, want_grads) = got, want
    assert logits.dtype == want_logits.dtype, what
    _close(logits, want_logits, tolerance, f"{what} logits")
    assert set(grads) == set(want_grads), what
    largest = max(g.abs().max().item() for g in want_grads.values())
    for name, g in want_grads.items():
        assert grads[name].dtype == g.dtype, f"{what} {name}"
        _close(grads[name], g, tolerance, f"{what} {name}", floor=1e-3 * largest)


def _close(got, want, tolerance, what, floor=0.0):
    scale = max(want.abs().max().item(), floor)
    error = (got.double() - want.double()).abs().max().item()
    assert error <= tolerance * scale, f"{what}: max error {error:.3g} > {tolerance} x {scale:.3g}"


def _estimators(implementation):
    """ste (batch sums in fused's backward) everywhere; gumbel_rao (per-sample noise, its codebook gap in the
    weight-gradient kernel) for fused, where it takes another kernel path."""
    return ("ste", "gumbel_rao") if implementation == "fused" else ("ste",)


def _loaded(device, dtype=None):
    """(a default-codebook model with TARGET's state loaded, the reference built with TARGET) on ``device``."""
    reference = estimators.build_model(TARGET, device=device, seed=3)
    model = estimators.build_model(DEFAULT, device=device, seed=5)
    model.load_state_dict(reference.state_dict())
    if dtype is not None:
        model, reference = model.to(dtype), reference.to(dtype)
    return model, reference


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_load_state_dict_across_codebooks(implementation, device):
    model, reference = _loaded(device)
    assert all(torch.equal(layer.codebook.cpu(), torch.tensor([-1.0, 1.0])) for layer in model.stochastic_layers())
    for estimator in _estimators(implementation):
        _assert_same(_run(model, implementation, estimator), _run(reference, implementation, estimator), what=estimator)


def test_the_codebook_matters():
    """The control: the default codebook's logits differ from the target's (else the tests above prove nothing)."""
    model, reference = _loaded("cpu")
    before = estimators.build_model(DEFAULT, device="cpu", seed=3)
    assert not torch.allclose(_run(before, "bmm")[0], _run(reference, "bmm")[0], atol=1e-3)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_an_in_place_edit_of_the_codebook_buffer(implementation, device):
    model = estimators.build_model(DEFAULT, device=device, seed=3)
    reference = estimators.build_model(TARGET, device=device, seed=3)
    _run(model, implementation)  # a first step with the old codebook (kernels compiled, tables built)
    with torch.no_grad():
        for layer in model.stochastic_layers():
            layer.codebook.copy_(torch.tensor([-1.0, 1.0]))
    for estimator in _estimators(implementation):
        _assert_same(_run(model, implementation, estimator), _run(reference, implementation, estimator), what=estimator)


CASTS = {"to_bfloat16": lambda m: m.to(torch.bfloat16), "half": lambda m: m.half(), "double": lambda m: m.double()}
CAST_DTYPES = {"to_bfloat16": torch.bfloat16, "half": torch.float16, "double": torch.float64}


@pytest.mark.parametrize("implementation", [i for i in IMPLEMENTATIONS if i != "compiled"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cast", CASTS)
def test_a_cast_model_reads_the_cast_codebook(implementation, device, cast):
    """``.to(dtype)``, ``.half()``, ``.double()`` after loading: the cast codebook, as the reference's."""
    if INTERPRETED and cast == "to_bfloat16":
        pytest.skip("Triton's interpreter computes bf16 dots wrongly: checked on CUDA")
    model, reference = _loaded(device)
    model, dtype = CASTS[cast](model), CAST_DTYPES[cast]
    reference = reference.to(dtype)
    assert all(layer.codebook.dtype == dtype for layer in model.stochastic_layers())
    for estimator in _estimators(implementation):
        _assert_same(_run(model, implementation, estimator), _run(reference, implementation, estimator), what=cast)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("implementation", ALL)
def test_a_model_loaded_on_the_cpu_and_moved(implementation):
    """Loaded on the CPU, then moved to CUDA (the codebook with it): as the reference built on CUDA."""
    model, _ = _loaded("cpu")
    model = model.to("cuda")
    reference = estimators.build_model(TARGET, device="cuda", seed=3)
    for estimator in _estimators(implementation):
        _assert_same(_run(model, implementation, estimator), _run(reference, implementation, estimator), what=estimator)


class _Double(torch.nn.Module):
    """x -> 2 x: exact in floating point, and a new tensor at every read."""

    def forward(self, x):
        return 2 * x


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["logits", "weight"])
def test_parametrized_logits_and_weights(implementation, device, name):
    """Every stochastic layer's ``name`` parametrised as 2 x its original: as a model holding 2 x as the
    parameter, whose gradient is twice the original's."""
    reference = estimators.build_model(TARGET, device=device, seed=3)
    model = estimators.build_model(DEFAULT, device=device, seed=5)
    model.load_state_dict(reference.state_dict())
    with torch.no_grad():
        for layer in model.stochastic_layers():
            getattr(layer, name).div_(2)
    for layer in model.stochastic_layers():
        parametrize.register_parametrization(layer, name, _Double())
    original = f"parametrizations.{name}.original"
    for estimator in _estimators(implementation):
        want = _run(reference, implementation, estimator)
        for _ in range(2):  # the second step: tables kept from the first, fresh tensors at other addresses
            logits, grads = _run(model, implementation, estimator)
            grads = {key.replace(original, name): g / 2 if original in key else g for key, g in grads.items()}
            _assert_same((logits, grads), want, 1e-6, what=estimator)


@needs_kernels
@pytest.mark.parametrize("estimator", ["ste", "reinmax", "gst"])
def test_stacked_query_key_value_of_different_codebooks(monkeypatch, estimator):
    """q, k and v with three codebooks: fused's stacked node (one launch a pass, a codebook table of three
    rows) computes what fused layer by layer and bmm compute."""
    model = estimators.build_model(TARGET, device=KERNEL_DEVICE, seed=3)
    attention = model.blocks[0].attn
    with torch.no_grad():
        attention.k.codebook.copy_(torch.tensor([0.5, 2.0]))
        attention.v.codebook.copy_(torch.tensor([0.25, 1.0]))
    stacked = []
    stacking = fused.fused_linears
    monkeypatch.setattr(fused, "fused_linears", lambda *a: stacked.append(stacking(*a)) or stacked[-1])
    got = _run(model, "fused", estimator)
    assert len(stacked) == 1 and stacked[0] is not None, "the stacked node ran"
    monkeypatch.setattr(fused, "fused_linears", lambda *a: None)
    _assert_same(got, _run(model, "fused", estimator), 1e-5, what="layer by layer")
    _assert_same(got, _run(model, "bmm", estimator), 1e-4, what="bmm")


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED or torch.cuda.is_available(), reason="runs the interpreter from a plain CPU run")
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_under_the_interpreter():
    """This file's fused cases through the Triton kernels, under Triton's interpreter."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)), "-k", "not cuda"]
    result = subprocess.run(command, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


class _FreshLogits:
    """A layer whose ``logits`` is a new tensor at every read (as a parametrised one is)."""

    def __init__(self, logits, param_id):
        self._logits, self.param_id = logits, param_id

    @property
    def logits(self):
        return self._logits * 1


@needs_kernels
def test_layers_drawn_in_one_launch_from_logits_read_afresh():
    """sampler.draw_bits_by_layer holds each layer's logits until its launch: every layer draws from its own."""
    from estimators import sampler

    generator = torch.Generator().manual_seed(0)
    layers = [_FreshLogits(torch.randn(16, 16, 2, generator=generator).to(KERNEL_DEVICE), pid) for pid in range(4)]
    tables = {}
    for _ in range(2):
        drawn = sampler.draw_bits_by_layer(layers, 5, range(3), tables)
        for layer in layers:
            want = sampler.draw_bits(layer._logits, 5, layer.param_id, range(3))
            assert torch.equal(drawn[layer.param_id], want), f"layer {layer.param_id}"


def test_reset_parameters_raises_the_logit_of_the_largest_code_of_the_buffer():
    """reset_parameters reads each layer's codebook buffer (as loaded), not the config's."""
    model = estimators.build_model(DEFAULT, seed=3)
    flipped = estimators.build_model(ModelConfig(**SHAPES, codebook=(1.0, 0.0)), seed=3)
    model.load_state_dict(flipped.state_dict())
    model.reset_parameters(torch.Generator().manual_seed(0))
    flipped.reset_parameters(torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), flipped.parameters(), strict=True))
    logits = model.blocks[0].attn.q.logits
    assert (logits[..., 0] - logits[..., 1]).mean() > 1.0  # category 0 holds the largest code, 1.0
