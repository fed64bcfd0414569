"""torch.compile of the whole model: the sampler's custom ops, and compiled == eager in logits and gradients."""

import pytest
import torch

import estimators
from estimators import noise, ops, sampler
from estimators.config import PRESETS
from estimators.implementations import FLOOR, IMPLEMENTATIONS, Fused, MaskDraw, fused_torch

from conftest import CONFIGS, DEVICES

COMPILABLE = tuple(IMPLEMENTATIONS) + (FLOOR,)
TOLERANCE = {"atol": 2e-5, "rtol": 1e-4}  # inductor fuses and reorders fp32 arithmetic
EXACT = {"atol": 0, "rtol": 0}


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


def _check_compiled_matches_eager(
    config,
    device,
    estimator,
    implementation,
    fullgraph,
    seeds=(1234,),
    sample_offset=0,
    batch=None,
    backend="inductor",
    tolerance=TOLERANCE,
):
    torch._dynamo.reset()
    model = estimators.build_model(config, device=device, seed=0)
    compiled = torch.compile(model, fullgraph=fullgraph, backend=backend)
    batch = batch or (1 if implementation == "current" else 3)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (batch, config.seq_len), generator=generator).to(device)
    for seed in seeds:
        eager_seed = seed.item() & (2**64 - 1) if isinstance(seed, torch.Tensor) else seed
        kwargs = {"sample_offset": sample_offset}
        logits, grads = _step(model, tokens, estimator, implementation, eager_seed, **kwargs)
        compiled_logits, compiled_grads = _step(compiled, tokens, estimator, implementation, seed, **kwargs)
        torch.testing.assert_close(compiled_logits, logits, **tolerance)
        assert compiled_grads.keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(compiled_grads[name], grad, **tolerance, msg=lambda m, n=name: f"{n}: {m}")
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


@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
def test_compiled_fused_matches_eager_small_preset(estimator):
    """fused's custom ops at the small preset, batch 2, a tensor seed advanced in place without recompiling."""
    seed = torch.tensor(2**63 - 1)
    with torch._dynamo.config.patch(recompile_limit=1):
        _check_compiled_matches_eager(PRESETS["small"], "cpu", estimator, "fused", True, seeds=[seed] * 2, batch=2)


@pytest.mark.parametrize("config", ["odd-k2", "k3"])
@pytest.mark.parametrize("estimator", ["ste", "gumbel_rao"])
def test_compiled_fused_is_the_eager_fused_bit_for_bit(config, estimator):
    """Without inductor's reordering of the other layers' arithmetic (aot_eager), fused's ops give eager's
    logits and gradients exactly: the same masks, noise and math."""
    _check_compiled_matches_eager(
        CONFIGS[config], "cpu", estimator, "fused", True, sample_offset=5, batch=4, backend="aot_eager", tolerance=EXACT
    )


def _fused_op_arguments(categories, estimator, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=generator, dtype=dtype)
    weight, bias = torch.randn(8, 16, generator=generator), torch.randn(8, generator=generator)
    logits, codebook = torch.randn(8, 16, categories, generator=generator), torch.linspace(0.25, 1.0, categories)
    seed = ops.seed_tensor(2**64 - 3)
    masks = ops.draw_index(logits, seed, 2, range(10, 13))
    return x, weight, bias, logits, codebook, masks, seed, 2, 10, 3, estimator, 0.7


@pytest.mark.parametrize("categories", [2, 3])
@pytest.mark.parametrize("estimator", ["ste", "gumbel"])
def test_opcheck_fused_linear(categories, estimator):
    arguments = _fused_op_arguments(categories, estimator)
    differentiable = tuple(t.clone().requires_grad_() for t in arguments[:4])
    torch.library.opcheck(torch.ops.estimators.fused_linear, (*differentiable, *arguments[4:]))
    dy = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))
    for needs in ([True] * 4, [False, True, False, True]):
        torch.library.opcheck(torch.ops.estimators.fused_linear_backward, (dy, *arguments, needs))


