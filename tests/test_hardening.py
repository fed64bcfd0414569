"""Decided behaviour for bad or unusual input: a clear error, never a silent NaN, a clamp or a traceback.

Each category of docs/DESIGN.md's "Bad input" section, with more cases than one.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import estimators
from benchmarks.workload import random_tokens

from conftest import CONFIGS

INF, NAN = float("inf"), float("nan")


def _noise(shape, dtype=torch.float32):
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)).clamp(1e-3, 1 - 1e-3).to(dtype)


# Estimators: logits must be finite, and logits / tau representable in their dtype.
@pytest.mark.parametrize("bad", [INF, -INF, NAN])
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_estimate_refuses_non_finite_logits(name, bad):
    logits = torch.randn(5, 3)
    logits[2, 1] = bad
    with pytest.raises(ValueError, match="finite"):
        estimators.estimate(name, logits, _noise((5, 3)))


def test_estimate_refuses_a_row_of_minus_infinity():
    logits = torch.zeros(2, 3)
    logits[0] = -INF
    with pytest.raises(ValueError, match="finite"):
        estimators.estimate("ste", logits, _noise((2, 3)))


@pytest.mark.parametrize(("dtype", "tau"), [(torch.float32, 1e-45), (torch.float32, 1e-39), (torch.float16, 1e-5)])
def test_estimate_refuses_a_tau_whose_logits_over_tau_overflow(dtype, tau):
    logits = (torch.randn(8, 2) * 3).to(dtype)
    with pytest.raises(ValueError, match="too small"):
        estimators.estimate("reinmax", logits, _noise((8, 2), dtype), tau=tau)


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_a_small_but_representable_tau_gives_finite_gradients(name):
    logits = torch.randn(8, 3, dtype=torch.float16, requires_grad=True)
    d = estimators.estimate(name, logits, _noise((8, 3), torch.float16), tau=1e-2)
    (d * torch.randn(8, 3, dtype=torch.float16)).sum().backward()
    assert torch.isfinite(logits.grad).all()


# The noise estimators add a Gumbel perturbation (|G| <= 17) before dividing by tau: the check allows for it.
@pytest.mark.parametrize(("dtype", "tau"), [(torch.float32, 3e-38), (torch.float32, 3e-39), (torch.float16, 2e-5)])
@pytest.mark.parametrize("name", ["gumbel", "gumbel_rao"])
def test_estimate_refuses_a_tau_whose_noisy_logits_over_tau_overflow(name, dtype, tau):
    logits = torch.rand(8, 2).to(dtype)  # |logits| <= 1: logits / tau alone would pass
    with pytest.raises(ValueError, match="too small"):
        estimators.estimate(name, logits, _noise((8, 2), dtype), tau=tau)


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
@pytest.mark.parametrize(
    ("dtype", "magnitude"), [(torch.float16, 59968.0), (torch.float32, 1e30), (torch.bfloat16, 1e30)]
)
def test_the_tau_the_error_suggests_passes_and_gives_finite_gradients(name, dtype, magnitude):
    logits = torch.tensor([[magnitude, -magnitude], [1.0, 0.0]], dtype=dtype)
    with pytest.raises(ValueError, match="too small") as refused:
        estimators.estimate(name, logits, _noise((2, 2), dtype), tau=1e-45 if dtype != torch.float16 else 1e-8)
    suggested = float(str(refused.value).rsplit("tau >= ", 1)[1])
    logits.requires_grad_(True)
    d = estimators.estimate(name, logits, _noise((2, 2), dtype), tau=suggested)
    (d * torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=dtype)).sum().backward()
    assert torch.isfinite(logits.grad).all(), logits.grad


@pytest.mark.parametrize("estimator", ["gumbel", "gumbel_rao", "ste"])
@pytest.mark.parametrize("implementation", ["bmm", "fused"])
def test_the_model_refuses_a_tau_whose_noisy_logits_overflow(estimator, implementation):
    model = estimators.build_model(CONFIGS["tiny"])
    tokens = random_tokens(CONFIGS["tiny"], 2, 0)
    with pytest.raises(ValueError, match="too small"):
        model(tokens, estimator=estimator, implementation=implementation, seed=0, tau=3e-39)


def test_estimate_refuses_meta_tensors():
    logits = torch.randn(4, 2, device="meta")
    with pytest.raises(ValueError, match="meta"):
        estimators.estimate("ste", logits, torch.rand(4, 2, device="meta"))


# Numbers users pass: numpy and 0-d integer tensors are numbers too; bool is not.
def test_numpy_numbers_are_accepted_everywhere():
    config = estimators.ModelConfig(
        d_model=np.int64(32),
        n_head=np.int32(2),
        n_layer=1,
        d_ff=16,
        vocab_size=20,
        seq_len=np.int64(8),
        codebook=(np.float32(0.0), np.float64(1.0)),
    )
    assert isinstance(config.d_model, int) and config.codebook == (0.0, 1.0)
    model = estimators.build_model(config, seed=np.uint64(3))
    tokens = random_tokens(config, 2, seed=0)
    logits = model(
        tokens, estimator="ste", implementation="bmm", seed=np.int64(5), tau=np.float32(0.5), sample_offset=np.int64(4)
    )
    again = model(tokens, estimator="ste", implementation="bmm", seed=5, tau=0.5, sample_offset=4)
    assert torch.equal(logits, again)
    estimators.estimate("gumbel", torch.randn(3, 2), _noise((3, 2)), tau=np.float64(2.0))


BAD_SEEDS = [True, -1, 2**64, 1.5, "1", np.float64(3.0), np.bool_(True), torch.tensor(True), torch.tensor([5])]
BAD_SEEDS += [torch.tensor([[5]]), torch.tensor(5.0), torch.tensor(2, dtype=torch.uint8).expand(2)]


@pytest.mark.parametrize("seed", BAD_SEEDS)
def test_bad_seeds_are_refused(seed):
    model = estimators.build_model(CONFIGS["tiny"])
    with pytest.raises(ValueError, match="seed"):
        model(random_tokens(CONFIGS["tiny"], 1, 0), estimator="ste", implementation="bmm", seed=seed)
    with pytest.raises(ValueError, match="seed"):
        estimators.build_model(CONFIGS["tiny"], seed=seed)


def test_integer_tensors_of_every_integer_dtype_are_seeds():
    model = estimators.build_model(CONFIGS["tiny"])
    tokens = random_tokens(CONFIGS["tiny"], 1, 0)
    want = model(tokens, estimator="ste", implementation="bmm", seed=7)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        assert torch.equal(
            model(tokens, estimator="ste", implementation="bmm", seed=torch.tensor(7, dtype=dtype)), want
        )


@pytest.mark.parametrize("offset", [True, 1.0, np.float32(2), -1, 2**32, "0"])
def test_bad_sample_offsets_are_refused(offset):
    model = estimators.build_model(CONFIGS["tiny"])
    with pytest.raises(ValueError, match="sample_offset must be an int"):
        model(random_tokens(CONFIGS["tiny"], 2, 0), estimator="ste", implementation="bmm", seed=0, sample_offset=offset)


# Model configurations: sizes are integers >= 1, codebooks finite numbers.
@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(d_model=True), ValueError, "d_model must be a positive int"),
        (dict(d_model=32.0), ValueError, "d_model must be a positive int"),
        (dict(seq_len=0), ValueError, "seq_len must be a positive int"),
        (dict(num_categories=2.5), ValueError, r"num_categories must lie in \[2, 255\]"),
        (dict(num_categories=1), ValueError, r"num_categories must lie in \[2, 255\]"),
        (dict(codebook="01"), TypeError, "codebook must be a sequence"),
        (dict(codebook=(0.0, NAN)), ValueError, "finite"),
        (dict(codebook=(0.0, INF)), ValueError, "finite"),
        (dict(codebook=(0.0, "1")), ValueError, "finite"),
        (dict(codebook=(1e308, -1e308)), ValueError, "finite in float32"),
        (dict(codebook=(0.0, 3.5e38)), ValueError, "finite in float32"),
        (dict(codebook=(0.0, True)), ValueError, "finite"),
        (dict(codebook=(0.0,)), ValueError, "needs num_categories=2"),
    ],
)
def test_bad_model_configurations_are_refused(change, error, match):
    sizes = dict(d_model=32, n_head=2, n_layer=1, d_ff=16, vocab_size=20, seq_len=8) | change
    with pytest.raises(error, match=match):
        estimators.ModelConfig(**sizes)


# The model's own parameters and devices.
@pytest.mark.parametrize("bad", [NAN, INF])
def test_the_model_refuses_to_draw_masks_from_non_finite_logits(bad):
    model = estimators.build_model(CONFIGS["tiny"])
    with torch.no_grad():
        model.stochastic_layers()[-1].logits[3, 1, 0] = bad
    with pytest.raises(ValueError, match="mask logits are not finite"):
        model(random_tokens(CONFIGS["tiny"], 2, 0), estimator="gumbel", implementation="fused", seed=0)


def test_the_model_refuses_a_tau_too_small_for_its_logits():
    model = estimators.build_model(CONFIGS["tiny"])
    with pytest.raises(ValueError, match="too small"):
        model(random_tokens(CONFIGS["tiny"], 1, 0), estimator="ste", implementation="bmm", seed=0, tau=1e-40)


def test_meta_tensors_are_refused():
    model = estimators.build_model(CONFIGS["tiny"])
    with pytest.raises(ValueError, match="meta"):
        model(random_tokens(CONFIGS["tiny"], 1, 0).to("meta"), estimator="ste", implementation="bmm", seed=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is missing")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="cuda' is not available"):
        estimators.build_model(CONFIGS["tiny"], device="cuda")


@pytest.mark.parametrize(
    ("device", "error", "match"),
    [
        ("mps", ValueError, "not supported; valid choices: cpu, cuda"),
        ("xpu", ValueError, "not supported; valid choices: cpu, cuda"),
        ("meta", ValueError, "not supported; valid choices: cpu, cuda"),
        ("gpu", ValueError, "device must be 'cpu', 'cuda'"),
        (0, TypeError, "device must be 'cpu', 'cuda'"),
        (None, TypeError, "device must be 'cpu', 'cuda'"),
        ("cuda:99", ValueError, "not available|does not exist"),
    ],
)
def test_build_model_refuses_devices_it_cannot_run_on(device, error, match):
    with pytest.raises(error, match=match):
        estimators.build_model(CONFIGS["tiny"], device=device)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tokens_on_another_device_than_the_model_are_refused():
    model = estimators.build_model(CONFIGS["tiny"], device="cuda")
    with pytest.raises(ValueError, match="tokens are on cpu, the model on cuda"):
        model(random_tokens(CONFIGS["tiny"], 1, 0), estimator="ste", implementation="bmm", seed=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("implementation", ["fused", "bmm", "shared"])
@pytest.mark.parametrize("bad", ["token -1", "token vocab", "logit nan", "logit inf", "tau"])
def test_on_cuda_bad_values_raise_before_the_forward_returns_and_the_device_lives_on(implementation, bad):
    """On CUDA the forward reads its value checks at its end (``StepValueCheck``); an id out of range must
    still raise the clear error, not a device-side assert that would kill the context."""
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, device="cuda")
    tokens = random_tokens(config, 2, 0).cuda()
    good = model(tokens, estimator="gumbel", implementation=implementation, seed=0)
    tau = 1e-40 if bad == "tau" else 1.0
    if bad.startswith("token"):
        tokens = tokens.clone()
        tokens[1, 2] = -1 if bad == "token -1" else config.vocab_size
    saved = model.stochastic_layers()[2].logits.detach().clone()
    if bad.startswith("logit"):
        with torch.no_grad():
            model.stochastic_layers()[2].logits[1, 0, 1] = NAN if bad == "logit nan" else INF
    match = {"token": r"token ids must lie in \[0, ", "logit": "mask logits are not finite", "tau": "too small"}
    with pytest.raises(ValueError, match=match[bad.split()[0]]):
        model(tokens, estimator="gumbel", implementation=implementation, seed=0, tau=tau)
    with torch.no_grad():
        model.stochastic_layers()[2].logits.copy_(saved)
    again = model(random_tokens(config, 2, 0).cuda(), estimator="gumbel", implementation=implementation, seed=0)
    torch.cuda.synchronize()  # a device-side assert would surface here
    torch.testing.assert_close(again, good, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_on_a_second_cuda_device_a_bad_id_raises_while_the_first_is_current():
    """The checks' event must be recorded on the tokens' device's stream, not the current device's."""
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, device="cuda:1")
    tokens = random_tokens(config, 2, 0).to("cuda:1")
    tokens[0, 1] = config.vocab_size
    assert torch.cuda.current_device() == 0
    for _ in range(3):  # later passes would find an earlier pass's valid bounds in recycled pinned buffers
        model(random_tokens(config, 2, 0).to("cuda:1"), estimator="ste", implementation="fused", seed=0)
        with pytest.raises(ValueError, match=r"token ids must lie in \[0, "):
            model(tokens, estimator="ste", implementation="fused", seed=0)


# Double backward: supported where the autograd graph is torch's, refused by fused.
def test_fused_refuses_double_backward_and_bmm_supports_it():
    model = estimators.build_model(CONFIGS["tiny"])
    tokens = random_tokens(CONFIGS["tiny"], 2, 0)
    logits_parameter = model.blocks[-1].attn.o.logits  # after attention: torch has no CPU double backward of SDPA
    for implementation in ("bmm", "fused"):
        loss = estimators.next_token_loss(model(tokens, estimator="ste", implementation=implementation, seed=1), tokens)
        if implementation == "fused":
            with pytest.raises(RuntimeError, match="fused' does not support double backward"):
                torch.autograd.grad(loss, logits_parameter, create_graph=True)
        else:
            (grad,) = torch.autograd.grad(loss, logits_parameter, create_graph=True)
            (second,) = torch.autograd.grad(grad.square().sum(), logits_parameter)
            assert torch.isfinite(second).all()


@pytest.mark.parametrize("implementation", ["bmm", "einsum", "loop", "vmap"])
def test_double_backward_before_attention_needs_torchs_math_attention(implementation):
    """torch's fused CPU attention has no double backward; its math backend has (DESIGN.md, "Bad input")."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = estimators.build_model(CONFIGS["tiny"])
    tokens = random_tokens(CONFIGS["tiny"], 2, 0)
    first = model.blocks[0].attn.q.logits
    with sdpa_kernel(SDPBackend.MATH):
        logits = model(tokens, estimator="reinmax", implementation=implementation, seed=1)
        (grad,) = torch.autograd.grad(estimators.next_token_loss(logits, tokens), first, create_graph=True)
        (second,) = torch.autograd.grad(grad.square().sum(), first)
    assert torch.isfinite(second).all() and second.abs().sum() > 0


