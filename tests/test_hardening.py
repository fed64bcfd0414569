"""Bad input past the arguments' checks (those are test_errors.py's): the model's own mask logits and codebooks, CUDA's
deferred value checks (an error, and a device that lives on), the gradients near the smallest tau, and double
backward (supported where the autograd graph is torch's, refused by fused)."""

import pytest
import torch

import estimators
from benchmarks.workload import random_tokens

from conftest import CONFIGS

INF, NAN = float("inf"), float("nan")


def _noise(shape, dtype=torch.float32):
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)).clamp(1e-3, 1 - 1e-3).to(dtype)


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_a_small_but_representable_tau_gives_finite_gradients(name):
    logits = torch.randn(8, 3, dtype=torch.float16, requires_grad=True)
    d = estimators.estimate(name, logits, _noise((8, 3), torch.float16), tau=1e-2)
    (d * torch.randn(8, 3, dtype=torch.float16)).sum().backward()
    assert torch.isfinite(logits.grad).all()


# The model's own parameters and devices.
@pytest.mark.parametrize("bad", [NAN, INF])
def test_the_model_refuses_to_draw_masks_from_non_finite_logits(bad):
    model = estimators.build_model(CONFIGS["tiny"])
    with torch.no_grad():
        model.stochastic_layers()[-1].logits[3, 1, 0] = bad
    with pytest.raises(ValueError, match="mask logits are not finite"):
        model(random_tokens(CONFIGS["tiny"], 2, 0), estimator="gumbel", implementation="fused", seed=0)


@pytest.mark.parametrize("implementation", ["current", "loop", "bmm", "fused", "shared"])
@pytest.mark.parametrize("how", ["in place", "load_state_dict"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_the_model_refuses_a_non_finite_codebook_naming_the_layer(bad, how, implementation):
    model = estimators.build_model(CONFIGS["tiny"])
    if how == "in place":
        with torch.no_grad():
            model.blocks[1].attn.k.codebook[0] = bad
    else:
        state = model.state_dict()
        state["blocks.1.attn.k.codebook"] = torch.tensor([0.0, bad])
        model.load_state_dict(state)
    with pytest.raises(ValueError, match=r"the codebook of blocks\.1\.attn\.k is not finite"):
        model(random_tokens(CONFIGS["tiny"], 1, 0), estimator="ste", implementation=implementation, seed=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("implementation", ["fused", "bmm", "shared"])
@pytest.mark.parametrize("bad", ["token -1", "token vocab", "logit nan", "logit inf", "codebook nan", "tau"])
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
    saved_codebook = model.stochastic_layers()[2].codebook.clone()
    if bad.startswith("logit"):
        with torch.no_grad():
            model.stochastic_layers()[2].logits[1, 0, 1] = NAN if bad == "logit nan" else INF
    if bad.startswith("codebook"):
        model.stochastic_layers()[2].codebook[1] = NAN
    match = {
        "token": r"token ids must lie in \[0, ",
        "logit": "mask logits are not finite",
        "codebook": r"the codebook of blocks\.0\.attn\.v is not finite",
        "tau": "too small",
    }
    with pytest.raises(ValueError, match=match[bad.split()[0]]):
        model(tokens, estimator="gumbel", implementation=implementation, seed=0, tau=tau)
    with torch.no_grad():
        model.stochastic_layers()[2].logits.copy_(saved)
    model.stochastic_layers()[2].codebook.copy_(saved_codebook)
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
