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
from estimators import step_value_check
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
        loss = next_token_loss(logits.to(torch.promote_types(logits.dtype, torch.float32)), tokens, reduction="sum")
    gradients = torch.autograd.grad(loss, list(model.parameters()))
    names = [name for name, _ in model.named_parameters()]
    return logits.detach(), dict(zip(names, gradients, strict=True))


def assert_relatively_close(got, want, tolerance, what=""):
    """||got - want|| <= tolerance * ||want|| for the logits and every gradient (see NORM_FLOOR)."""
    logits, gradients = got
    want_logits, want_gradients = want
    error = (logits.double() - want_logits.double()).norm() / want_logits.double().norm()
    assert error <= tolerance, f"{what} logits: relative error {error:.3g} > {tolerance}"
    largest = max(g.norm().item() for g in want_gradients.values())
    for name, g in want_gradients.items():
        assert torch.isfinite(gradients[name]).all(), f"{what} {name}: not finite"
        scale = max(g.norm().item(), NORM_FLOOR * largest)
        error = (gradients[name].double() - g.double()).norm().item() / scale
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


@pytest.mark.parametrize("config_name", ["tiny", "k3"])
@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
def test_fused_in_a_float64_model_matches_loop_to_float64_precision(estimator, config_name, device):
    """fp64 computes, accumulates and forms the masked weights in fp64 (the torch backend on every device);
    the parameters are moved off the fp32 grid, so any rounding through fp32 shows."""
    config = CONFIGS[config_name]
    model = estimators.build_model(config, device=device, seed=3).double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1e-3 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64).to(device))
    tokens = random_tokens(config, 5, seed=0, device=device)
    want = _logits_and_gradients(model, tokens, estimator, "loop")
    got = _logits_and_gradients(model, tokens, estimator, "fused")
    assert all(g.dtype == torch.float64 for g in got[1].values())
    assert_relatively_close(got, want, 1e-12, f"fp64 {config_name}")


# A 16-bit model under autocast to the other 16-bit dtype: (the model's dtype, autocast's).
MIXES = [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16)]
MIX_IDS = ["fp16_model_bf16_autocast", "bf16_model_fp16_autocast"]


@pytest.mark.parametrize("model_dtype, autocast_dtype", MIXES, ids=MIX_IDS)
def test_the_value_checks_run_outside_the_callers_autocast(model_dtype, autocast_dtype):
    """StepValueCheck reduces the logits in their own dtype under any autocast, and still raises on a bad value
    (it once stacked them under the caller's autocast: 'Unexpected floating ScalarType in at::autocast::prioritize')."""
    logits = [torch.randn(4, 3, 2).to(model_dtype) for _ in range(3)]
    tokens = torch.tensor([[1, 2, 3]])
    with torch.autocast("cpu", dtype=autocast_dtype):
        step_value_check.StepValueCheck(tokens, 5, logits, 1.0, 0.0).result()
        logits[1][2, 1, 0] = float("nan")
        with pytest.raises(ValueError, match="not finite"):
            step_value_check.StepValueCheck(tokens, 5, logits, 1.0, 0.0).result()


@pytest.mark.parametrize("model_dtype, autocast_dtype", MIXES, ids=MIX_IDS)
def test_a_16_bit_model_under_cpu_autocast_to_the_other_dtype_is_refused_clearly(model_dtype, autocast_dtype):
    """On the CPU no implementation can run it (torch's CPU LayerNorm refuses an fp32 input with 16-bit parameters,
    in a plain torch block too): every implementation raises an error naming what runs."""
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, seed=3).to(model_dtype)
    for implementation in (*_implementations(1, compiled=True), estimators.FLOOR):
        with pytest.raises(ValueError, match=r"cannot run on the CPU under autocast to .*run a float32 or float64"):
            _logits_and_gradients(model, random_tokens(config, 1, seed=0), "ste", implementation, autocast_dtype)
    with torch.autocast("cpu", dtype=model_dtype):  # its own dtype runs
        model(random_tokens(config, 1, seed=0), estimator="ste", implementation="bmm", seed=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model_dtype, autocast_dtype", MIXES, ids=MIX_IDS)
@pytest.mark.parametrize("estimator", ["ste", "gumbel_rao"])
def test_a_16_bit_model_under_cuda_autocast_to_the_other_dtype(model_dtype, autocast_dtype, estimator):
    """On CUDA (LayerNorm runs in fp32 under autocast) every implementation runs forward and backward of the mix,
    gradients in the parameters' dtype, within bf16's tolerance of the fp32 reference on the same values."""
    config = CONFIGS["odd-k2"]
    model = estimators.build_model(config, device="cuda", seed=3).to(model_dtype)
    fp32_model = estimators.build_model(config, device="cuda", seed=3)
    fp32_model.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    tokens = random_tokens(config, 3, seed=0, device="cuda")
    want = _logits_and_gradients(fp32_model, tokens, estimator, "reference")
    for implementation in _implementations(3, compiled=estimator == "ste"):
        got = _logits_and_gradients(model, tokens, estimator, implementation, autocast_dtype)
        assert all(g.dtype == model_dtype for g in got[1].values()), implementation
        assert_relatively_close(got, want, RELATIVE_TOLERANCE[torch.bfloat16], f"{implementation} mix")
    floor = _logits_and_gradients(model, tokens, estimator, estimators.FLOOR, autocast_dtype)  # another function
    assert all(g.dtype == model_dtype and torch.isfinite(g).all() for g in floor[1].values())


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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_estimate_on_16_bit_logits_does_its_backward_math_in_fp32(name, dtype):
    """The gradient is the exact math on the same 16-bit inputs, rounded once to the logits' dtype: within an ulp
    of the dtype (16-bit math is off by several)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 3, generator=generator).to(dtype).requires_grad_()
    uniform = torch.rand(64, 3, generator=generator).clamp(0.01, 0.99).to(dtype)
    upstream = torch.randn(64, 3, generator=generator).to(dtype)
    sample = estimators.estimate(name, logits, uniform, tau=0.7)
    (sample * upstream).sum().backward()
    assert sample.dtype == logits.grad.dtype == dtype
    function = estimators.gradients.ESTIMATOR_FUNCTIONS[name]
    want = function.logit_grad(logits.detach().double(), sample.detach().double(), uniform, 0.7, upstream.double())
    error = (logits.grad.double() - want).abs()
    ulp = torch.finfo(dtype).eps
    assert (error <= ulp * want.abs() + ulp * 1e-3 * want.abs().max()).all(), f"largest error {error.max():.3g}"