@pytest.mark.parametrize("categories", [2, 3])
def test_fused_ops_are_the_autograd_function(categories):
    """The ops' y and gradients are the eager FusedLinear's exactly; unwanted gradients come back as zeros."""
    arguments = _fused_op_arguments(categories, "gumbel_rao")
    x, weight, bias, logits, codebook, masks, seed, param, first, count, estimator, tau = arguments
    parameters = [t.clone().requires_grad_() for t in (x, weight, bias, logits)]
    draw = MaskDraw(estimator, "fused", tau, 2**64 - 3, range(first, first + count))
    expected = fused_torch.FusedLinear.apply(*parameters, codebook, param, draw)
    dy = torch.randn_like(expected)
    expected.backward(dy)
    y = torch.ops.estimators.fused_linear(*arguments)
    torch.testing.assert_close(y, expected, **EXACT)
    grads = torch.ops.estimators.fused_linear_backward(dy, *arguments, [True] * 4)
    for grad, parameter in zip(grads, parameters, strict=True):
        torch.testing.assert_close(grad, parameter.grad, **EXACT)
    grads = torch.ops.estimators.fused_linear_backward(dy, *arguments, [True, False, True, False])
    torch.testing.assert_close(grads[0], parameters[0].grad, **EXACT)
    assert not grads[1].any() and not grads[3].any()


def test_fused_op_refuses_double_backward():
    arguments = _fused_op_arguments(2, "ste")
    differentiable = tuple(t.clone().requires_grad_() for t in arguments[:4])
    y = torch.ops.estimators.fused_linear(*differentiable, *arguments[4:])
    (dx,) = torch.autograd.grad(y.sum(), differentiable[0], create_graph=True)
    with pytest.raises(RuntimeError, match="does not support double backward"):
        dx.sum().backward()


def test_compiled_model_raises_the_value_checks():
    torch._dynamo.reset()
    config = CONFIGS["tiny"]
    compiled = torch.compile(estimators.build_model(config, seed=0), fullgraph=True)
    tokens = torch.full((2, config.seq_len), config.vocab_size)
    with pytest.raises(ValueError, match="token ids must lie in"):
        compiled(tokens, estimator="ste", implementation="bmm", seed=1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
@pytest.mark.parametrize("implementation", COMPILABLE)
def test_compiled_model_matches_eager_grid_on_cuda(estimator, implementation):
    """Every implementation x estimator on CUDA (the CPU's are covered by the tests above: every implementation
    with ste, every estimator with bmm and with fused)."""
    _check_compiled_matches_eager(CONFIGS["tiny"], "cuda", estimator, implementation, fullgraph=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("estimator", ["ste", "gumbel_rao"])
def test_compiled_model_matches_eager_cuda_tensor_seed(estimator):
    seed = torch.tensor(41, device="cuda")
    _check_compiled_matches_eager(CONFIGS["odd-k2"], "cuda", estimator, "bmm", fullgraph=True, seeds=[seed] * 2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("config", ["odd-k2", "k3"])
@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
def test_compiled_fused_matches_eager_cuda(config, estimator, monkeypatch):
    """On CUDA: the Triton backend's op for K = 2 (packed masks from estimators::draw_bits), the torch one for K = 3;
    a CUDA tensor seed and a CPU one; within inductor's reordering, and exact without inductor where eager also
    applies q, k, v one by one (a compiled model does not stack them, which sums their input's gradient in
    another order)."""
    for seed in (torch.tensor(41, device="cuda"), torch.tensor(-7)):
        _check_compiled_matches_eager(CONFIGS[config], "cuda", estimator, "fused", True, seeds=[seed] * 2, batch=4)
    monkeypatch.setattr(Fused, "apply_stacked", lambda self, x, layers, draw: None)
    _check_compiled_matches_eager(
        CONFIGS[config], "cuda", estimator, "fused", True, batch=4, backend="aot_eager", tolerance=EXACT
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("estimator", ["ste", "gumbel"])
def test_compiled_fused_matches_eager_under_autocast(device, estimator, monkeypatch):
    """A bf16 autocast forward (the backward outside it, as torch recommends): the op takes x in bf16, as the
    eager fused_linear casts it, and gives eager's logits and gradients exactly (aot_eager; q, k, v one by one)."""
    monkeypatch.setattr(Fused, "apply_stacked", lambda self, x, layers, draw: None)
    torch._dynamo.reset()
    config = CONFIGS["odd-k2"]
    model = estimators.build_model(config, device=device, seed=0)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    tokens = torch.randint(0, config.vocab_size, (4, config.seq_len), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(device)

    def step(module):
        module.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = module(tokens, estimator=estimator, implementation="fused", seed=3)
            loss = estimators.next_token_loss(logits, tokens)
        loss.backward()
        return logits, {name.removeprefix("_orig_mod."): p.grad.clone() for name, p in module.named_parameters()}

    logits, grads = step(model)
    compiled_logits, compiled_grads = step(compiled)
    assert compiled_logits.dtype == torch.bfloat16
    torch.testing.assert_close(compiled_logits, logits, **EXACT)
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, **EXACT, msg=lambda m, n=name: f"{n}: {m}")
