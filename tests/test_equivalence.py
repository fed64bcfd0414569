"""Every implementation against the per-sample reference, for every estimator: logits and all gradients.

The reference runs each row b alone through ``current`` as sample b. The
implementation under test runs the whole batch. Logits must agree within
1e-4; every parameter gradient within a relative 1e-4 of its own scale (see
``assert_gradients_close``). fp32 throughout, TF32 off (conftest).
"""

import pytest
import torch

import estimators
from benchmarks.workload import random_tokens
from estimators import sampler
from estimators.model import next_token_loss
from estimators.reference import per_sample_logits

from conftest import CONFIGS

LOGIT_TOL = 1e-4
GRAD_RTOL = 1e-4
# A gradient smaller than this fraction of the model's largest gradient entry is
# held to an absolute bound instead (e.g. the attention key bias, whose
# gradient is zero analytically and rounding noise numerically).
GRAD_SCALE_FLOOR = 1e-3


def tokens_for(config, batch, device, seed=0):
    return random_tokens(config, batch, seed, device)


def logits_and_grads(model, tokens, estimator, implementation, seed=1234, tau=0.8):
    logits = model(tokens, estimator=estimator, implementation=implementation, seed=seed, tau=tau)
    loss = next_token_loss(logits, tokens, reduction="sum")
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return logits.detach(), dict(zip([n for n, _ in model.named_parameters()], grads, strict=True))


def reference(model, tokens, estimator, seed=1234, tau=0.8):
    """Row b alone, as sample b, through the single-sample path; gradients summed over rows."""
    logits = per_sample_logits(model, tokens, estimator, seed, tau=tau)
    loss = next_token_loss(logits, tokens, reduction="sum")
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return logits.detach(), dict(zip([n for n, _ in model.named_parameters()], grads, strict=True))


def assert_gradients_close(grads, want):
    """max|g - g_ref| <= GRAD_RTOL * max(max|g_ref|, GRAD_SCALE_FLOOR * largest gradient entry)."""
    largest = max(g.abs().max().item() for g in want.values())
    assert set(grads) == set(want)
    for name, g in want.items():
        assert torch.isfinite(grads[name]).all(), name
        scale = max(g.abs().max().item(), GRAD_SCALE_FLOOR * largest)
        err = (grads[name] - g).abs().max().item()
        assert err <= GRAD_RTOL * scale, f"{name}: max error {err:.3g} > {GRAD_RTOL} x {scale:.3g}"


# torch.compile spends 10-20 s per graph (per estimator, batch and shape): the
# compiled path is checked on the "tiny" configuration, every estimator and batch.
def _skip_slow_compile(implementation, config_name, device):
    if implementation == "compiled" and config_name != "tiny":
        pytest.skip("compiled: checked on the tiny configuration")


@pytest.fixture(autouse=True)
def _fresh_dynamo_cache():
    """Each case compiles its own graphs: one process meets more shapes than dynamo's recompile limit."""
    torch._dynamo.reset()


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
@pytest.mark.parametrize("implementation", estimators.IMPLEMENTATIONS)
def test_implementation_matches_per_sample_reference(implementation, estimator, batch, config_name, device):
    if implementation == "current" and batch > 1:
        pytest.skip("current runs batch 1 only (tested in test_errors)")
    _skip_slow_compile(implementation, config_name, device)
    config = CONFIGS[config_name]
    model = estimators.build_model(config, device=device, seed=3)
    tokens = tokens_for(config, batch, device)
    want_logits, want_grads = reference(model, tokens, estimator)
    logits, grads = logits_and_grads(model, tokens, estimator, implementation)
    assert logits.shape == (batch, config.seq_len, config.vocab_size)
    assert (logits - want_logits).abs().max().item() <= LOGIT_TOL
    assert_gradients_close(grads, want_grads)


def test_gradient_check_can_fail():
    """The comparison rejects a gradient with one wrong entry, and one scaled by 1.001."""
    want = {"a": torch.tensor([1.0, -2.0, 0.5]), "b": torch.tensor([1e-9, 0.0])}
    assert_gradients_close({k: v.clone() for k, v in want.items()}, want)
    with pytest.raises(AssertionError):
        assert_gradients_close({"a": torch.tensor([1.0, -2.0, 0.6]), "b": want["b"]}, want)
    with pytest.raises(AssertionError):
        assert_gradients_close({"a": want["a"] * 1.001, "b": want["b"]}, want)