def test_data_parallel_offset_refuses_ranks_past_the_sample_counter():
    assert estimators.data_parallel_offset(2**31, rank=1) == 2**31
    for local_batch, rank in [(2**31, 3), (2**31, 2), (1, 2**32)]:
        with pytest.raises(ValueError, match="2\\*\\*32"):
            estimators.data_parallel_offset(local_batch, rank=rank)


# The training loss.
def test_next_token_loss_needs_a_next_token_and_matching_shapes():
    logits = torch.randn(2, 5, 7)
    tokens = torch.randint(0, 7, (2, 5))
    with pytest.raises(ValueError, match="T >= 2"):
        estimators.next_token_loss(logits[:, :1], tokens[:, :1])
    with pytest.raises(ValueError, match="must be the logits"):
        estimators.next_token_loss(logits, tokens[:, :4])
    with pytest.raises(ValueError, match="unknown reduction"):
        estimators.next_token_loss(logits, tokens, reduction="avg")
    with pytest.raises(TypeError, match="tokens must be"):
        estimators.next_token_loss(logits, tokens.float())
    with pytest.raises(ValueError, match=r"shape \[B, T, vocab >= 1\]"):
        estimators.next_token_loss(logits[0], tokens[0])
    with pytest.raises(ValueError, match=r"shape \[B, T, vocab >= 1\]"):
        estimators.next_token_loss(logits[..., :0], tokens)
    with pytest.raises(ValueError, match="B >= 1"):
        estimators.next_token_loss(logits[:0], tokens[:0])
    with pytest.raises(ValueError, match="tokens are on meta, the logits on cpu"):
        estimators.next_token_loss(logits, tokens.to("meta"))


