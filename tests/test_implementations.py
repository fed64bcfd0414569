"""The implementations' registry and interface: the model reaches an implementation only through them.

An ``Implementation`` registered under a new name runs through the model as the built-in one it copies
does, bit for bit: the model names no implementation, it calls ``check_batch``, ``draw_ahead``,
``apply_stacked`` and ``apply`` of whatever ``lookup`` gives.
"""

import collections

import pytest
import torch

import estimators
from benchmarks.workload import random_tokens
from estimators import _backend, implementations
from estimators.implementations import Implementation
from estimators.model import next_token_loss

from conftest import CONFIGS

CONFIG = CONFIGS["tiny"]
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_kernels = pytest.mark.skipif(
    _backend.triton_kernels(KERNEL_DEVICE) is None, reason="Triton kernels need CUDA or TRITON_INTERPRET=1"
)


class Renamed(Implementation):
    """Every method of another implementation, under a new name, counting the calls."""

    def __init__(self, name, original):
        self.name, self.original, self.calls = name, original, collections.Counter()

    def check_batch(self, batch):
        self.calls["check_batch"] += 1
        return self.original.check_batch(batch)

    def draw_ahead(self, layers, seed, samples, tables):
        self.calls["draw_ahead"] += 1
        return self.original.draw_ahead(layers, seed, samples, tables)

    def apply(self, x, layer, draw):
        self.calls["apply"] += 1
        return self.original.apply(x, layer, draw)

    def apply_stacked(self, x, layers, draw):
        self.calls["apply_stacked"] += 1
        stacked = self.original.apply_stacked(x, layers, draw)
        self.calls["stacked"] += stacked is not None
        return stacked


@pytest.fixture
def register():
    """``implementations.register``, every implementation it added taken away after the test."""
    added = []

    def add(implementation):
        added.append(implementations.register(implementation).name)
        return implementation

    yield add
    for name in added:
        implementations.unregister(name)


def _step(model, implementation, batch, estimator="ste"):
    """Logits and the parameters' gradients of one step."""
    device = next(model.parameters()).device
    tokens = random_tokens(CONFIG, batch, 0, device)
    logits = model(tokens, estimator=estimator, implementation=implementation, seed=77, tau=0.8, sample_offset=2)
    gradients = torch.autograd.grad(next_token_loss(logits, tokens), list(model.parameters()))
    return logits.detach(), gradients


def _assert_equal(got, want):
    (logits, gradients), (want_logits, want_gradients) = got, want
    assert torch.equal(logits, want_logits)
    assert all(torch.equal(g, w) for g, w in zip(gradients, want_gradients, strict=True))


# compiled compiles a graph per estimator: its object is the same kind as bmm's, run in test_compiled_sweep.
@pytest.mark.parametrize("name", [i for i in (*estimators.IMPLEMENTATIONS, estimators.FLOOR) if i != "compiled"])
@pytest.mark.parametrize("estimator", ["ste", "gumbel"])
def test_a_registered_copy_computes_what_its_original_computes(register, name, estimator):
    """A copy of each implementation under a new name: the same logits and gradients, bit for bit, and the model
    asks it for the batch check and the masks drawn ahead once a pass, for q, k and v at once once a block."""
    model = estimators.build_model(CONFIG, seed=3)
    batch = 1 if name == "current" else 3
    copy = register(Renamed(f"{name}_again", implementations.lookup(name)))
    _assert_equal(_step(model, copy.name, batch, estimator), _step(model, name, batch, estimator))
    blocks, stacked = CONFIG.n_layer, copy.calls["stacked"]  # fused stacks q, k and v where the kernels run
    applied = len(model.stochastic_layers()) - 3 * stacked
    calls = {"check_batch": 1, "draw_ahead": 1, "apply_stacked": blocks, "stacked": stacked, "apply": applied}
    assert copy.calls == calls


