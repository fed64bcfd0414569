"""Reduced precision: every implementation under autocast (bf16, fp16), in a bf16 model, and with TF32 on.

The reference is the fp32 per-sample reference with TF32 off (conftest), run
on the same parameter values (for a bf16 model: its parameters in fp32).
Masks are drawn from the fp32 logits, so every precision sees the samples
of the fp32 run and the comparison measures rounding alone: a changed mask
moves a logit by O(1). Tolerances bound the relative error in norm,
||got - want|| / ||want||, of the logits and of every parameter's gradient:
about ten times the unit roundoff of the compute dtype (bf16 2**-8, fp16
2**-11, TF32 2**-11), for the few roundings a value meets in a tiny model.
"""

import pytest
import torch

import estimators
from benchmarks.workload import random_tokens
from estimators.model import next_token_loss
from estimators.reference import per_sample_logits

from conftest import CONFIGS

RELATIVE_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 5e-3, "tf32": 5e-3}
# A gradient smaller than this fraction of the largest gradient norm is held to that absolute scale instead
# (the attention key bias: zero analytically, rounding noise numerically).
NORM_FLOOR = 1e-3


def _logits_and_gradients(model, tokens, estimator, implementation, autocast_dtype=None):
    device_type = tokens.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        if implementation == "reference":
            logits = per_sample_logits(model, tokens, estimator, seed=1234, tau=0.8)
        else:
            logits = model(tokens, estimator=estimator, implementation=implementation, seed=1234, tau=0.8)
        loss = next_token_loss(logits.float(), tokens, reduction="sum")
    gradients = torch.autograd.grad(loss, list(model.parameters()))
    names = [name for name, _ in model.named_parameters()]
    return logits.detach(), dict(zip(names, gradients, strict=True))


def assert_relatively_close(got, want, tolerance, what=""):
    """||got - want|| <= tolerance * ||want|| for the logits and every gradient (see NORM_FLOOR)."""
    logits, gradients = got
    want_logits, want_gradients = want
    error = (logits.float() - want_logits).norm() / want_logits.norm()
    assert error <= tolerance, f"{what} logits: relative error {error:.3g} > {tolerance}"
    largest = max(g.norm().item() for g in want_gradients.values())
    for name, g in want_gradients.items():
        assert torch.isfinite(gradients[name]).all(), f"{what} {name}: not finite"
        scale = max(g.norm().item(), NORM_FLOOR * largest)
        error = (gradients[name].float() - g.float()).norm().item() / scale
        assert error <= tolerance, f"{what} {name}: relative error {error:.3g} > {tolerance}"


def _implementations(batch, compiled=False):
    """What runs at ``batch``; ``compiled`` only where asked (each case compiles: the sweep test covers it)."""
    return [i for i in estimators.IMPLEMENTATIONS if (batch == 1 or i != "current") and (compiled or i != "compiled")]


@pytest.fixture(autouse=True)
def _fresh_dynamo_cache():
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
def test_every_implementation_under_autocast_matches_the_fp32_reference(estimator, dtype, device):
    if device == "cpu" and dtype == torch.float16 and not _cpu_supports_fp16():
        pytest.skip("this torch has no fp16 matmul on CPU")
    config = CONFIGS["odd-k2"]  # K = 2 and odd sizes: the Triton kernels' path, partial tiles
    model = estimators.build_model(config, device=device, seed=3)
    for batch in (1, 3):
        tokens = random_tokens(config, batch, seed=batch, device=device)
        want = _logits_and_gradients(model, tokens, estimator, "reference")
        for implementation in _implementations(batch, compiled=batch == 3 and estimator == "reinmax"):
            got = _logits_and_gradients(model, tokens, estimator, implementation, autocast_dtype=dtype)
            assert got[0].dtype == dtype, implementation
            assert all(g.dtype == torch.float32 for g in got[1].values()), "gradients in the parameters' dtype"
            assert_relatively_close(got, want, RELATIVE_TOLERANCE[dtype], f"{implementation} batch {batch}")


@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
def test_every_implementation_in_a_bf16_model_matches_the_fp32_reference(estimator, device):
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, device=device, seed=3).to(torch.bfloat16)
    fp32_model = estimators.build_model(config, device=device, seed=3)
    fp32_model.load_state_dict({k: v.float() for k, v in model.state_dict().items()})  # the same values
    tokens = random_tokens(config, 3, seed=0, device=device)
    want = _logits_and_gradients(fp32_model, tokens, estimator, "reference")
    for implementation in _implementations(3, compiled=estimator == "ste"):
        got = _logits_and_gradients(model, tokens, estimator, implementation)
        assert got[0].dtype == torch.bfloat16, implementation
        assert all(g.dtype == torch.bfloat16 for g in got[1].values()), implementation
        assert_relatively_close(got, want, RELATIVE_TOLERANCE[torch.bfloat16], f"bf16 model {implementation}")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 exists on CUDA only")
@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
def test_every_implementation_with_tf32_matches_the_fp32_reference(estimator):
    config = CONFIGS["odd-k2"]
    model = estimators.build_model(config, device="cuda", seed=3)
    tokens = random_tokens(config, 3, seed=0, device="cuda")
    want = _logits_and_gradients(model, tokens, estimator, "reference")
    torch.backends.cuda.matmul.allow_tf32 = True  # conftest restores it
    for implementation in _implementations(3, compiled=True):
        got = _logits_and_gradients(model, tokens, estimator, implementation)
        assert_relatively_close(got, want, RELATIVE_TOLERANCE["tf32"], f"tf32 {implementation}")


def test_the_tolerance_catches_one_changed_mask():
    """A precision bug that changes samples (masks not drawn from the fp32 logits) fails the comparison."""
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, seed=3)
    tokens = random_tokens(config, 3, seed=0)
    want = _logits_and_gradients(model, tokens, "ste", "reference")
    other_seed = model(tokens, estimator="ste", implementation="bmm", seed=1235, tau=0.8)
    with pytest.raises(AssertionError):
        assert_relatively_close((other_seed.detach(), want[1]), want, RELATIVE_TOLERANCE[torch.bfloat16])


def _cpu_supports_fp16() -> bool:
    try:
        torch.ones(2, 2, dtype=torch.float16) @ torch.ones(2, 2, dtype=torch.float16)
    except RuntimeError:
        return False
    return True
