"""torch.compile of the whole model: the sampler's custom ops, and compiled == eager in logits and gradients."""

import pytest
import torch

import estimators
from estimators import noise, ops, sampler
from estimators.implementations import FLOOR, IMPLEMENTATIONS

from conftest import CONFIGS, DEVICES

# fused: the Triton launches and the chunked CPU path in an autograd.Function that dynamo cannot trace yet.
COMPILABLE = tuple(i for i in IMPLEMENTATIONS if i != "fused") + (FLOOR,)
TOLERANCE = {"atol": 2e-5, "rtol": 1e-4}  # inductor fuses and reorders fp32 arithmetic


def _seeds():
    return [0, 1234, 2**63 - 1, 2**63, 2**64 - 1]


@pytest.mark.parametrize("seed", _seeds())
@pytest.mark.parametrize("categories", [2, 3])
def test_ops_are_the_eager_sampler_bit_for_bit(seed, categories):
    logits = torch.randn(5, 7, categories, generator=torch.Generator().manual_seed(0))
    samples = range(3, 7)
    for value in (seed, ops.seed_tensor(seed)):
        torch.testing.assert_close(
            ops.draw_index(logits, value, 4, samples), sampler.draw_index(logits, seed, 4, samples), rtol=0, atol=0
        )
        torch.testing.assert_close(
            ops.uniform(logits, value, 4, samples),
            noise.uniform(seed, 4, samples, logits.shape),
            rtol=0,
            atol=0,
        )
        if categories == 2:
            torch.testing.assert_close(
                ops.draw_bits(logits, value, 4, samples), sampler.draw_bits(logits, seed, 4, samples), rtol=0, atol=0
            )


def test_seed_tensor_holds_the_seeds_64_bits():
    assert ops.seed_tensor(2**64 - 1).item() == -1
    assert ops.seed_tensor(2**63).item() == -(2**63)
    assert ops.seed_tensor(5).dtype == torch.int64
    tensor = torch.tensor(3)
    assert ops.seed_tensor(tensor) is tensor


def test_ops_refuse_bad_arguments():
    logits = torch.randn(4, 3, 3)
    with pytest.raises(ValueError, match="K = 2"):
        ops.draw_bits(logits, 0, 0, range(2))
    with pytest.raises(ValueError, match="range of consecutive"):
        ops.draw_index(logits, 0, 0, [0, 2])
    with pytest.raises(ValueError, match="range of consecutive"):
        ops.uniform(logits, 0, 0, range(0, 4, 2))


@pytest.mark.parametrize("categories", [2, 3])
def test_opcheck(categories):
    logits = torch.randn(6, 5, categories)
    seed = ops.seed_tensor(2**64 - 3)
    for op in (torch.ops.estimators.draw_index, torch.ops.estimators.uniform):
        torch.library.opcheck(op, (logits, seed, 2, 10, 3))
    if categories == 2:
        torch.library.opcheck(torch.ops.estimators.draw_bits, (logits, seed, 2, 10, 3))
    tokens = torch.randint(0, 9, (2, 4))
    codebooks = [torch.tensor([0.0, 1.0]), torch.tensor([-1.0, 1.0])]
    arguments = (tokens, [logits, logits * 2], 9, 1.0, 0.0, codebooks, "blocks.0.attn.q,blocks.0.attn.k")
    torch.library.opcheck(torch.ops.estimators.checked_tokens, arguments)


def test_checked_tokens_raises_the_eager_checks():
    logits = torch.randn(3, 2, 2)
    with pytest.raises(ValueError, match="token ids must lie in"):
        torch.ops.estimators.checked_tokens(torch.tensor([[0, 9]]), [logits], 9, 1.0, 0.0, [], "")
    with pytest.raises(ValueError, match="not finite"):
        torch.ops.estimators.checked_tokens(torch.tensor([[0, 1]]), [logits / 0], 9, 1.0, 0.0, [], "")
    nan_codebook = [torch.tensor([0.0, 1.0]), torch.tensor([float("nan"), 1.0])]
    with pytest.raises(ValueError, match="codebook of blocks.0.attn.k is not finite"):
        torch.ops.estimators.checked_tokens(
            torch.tensor([[0, 1]]), [logits, logits], 9, 1.0, 0.0, nan_codebook, "blocks.0.attn.q,blocks.0.attn.k"
        )


def _step(model, tokens, estimator, implementation, seed, **kwargs):
    model.zero_grad(set_to_none=True)
    logits = model(tokens, estimator=estimator, implementation=implementation, seed=seed, **kwargs)
    estimators.next_token_loss(logits, tokens).backward()
    return logits.detach(), {name.removeprefix("_orig_mod."): p.grad.clone() for name, p in model.named_parameters()}


def _check_compiled_matches_eager(config, device, estimator, implementation, fullgraph, seeds=(1234,), sample_offset=0):
    torch._dynamo.reset()
    model = estimators.build_model(config, device=device, seed=0)
    compiled = torch.compile(model, fullgraph=fullgraph)
    batch = 1 if implementation == "current" else 3
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (batch, config.seq_len), generator=generator).to(device)
    for seed in seeds:
        eager_seed = seed.item() & (2**64 - 1) if isinstance(seed, torch.Tensor) else seed
        kwargs = {"sample_offset": sample_offset}
        logits, grads = _step(model, tokens, estimator, implementation, eager_seed, **kwargs)
        compiled_logits, compiled_grads = _step(compiled, tokens, estimator, implementation, seed, **kwargs)
        torch.testing.assert_close(compiled_logits, logits, **TOLERANCE)
        assert compiled_grads.keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(compiled_grads[name], grad, **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")
        if isinstance(seed, torch.Tensor):
            seed.add_(1)


@pytest.mark.parametrize("implementation", COMPILABLE)
def test_compiled_model_matches_eager_each_implementation(implementation):
    _check_compiled_matches_eager(CONFIGS["tiny"], "cpu", "ste", implementation, fullgraph=True)


@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
def test_compiled_model_matches_eager_each_estimator(estimator):
    _check_compiled_matches_eager(CONFIGS["odd-k2"], "cpu", estimator, "bmm", fullgraph=True, sample_offset=5)


def test_compiled_model_k3_and_a_tensor_seed_without_recompiling():
    """A CPU int64 tensor seed is a graph input: advancing it draws new masks in the same graph."""
    seed = torch.tensor(-2)  # 2**64 - 2, then 2**64 - 1, then 0
    with torch._dynamo.config.patch(recompile_limit=1):
        _check_compiled_matches_eager(CONFIGS["k3"], "cpu", "gumbel_rao", "vmap", fullgraph=True, seeds=[seed] * 3)


def test_compiled_model_raises_the_value_checks():
    torch._dynamo.reset()
    config = CONFIGS["tiny"]
    compiled = torch.compile(estimators.build_model(config, seed=0), fullgraph=True)
    tokens = torch.full((2, config.seq_len), config.vocab_size)
    with pytest.raises(ValueError, match="token ids must lie in"):
        compiled(tokens, estimator="ste", implementation="bmm", seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
@pytest.mark.parametrize("implementation", COMPILABLE)
def test_compiled_model_matches_eager_grid(device, estimator, implementation):
    _check_compiled_matches_eager(CONFIGS["tiny"], device, estimator, implementation, fullgraph=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("estimator", ["ste", "gumbel_rao"])
def test_compiled_model_matches_eager_cuda_tensor_seed(estimator):
    seed = torch.tensor(41, device="cuda")
    _check_compiled_matches_eager(CONFIGS["odd-k2"], "cuda", estimator, "bmm", fullgraph=True, seeds=[seed] * 2)