@needs_kernels
@pytest.mark.parametrize("estimator", ["ste", "gumbel"])
def test_a_registered_copy_of_fused_draws_ahead_and_stacks_as_fused_does(register, estimator):
    """Where the kernels run, a copy of fused draws every mask ahead and applies q, k and v as one layer (except
    for gumbel, whose backward needs each layer's noise), as fused does: the same logits and gradients."""
    model = estimators.build_model(CONFIG, device=KERNEL_DEVICE, seed=3)
    copy = register(Renamed("fused_again", implementations.lookup("fused")))
    _assert_equal(_step(model, copy.name, 3, estimator), _step(model, "fused", 3, estimator))
    blocks, stacked = CONFIG.n_layer, estimator == "ste"
    applied = blocks * (1 if stacked else 4)  # o alone where q, k and v were stacked
    calls = {"check_batch": 1, "draw_ahead": 1, "apply_stacked": blocks, "stacked": blocks * stacked, "apply": applied}
    assert copy.calls == calls


class _Stacking(Implementation):
    """bmm, with q, k and v concatenated by ``apply_stacked``, masks 'drawn ahead' that ``apply`` checks it is
    given, and batches of more than 3 rows refused."""

    name = "bmm_stacking"

    def __init__(self):
        self.bmm, self.ahead, self.stacked = implementations.lookup("bmm"), None, 0

    def check_batch(self, batch):
        if batch > 3:
            raise NotImplementedError(f"bmm_stacking runs up to 3 rows, got {batch}")

    def draw_ahead(self, layers, seed, samples, tables):
        self.ahead = {layer.param_id: torch.tensor(len(samples)) for layer in layers}
        return self.ahead

    def apply(self, x, layer, draw):
        assert draw.drawn is self.ahead and draw.implementation == self.name
        return self.bmm.apply(x, layer, draw)

    def apply_stacked(self, x, layers, draw):
        self.stacked += 1
        return torch.cat([self.apply(x, layer, draw) for layer in layers], -1)


def test_the_model_uses_what_the_interface_gives(register):
    """The model splits apply_stacked's result into q, k and v, passes draw_ahead's masks to every layer, and
    raises check_batch's refusal before it applies a layer."""
    model = estimators.build_model(CONFIG, seed=3)
    stacking = register(_Stacking())
    _assert_equal(_step(model, stacking.name, 3), _step(model, "bmm", 3))
    assert stacking.stacked == CONFIG.n_layer
    stacking.ahead = None
    with pytest.raises(NotImplementedError, match="up to 3 rows, got 4"):
        _step(model, stacking.name, 4)
    assert stacking.ahead is None, "refused before the masks are drawn"


def test_lookup_register_and_unregister_name_the_valid_choices():
    assert estimators.IMPLEMENTATIONS == ("current", "loop", "einsum", "bmm", "vmap", "fused", "compiled")
    assert all(implementations.lookup(name).name == name for name in (*estimators.IMPLEMENTATIONS, "shared"))
    with pytest.raises(ValueError, match=r"unknown implementation 'bmm_again'; valid choices: 'current', .*'shared'$"):
        implementations.lookup("bmm_again")
    with pytest.raises(ValueError, match=r"unknown implementation \['bmm'\]"):
        implementations.lookup(["bmm"])
    implementations.register(Renamed("bmm_again", implementations.lookup("bmm")))
    try:
        assert implementations.lookup("bmm_again").name == "bmm_again"
        assert estimators.IMPLEMENTATIONS[-1] == "compiled", "IMPLEMENTATIONS stays the built-in ones"
        with pytest.raises(ValueError, match=r"unknown implementation 'nope'; valid choices: .*'shared', 'bmm_again'"):
            implementations.lookup("nope")
        with pytest.raises(ValueError, match="'bmm_again' is registered already"):
            implementations.register(Renamed("bmm_again", implementations.lookup("bmm")))
        with pytest.raises(ValueError, match="'fused' is registered already"):
            implementations.register(Renamed("fused", implementations.lookup("bmm")))
        with pytest.raises(TypeError, match="register takes an Implementation, got function"):
            implementations.register(lambda x, layer, draw: x)
        with pytest.raises(ValueError, match=r"register added, got 'bmm'; added: 'bmm_again'"):
            implementations.unregister("bmm")
    finally:
        implementations.unregister("bmm_again")
    with pytest.raises(ValueError, match="unknown implementation 'bmm_again'"):
        implementations.lookup("bmm_again")
    with pytest.raises(ValueError, match=r"got 'bmm_again'; added: none"):
        implementations.unregister("bmm_again")
