"""``estimators.kernels.launch``: its keys split launches at least as finely as Triton's specialisation, and a
launch through the compiled kernel's launcher computes what ``kernel[grid]`` does."""

import importlib.util

import pytest
import torch

triton_installed = importlib.util.find_spec("triton") is not None
pytestmark = pytest.mark.skipif(not triton_installed, reason="triton is not installed")

INTS = [
    -(2**31) - 1,
    -(2**31),
    -17,
    -16,
    -1,
    0,
    1,
    2,
    15,
    16,
    17,
    32,
    2**31 - 16,
    2**31 - 1,
    2**31,
    2**32,
    2**32 + 1,
    2**63 - 16,
    2**63 - 1,
    2**63,
    2**64 - 16,
    2**64 - 1,
]


def _launch_arguments():
    storage = torch.zeros(64)
    tensors = [storage, storage[1:], storage[4:], storage.to(torch.bfloat16), storage.to(torch.uint8)[1:]]
    tensors += [torch.zeros(8, dtype=dtype) for dtype in (torch.float16, torch.int64, torch.uint8, torch.int32)]
    return INTS + [0.0, 1.0, -2.5, 1e30, True, False] + tensors


def _triton_specialisation(value):
    try:
        from triton.backends.compiler import BaseBackend
        from triton.runtime.jit import native_specialize_impl
    except ImportError:  # another Triton layout: nothing to compare against
        pytest.skip("this Triton has no triton.runtime.jit.native_specialize_impl")
    return native_specialize_impl(BaseBackend, value, False, True, True)


def test_keys_are_at_least_as_fine_as_tritons_specialisation():
    from estimators.kernels.launch import argument_key

    specialisation_of_key = {}
    for value in _launch_arguments():
        specialisation = _triton_specialisation(value)
        seen = specialisation_of_key.setdefault(argument_key(value), specialisation)
        assert seen == specialisation, f"{value!r}: key {argument_key(value)} covers {seen} and {specialisation}"
    # The negative control: a key that forgot alignment would merge two of Triton's specialisations.
    aligned, offset = torch.zeros(8), torch.zeros(8)[1:]
    assert _triton_specialisation(aligned) != _triton_specialisation(offset)
    assert argument_key(aligned) != argument_key(offset)


def test_unsupported_arguments_are_refused():
    from estimators.kernels.launch import argument_key

    with pytest.raises(TypeError, match="tensors, ints, floats and bools"):
        argument_key("a string")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the bound launcher runs on CUDA only")
def test_bound_launches_compute_what_the_jit_launch_does():
    from estimators import kernels
    from estimators.kernels import launch as _launch

    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(3, 40, 48, device="cuda", generator=generator)
    weight = torch.randn(24, 48, device="cuda", generator=generator)
    bias = torch.randn(24, device="cuda", generator=generator)
    logits = torch.randn(24, 48, 2, device="cuda", generator=generator)
    _launch._compiled.clear()
    _launch._recent.clear()
    codebook = torch.tensor((0.0, 1.0), device="cuda")
    runs = []
    for _ in range(3):  # the first through kernel[grid], the others through the launcher
        bits = kernels.sample_bits(logits, 7, 3, range(3))
        runs.append((bits, kernels.masked_linear(x, weight, bits, codebook, bias)))
    assert _launch._compiled, "no launch was bound"
    for bits, y in runs[1:]:
        assert torch.equal(bits, runs[0][0]) and torch.equal(y, runs[0][1])
    # An unaligned view is another specialisation: launched through kernel[grid] again, right all the same.
    unaligned = torch.empty(x.numel() + 1, device="cuda")[1:].view_as(x).copy_(x)
    y = kernels.masked_linear(unaligned, weight, runs[0][0], codebook, bias)
    torch.testing.assert_close(y, runs[0][1], rtol=0, atol=0)


def test_launch_hooks_send_every_launch_through_triton():
    """A profiler's launch hook must see every launch: while one is set, nothing goes around kernel[grid]."""
    from estimators.kernels import launch as _launch

    if _launch._knobs is None:
        pytest.skip("this Triton has no launch-hook knobs")
    runtime = _launch._knobs.runtime
    assert not _launch._hooks_set(), "no hook is set in a plain process"
    saved = runtime.launch_enter_hook
    hook = lambda metadata: None  # noqa: E731
    try:
        if hasattr(saved, "add"):  # a HookChain
            saved.add(hook)
        else:
            runtime.launch_enter_hook = hook
        assert _launch._hooks_set()
    finally:
        if hasattr(saved, "remove"):
            saved.remove(hook)
        else:
            runtime.launch_enter_hook = saved
    assert not _launch._hooks_set()


def test_the_inlined_keys_are_argument_key():
    from estimators.kernels.launch import _arguments_key, argument_key

    arguments = tuple(_launch_arguments()) + (torch.nn.Parameter(torch.zeros(3)),)
    assert _arguments_key(arguments) == tuple(map(argument_key, arguments))


def test_value_keys_determine_the_specialisation_keys():
    """Launches that share a value key share Triton's specialisation: the value-keyed table is safe to look up first."""
    from estimators.kernels.launch import _arguments_key, _values_key

    class Subclass(torch.Tensor):
        pass

    storage = torch.zeros(64)
    arguments = _launch_arguments() + [torch.nn.Parameter(torch.zeros(3)), storage[2:], storage[4:]]
    # Tensor subclasses, aligned and not, beside plain tensors (a key of (dtype, aligned) would equal (dtype, 0 or 1)).
    arguments += [storage.as_subclass(Subclass), storage[1:].as_subclass(Subclass), storage.to(torch.uint8)[1:]]
    specialisation_of = {}
    for value in arguments:
        seen = specialisation_of.setdefault(_values_key((value,)), _arguments_key((value,)))
        assert seen == _arguments_key((value,)), f"{value!r}: one value key covers two specialisations"
    # Negative controls: values that Triton tells apart are told apart.
    assert _values_key((torch.zeros(8),)) != _values_key((torch.zeros(8)[1:],))
    assert _values_key((16,)) != _values_key((17,))


def test_the_value_keyed_table_stays_bounded(monkeypatch):
    """Ints that change at every launch (a seed) add an entry each; the table is emptied before it passes its limit."""
    from estimators.kernels import launch as _launch

    monkeypatch.setattr(_launch, "_recent", {})
    monkeypatch.setattr(_launch, "RECENT_LIMIT", 8)
    for seed in range(20):
        _launch._remember(("kernel", 0, (seed,), ()), ("bound",))
        assert 1 <= len(_launch._recent) <= 8
    assert ("kernel", 0, (19,), ()) in _launch._recent