@pytest.mark.parametrize("implementation", ["loop", "bmm", "fused"])
def test_sample_alone_equals_sample_inside_batch(implementation, device):
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, device=device, seed=0)
    tokens = tokens_for(config, 6, device)
    with torch.no_grad():
        batch = model(tokens, estimator="gumbel", implementation=implementation, seed=99)
        for b in (0, 3, 5):
            alone = model(tokens[b : b + 1], estimator="gumbel", implementation="current", seed=99, sample_offset=b)
            # Same masks; the dense layers may pick other GEMM tilings for other batch shapes (cuBLAS does).
            assert (batch[b] - alone[0]).abs().max().item() <= LOGIT_TOL
    for layer in model.stochastic_layers():
        whole = sampler.draw_index(layer.logits, 99, layer.param_id, range(6))
        for b in (0, 4):
            assert torch.equal(whole[b], sampler.draw_index(layer.logits, 99, layer.param_id, [b])[0])


def test_seed_determines_the_masks(device):
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, device=device, seed=0)
    tokens = tokens_for(config, 3, device)
    with torch.no_grad():
        first = model(tokens, estimator="ste", implementation="bmm", seed=5)
        again = model(tokens, estimator="ste", implementation="bmm", seed=5)
        other = model(tokens, estimator="ste", implementation="bmm", seed=6)
    assert torch.equal(first, again)
    assert (first - other).abs().max().item() > 1e-3
    for layer in model.stochastic_layers():
        a = sampler.draw_index(layer.logits, 5, layer.param_id, range(3))
        b = sampler.draw_index(layer.logits, 6, layer.param_id, range(3))
        p_keep = torch.sigmoid(layer.logits[..., 1] - layer.logits[..., 0]).mean().item()
        assert (a != b).float().mean().item() > 0.5 * 2 * p_keep * (1 - p_keep)


def test_samples_in_a_batch_draw_different_masks():
    layer = estimators.build_model(CONFIGS["tiny"], seed=0).stochastic_layers()[0]
    index = sampler.draw_index(layer.logits, 5, layer.param_id, range(4))
    assert all((index[0] != index[b]).any() for b in range(1, 4))


def test_floor_shares_the_first_sample_mask(device):
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, device=device, seed=0)
    tokens = tokens_for(config, 4, device)
    with torch.no_grad():
        shared = model(tokens, estimator="reinmax", implementation=estimators.FLOOR, seed=8, sample_offset=2)
        for b in range(4):
            alone = model(tokens[b : b + 1], estimator="reinmax", implementation="current", seed=8, sample_offset=2)
            assert (shared[b] - alone[0]).abs().max().item() <= LOGIT_TOL


def test_floor_gradient_matches_per_sample_reference_with_one_mask(device):
    """The floor's gradients equal those of every row run as the same sample."""
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, device=device, seed=0)
    tokens = tokens_for(config, 3, device)
    logits, grads = logits_and_grads(model, tokens, "gumbel", estimators.FLOOR)
    rows = [
        model(tokens[b : b + 1], estimator="gumbel", implementation="current", seed=1234, tau=0.8) for b in range(3)
    ]
    want = torch.autograd.grad(next_token_loss(torch.cat(rows), tokens, reduction="sum"), list(model.parameters()))
    assert_gradients_close(grads, dict(zip(grads, want, strict=True)))


def test_seed_preset_builds_with_the_documented_shape():
    config = estimators.PRESETS["seed"]
    assert (config.d_model, config.n_head, config.n_layer, config.d_ff) == (512, 8, 3, 2048)
    assert (config.vocab_size, config.seq_len, config.num_categories, config.codebook_values) == (
        4096,
        128,
        2,
        (0.0, 1.0),
    )
    model = estimators.build_model("seed", seed=0)
    per_sample = sum(layer.weight.numel() for layer in model.stochastic_layers())
    assert per_sample == 12 * 512**2


def test_small_preset_runs_every_implementation():
    model = estimators.build_model("small", seed=0)
    tokens = tokens_for(estimators.PRESETS["small"], 2, "cpu")
    want, _ = reference(model, tokens, "ste")
    for implementation in estimators.IMPLEMENTATIONS:
        if implementation in ("current", "compiled"):
            continue
        logits, _ = logits_and_grads(model, tokens, "ste", implementation)
        assert (logits - want).abs().max().item() <= LOGIT_TOL


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("implementation", ["bmm", "fused"])
def test_cuda_graph_replay_matches_eager(implementation):
    """The benchmarks time CUDA-graph replays: a captured step must compute what eager does."""
    config = CONFIGS["odd-k2"]
    model = estimators.build_model(config, device="cuda", seed=0)
    tokens = tokens_for(config, 3, "cuda")
    want_logits, want_grads = logits_and_grads(model, tokens, "gumbel", implementation)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        logits_and_grads(model, tokens, "gumbel", implementation)  # warm-up off the default stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_logits, static_grads = logits_and_grads(model, tokens, "gumbel", implementation)
    graph.replay()
    torch.cuda.synchronize()
    assert (static_logits - want_logits).abs().max().item() <= LOGIT_TOL
    assert_gradients_close(static_grads, want_grads)