def test_next_token_loss_ignores_no_target():
    """-100 (cross_entropy's default ignore_index) is an id like any other: out of range, so an error."""
    logits = torch.randn(1, 4, 7)
    tokens = torch.tensor([[1, 2, -100, 3]])
    with pytest.raises((IndexError, RuntimeError)):
        estimators.next_token_loss(logits, tokens)
    assert math.isfinite(estimators.next_token_loss(logits, tokens.clamp(min=0), reduction="sum").item())


# The suite: a commit that lacks the preset shows n/a instead of failing the import.
def test_a_commit_without_the_preset_is_not_applicable(monkeypatch):
    from benchmarks import workload

    monkeypatch.setattr(workload, "PRESET", "no-such-preset")
    with pytest.raises(NotImplementedError, match="does not exist at this commit"):
        workload.preset_config()


# The tools: a bad argument is a usage error (exit 2) that says what is wrong, never a verdict.
@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["tools.run.gate", "no-such-commit", "HEAD"], "unknown commit"),
        (["tools.run.gate", "HEAD", "HEAD", "-b", "no-such-benchmark"], "selects no benchmark"),
        (["tools.run.gate", "HEAD", "HEAD", "--factor", "0"], "--factor"),
        (["tools.run.gate", "HEAD", "HEAD", "--factor", "0.9"], "must be > 1"),
        (["tools.run.bench", "--commits", "-1"], "--commits"),
        (["tools.probes.floor", "--preset", "nope"], "invalid choice"),
        (["tools.probes.floor", "--tflops", "0"], "--tflops"),
        (["tools.run.gate", "HEAD", "HEAD", "-b", "("], "not a regular expression"),
        (["tools.reporting.spread", "--machine", "no-such-machine"], "no results for machine"),
        (["tools.reporting.spread", "--machine", "cpu-2core-avx2", "--min-batch", "-5"], "--min-batch"),
        (["tools.reporting.report", "--machine", ""], "no results for machine ''"),
        (["tools.reporting.report", "--machine", "cpu-2core-avx2", "--commit", "fffffff"], "matches 0 result sets"),
        (
            ["tools.reporting.report", "--machine", "h100-80gb", "--reference", "docs/BENCHMARKING.md"],
            "no reference-run",
        ),
        (["tools.reporting.report", "--machine", "h100-80gb", "--reference", "missing.txt"], "no reference run at"),
        (["tools.probes.ddp_scaling", "--out", "x.json", "--worlds", "0"], "--worlds"),
        (["tools.probes.ddp_scaling", "--out", "x.json", "--device", "cpu", "--steps", "0"], "--steps"),
        (["tools.probes.ddp_scaling", "--out", "x.json", "--implementations", "bogus"], "invalid choice"),
    ],
)
def test_tools_refuse_bad_arguments(command, message):
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is missing")
@pytest.mark.parametrize("probe", ["tools.probes.host_cost", "tools.probes.profile_gpu"])
def test_gpu_probes_say_they_need_cuda(probe, tmp_path):
    result = subprocess.run([sys.executable, "-m", probe, "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert result.returncode == 2 and "needs a CUDA device" in result.stderr, result.stderr


def test_the_host_cost_probe_switches_the_value_checks_off_and_back():
    """The probe's "without checks" steps must skip the checks that the package runs now, and only inside."""
    from tools.probes.host_cost import value_checks_off

    model = estimators.build_model(CONFIGS["tiny"])
    with torch.no_grad():
        model.stochastic_layers()[0].logits[0, 0, 0] = NAN

    def forward():
        return model(random_tokens(CONFIGS["tiny"], 2, 0), estimator="ste", implementation="bmm", seed=0)

    with value_checks_off():
        forward()
    with pytest.raises(ValueError, match="mask logits are not finite"):
        forward()


def test_report_refuses_a_missing_reference_and_leaves_out_invalid_values(tmp_path):
    from tools.reporting import reference_run, results

    with pytest.raises(results.NoResults, match="no reference run"):
        reference_run.parse_reference_run(tmp_path / "missing.txt")

    class FakeResults:  # asv's Results API, as Measurements reads it
        commit_hash = "0" * 40

        def get_all_result_keys(self):
            return ["bench.T.time_x"]

        def get_result_params(self, name):
            return [["1", "2", "3", "4", "5", "6"]]

        def get_result_value(self, name, params):
            return [0.5, -1.0, "x", None, INF, True]

        def get_result_stats(self, name, params):
            return [None] * 6

    with pytest.warns(UserWarning, match="invalid value"):
        measurements = results.Measurements(FakeResults())
    assert [params for (_, params), _ in measurements.items()] == [(1,)]
    assert json.dumps(measurements.get("T.time_x", 1).median) == "0.5"
