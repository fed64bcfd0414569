"""The Triton kernels against torch references: on CUDA, and on CPU under Triton's interpreter.

Without a GPU, ``test_kernels_under_the_interpreter`` re-runs these tests and
the fused implementation's equivalence tests in a subprocess with
TRITON_INTERPRET=1, so CI checks the kernels' math on the CPU.
"""

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import estimators
from estimators import _backend, _device_tables, noise, sampler, step_value_check
from estimators.config import ModelConfig
from estimators.gradients import ESTIMATOR_FUNCTIONS, sample_index
from estimators.implementations import MaskDraw, fused, fused_triton

from conftest import CONFIGS

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_kernels = pytest.mark.skipif(
    _backend.triton_kernels(KERNEL_DEVICE) is None, reason="Triton kernels need CUDA or TRITON_INTERPRET=1"
)


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED or torch.cuda.is_available(), reason="runs the interpreter from a plain CPU run")
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_kernels_under_the_interpreter():
    root = Path(__file__).parent
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(root / "test_triton_kernels.py"),
        str(root / "test_noise.py"),
        str(root / "test_equivalence.py"),
        "-k",
        # K = 3 runs fused's torch path (the kernels are K = 2): already covered by the plain run. The whole
        # model for one estimator of each kernel path (ste: batch sums; gumbel_rao: per-sample noise); the
        # kernel tests above cover every estimator's formula. (Five estimators took 9 of CI's 20 minutes.)
        "(fused and not k3 and (ste or gumbel_rao)) or not test_equivalence",
    ]
    result = subprocess.run(command, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def _kernels():
    return _backend.triton_kernels(KERNEL_DEVICE)


def _codebook(codes) -> torch.Tensor:
    """The kernels' codebook: (c0, c1) as an fp32 tensor on the kernels' device."""
    return torch.tensor(codes, dtype=torch.float32, device=KERNEL_DEVICE)


def _device_seed(seed: int) -> torch.Tensor:
    """A seed held in device memory: an int64 tensor whose 64 bits are the seed."""
    return torch.tensor(seed - 2**64 if seed >= 2**63 else seed, dtype=torch.int64, device=KERNEL_DEVICE)


@needs_kernels
@pytest.mark.parametrize("seed", [5, 2**63 + 2**40 + 7])
def test_kernel_uniform_is_bit_identical_to_numpy(seed):
    for samples in (range(0, 3), range(2**31 + 5, 2**31 + 7)):  # sample indices past int32 too
        want = torch.from_numpy(noise._uniform_numpy(noise.sample_keys(seed, 3, samples), 5000))
        assert torch.equal(_kernels().uniform(seed, 3, samples, 5000, KERNEL_DEVICE).cpu(), want)
        # A seed in device memory: the kernel derives the parameter's key from it, to the same bits.
        assert torch.equal(_kernels().uniform(_device_seed(seed), 3, samples, 5000, KERNEL_DEVICE).cpu(), want)


@needs_kernels
@pytest.mark.parametrize(
    "seed, dtype",
    [(5, torch.float32), (2**31 + 3, torch.bfloat16), (2**63 + 2**40 + 7, torch.float32)],
    ids=["small", "past_int32_bf16", "past_int63"],
)
def test_layers_drawn_in_one_launch_are_each_layers_draw(seed, dtype):
    """sampler.draw_bits_by_layer (one launch a logits shape) gives every layer draw_bits' own bits."""
    from types import SimpleNamespace

    generator = torch.Generator().manual_seed(3)
    shapes = [(13, 11), (13, 11), (7, 5), (13, 11)]  # two groups, a layer of the first after the second
    layers = [
        SimpleNamespace(logits=torch.randn(*shape, 2, generator=generator).to(dtype).to(KERNEL_DEVICE), param_id=pid)
        for pid, shape in zip([4, 9, 2, 30], shapes, strict=True)
    ]
    samples = range(2**32 - 6, 2**32 - 1)
    tables = {}
    for seed_value in (seed, _device_seed(seed)):
        drawn = sampler.draw_bits_by_layer(layers, seed_value, samples, tables)
        assert sorted(drawn) == [2, 4, 9, 30]
        for layer in layers:
            want = sampler.draw_bits(layer.logits, seed_value, layer.param_id, samples)
            assert torch.equal(drawn[layer.param_id], want), f"layer {layer.param_id}"
    assert _device_tables.kept(tables) == 2, "one table a group, built once"
    # A negative control: another layer's parameter index draws other bits.
    other = sampler.draw_bits(layers[0].logits, seed, layers[1].param_id, samples)
    assert not torch.equal(drawn[layers[0].param_id], other)


@needs_kernels
def test_kernel_uniform_of_scattered_samples():
    got = sampler.uniform(2**63 + 1, 9, [4, 0, 1, 2, 9], (33, 2), KERNEL_DEVICE).cpu()
    keys = noise.sample_keys(2**63 + 1, 9, [4, 0, 1, 2, 9])
    assert torch.equal(got.view(5, -1), torch.from_numpy(noise._uniform_numpy(keys, 66)))


@needs_kernels
@pytest.mark.parametrize("k", [2, 3, 5])
def test_kernel_sampler_is_gumbel_argmax(k):
    logits = torch.randn(37, 29, k, generator=torch.Generator().manual_seed(k))
    keys = noise.sample_keys(1, 2, range(3))
    got = _kernels().sample_index(logits.to(KERNEL_DEVICE), 1, 2, range(3)).cpu()
    want = sample_index(logits, torch.from_numpy(noise._uniform_numpy(keys, logits.numel())).view(3, *logits.shape))
    assert (got.long() != want).float().mean() < 1e-4  # ties to the last float32 bit aside
    assert torch.equal(_kernels().sample_index(logits.to(KERNEL_DEVICE), _device_seed(1), 2, range(3)).cpu(), got)
    if k == 2:
        for seed in (1, _device_seed(1)):
            bits = _kernels().sample_bits(logits.to(KERNEL_DEVICE), seed, 2, range(3))
            assert torch.equal(sampler.unpack_bits(bits, logits.shape[:-1]).cpu(), got)


def _problem(batch=3, time=37, d_in=45, d_out=29, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, time, d_in, generator=gen)
    weight = torch.randn(d_out, d_in, generator=gen)
    bias = torch.randn(d_out, generator=gen)
    logits = torch.randn(d_out, d_in, 2, generator=gen)
    dy = torch.randn(batch, time, d_out, generator=gen)
    index = sampler.draw_index(logits, 4, 1, range(batch)).cpu()
    return x, weight, bias, logits, dy, index


@needs_kernels
@pytest.mark.parametrize("weight_copy", [False, True])
@pytest.mark.parametrize("codes", [(0.0, 1.0), (0.25, -1.5)])
def test_kernel_masked_linear_forward_and_input_grad(codes, weight_copy):
    x, weight, bias, logits, dy, index = _problem()
    masks = torch.tensor(codes)[index.long()]
    bits = sampler.pack_bits(index).to(KERNEL_DEVICE)
    dev = lambda t: t.to(KERNEL_DEVICE)  # noqa: E731
    y = _kernels().masked_linear(dev(x), dev(weight), bits, _codebook(codes), dev(bias)).cpu()
    assert torch.allclose(y, torch.baddbmm(bias, x, (weight * masks).transpose(1, 2)), atol=1e-4)
    dx = (
        _kernels().masked_linear_input_grad(dev(dy), dev(weight), bits, _codebook(codes), weight_copy=weight_copy).cpu()
    )
    assert torch.allclose(dx, torch.bmm(dy, weight * masks), atol=1e-4)


@needs_kernels
@pytest.mark.parametrize("key", list(itertools.product([False, True], repeat=3)))  # MATMUL_TILES_BY_SHAPE's keys
def test_every_tile_configuration_masks_its_edges(key):
    """Each of MATMUL_TILES_BY_SHAPE's tiles, passed explicitly, on a shape off every tile multiple."""
    from estimators.kernels import tiles as kernel_tiles

    shape = kernel_tiles.MatmulShape(*key)
    sixteen_bit, input_grad = shape.sixteen_bit, shape.input_grad
    # bf16 dots are wrong under Triton's interpreter (docs/PERFORMANCE.md, "Precision"): fp16 there.
    dtype = (torch.float16 if INTERPRETED else torch.bfloat16) if sixteen_bit else torch.float32
    x, weight, bias, logits, dy, index = _problem()
    masks = index.float()
    bits = sampler.pack_bits(index).to(KERNEL_DEVICE)
    tiles = kernel_tiles.MATMUL_TILES_BY_SHAPE[shape]
    w_b = (weight * masks).to(dtype).double()
    if input_grad:
        got = _kernels().masked_linear_input_grad(
            dy.to(KERNEL_DEVICE, dtype), weight.to(KERNEL_DEVICE), bits, _codebook((0.0, 1.0)), tiles=tiles
        )
        want = torch.bmm(dy.to(dtype).double(), w_b)
    else:
        got = _kernels().masked_linear(
            x.to(KERNEL_DEVICE, dtype),
            weight.to(KERNEL_DEVICE),
            bits,
            _codebook((0.0, 1.0)),
            bias.to(KERNEL_DEVICE),
            tiles=tiles,
        )
        want = torch.baddbmm(bias.double(), x.to(dtype).double(), w_b.transpose(1, 2))
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert (got.double().cpu() - want).norm() / want.norm() < tolerance


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the large tiles at a large shape: minutes interpreted")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_masked_linear_large_shape_tiles(dtype):
    """Outputs of >= LARGE_OUTPUT elements take MATMUL_TILES_BY_SHAPE's large tiles in both passes."""
    from estimators import kernels

    batch, time, d_in, d_out = 16, 128, 2048, 2048
    assert batch * time * min(d_in, d_out) >= kernels.LARGE_OUTPUT
    gen = torch.Generator().manual_seed(0)
    x, dy = torch.randn(batch, time, d_in, generator=gen), torch.randn(batch, time, d_out, generator=gen)
    weight, bias = torch.randn(d_out, d_in, generator=gen) / 32, torch.randn(d_out, generator=gen)
    index = sampler.draw_index(torch.randn(d_out, d_in, 2, generator=gen), 4, 1, range(batch))
    bits = sampler.pack_bits(index).cuda()
    x, dy, weight, bias = (t.cuda() for t in (x, dy, weight, bias))
    y = _kernels().masked_linear(x.to(dtype), weight, bits, _codebook((0.0, 1.0)), bias).double()
    dx = _kernels().masked_linear_input_grad(dy.to(dtype), weight, bits, _codebook((0.0, 1.0))).double()
    w_b = (weight * index.cuda().float()).to(dtype).double()  # the reference in float64, on the GPU
    want_y = torch.baddbmm(bias.double(), x.to(dtype).double(), w_b.transpose(1, 2))
    want_dx = torch.bmm(dy.to(dtype).double(), w_b)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # fp32: tf32x3 dots; bf16: the output's rounding
    assert (y - want_y).norm() / want_y.norm() < tolerance
    assert (dx - want_dx).norm() / want_dx.norm() < tolerance


@needs_kernels
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("gumbel", [False, True])
@pytest.mark.parametrize(
    "time_major, d_in, d_out",
    [(False, 45, 29), (True, 45, 29), (True, 29, 45)],
    ids=["rows", "time_major_wide", "time_major_tall"],
)
@pytest.mark.parametrize("samples_a_program", ["one", "all"])
def test_kernel_masked_weight_grad(batch, gumbel, time_major, d_in, d_out, samples_a_program):
    """Both layouts of the reduction (time-major: G_b^T over a copy of dy), wide and tall layers.

    "all": 16 x 16 x 16 tiles and one split, so that each program's loop runs through every sample
    and three time tiles a sample (T = 37): G_b's reset and the hand-over from sample to sample.
    """
    x, weight, bias, logits, dy, index = _problem(batch=batch, d_in=d_in, d_out=d_out)
    loop = {} if samples_a_program == "one" else dict(tiles=dict(BLOCK_R=16, BLOCK_C=16, BLOCK_T=16), target_programs=1)
    codes = (0.25, 1.0)
    keys = noise.sample_keys(4, 1, range(batch))
    dev = lambda t: t.to(KERNEL_DEVICE)  # noqa: E731
    extra = (dev(logits), 4, 1, 0, 0.7) if gumbel else None
    total, selected, alpha = (
        None if t is None else t.cpu()
        for t in _kernels().masked_weight_grad(
            dev(dy),
            dev(x),
            sampler.pack_bits(index).to(KERNEL_DEVICE),
            _codebook(codes),
            extra,
            time_major=time_major,
            **loop,
        )
    )
    per_sample = torch.bmm(dy.transpose(1, 2), x)
    assert torch.allclose(total, per_sample.sum(0), rtol=1e-4, atol=1e-4)
    assert torch.allclose(selected, (per_sample * index).sum(0), rtol=1e-4, atol=1e-4)
    if gumbel:
        u = torch.from_numpy(noise._uniform_numpy(keys, logits.numel())).view(batch, *logits.shape)
        y = torch.softmax((logits + noise.gumbel(u)) / 0.7, -1)
        want = (per_sample * y[..., 0] * y[..., 1] * (codes[1] - codes[0]) / 0.7).sum(0)
        assert torch.allclose(alpha, want, rtol=1e-4, atol=1e-5)
    else:
        assert alpha is None


@needs_kernels
@pytest.mark.parametrize("estimator", estimators.ESTIMATORS)
@pytest.mark.parametrize("batch", [1, 13])
@pytest.mark.parametrize("device_seed", [False, True], ids=["int_seed", "device_seed"])
@pytest.mark.parametrize(
    "time_major, d_in, d_out", [(False, 16, 8), (True, 16, 8), (True, 8, 16)], ids=["rows", "tm_wide", "tm_tall"]
)
def test_kernel_param_grads_are_the_estimators_formulas(estimator, batch, device_seed, time_major, d_in, d_out):
    """dL/dW and dL/dtheta from the kernels against the estimator's own logit_grad, sample by sample."""
    x, weight, bias, logits, dy, index = _problem(batch=batch, time=9, d_in=d_in, d_out=d_out)
    codes, tau = (0.25, 1.0), 0.7
    dev = lambda t: t.to(KERNEL_DEVICE)  # noqa: E731
    seed = _device_seed(4) if device_seed else 4
    bits = sampler.pack_bits(index).to(KERNEL_DEVICE)

    def param_grads(**needs):
        return _kernels().masked_param_grads(
            dev(dy),
            dev(x),
            bits,
            _codebook(codes),
            dev(weight),
            dev(logits),
            estimator,
            tau,
            noise_stream=(seed, 1, 0),
            time_major=time_major,
            **needs,
        )

    dw, dlogits = param_grads()
    per_sample = torch.bmm(dy.transpose(1, 2), x)
    masks = torch.tensor(codes)[index.long()]
    uniform = torch.from_numpy(noise._uniform_numpy(noise.sample_keys(4, 1, range(batch)), logits.numel()))
    one_hot = torch.nn.functional.one_hot(index.long(), 2).float()
    coefficient = ESTIMATOR_FUNCTIONS[estimator].logit_grad(
        logits, one_hot, uniform.view(batch, *logits.shape), tau, torch.tensor(codes)
    )
    want_dlogits = ((per_sample * weight).unsqueeze(-1) * coefficient).sum(0)
    assert torch.allclose(dw.cpu(), (per_sample * masks).sum(0), rtol=1e-4, atol=1e-4)
    assert torch.allclose(dlogits.cpu(), want_dlogits, rtol=1e-4, atol=1e-4)
    only_logits = param_grads(need_weight=False)
    only_weight = param_grads(need_logits=False)
    assert only_weight[1] is None and torch.equal(only_weight[0], dw)
    assert only_logits[0] is None and torch.equal(only_logits[1], dlogits)


@needs_kernels
def test_kernel_weight_grad_splits_the_batch_consistently():
    """Many samples over few tiles: the batch is split across programs and summed."""
    x, weight, bias, logits, dy, index = _problem(batch=13, time=9, d_in=16, d_out=8)
    dev = lambda t: t.to(KERNEL_DEVICE)  # noqa: E731
    total, _, _ = _kernels().masked_weight_grad(
        dev(dy), dev(x), sampler.pack_bits(index).to(KERNEL_DEVICE), _codebook((0.0, 1.0))
    )
    assert torch.allclose(total.cpu(), torch.einsum("bto,bti->oi", dy, x), rtol=1e-4, atol=1e-4)
    assert np.isfinite(total.cpu().numpy()).all()


@needs_kernels
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="a layer this large is too slow for the interpreter")
@pytest.mark.parametrize("d_in, d_out", [(512, 1024), (1024, 512)], ids=["tall", "wide"])
def test_large_fp32_layers_reduce_over_a_time_major_copy(d_in, d_out):
    """Where B x out x in reaches TIME_MAJOR_MIN_PRODUCTS the default is the time-major layout, within 1e-5."""
    kernels = _kernels()
    batch, time = 64, 128
    assert batch * d_in * d_out >= kernels.TIME_MAJOR_MIN_PRODUCTS
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, time, d_in, device="cuda", generator=gen)
    dy = torch.randn(batch, time, d_out, device="cuda", generator=gen)
    bits = sampler.draw_bits(torch.randn(d_out, d_in, 2, device="cuda", generator=gen), 0, 0, range(batch))
    index = sampler.unpack_bits(bits, (d_out, d_in)).double()
    per_sample = torch.bmm(dy.double().transpose(1, 2), x.double())
    total, selected, _ = kernels.masked_weight_grad(dy, x, bits, _codebook((0.0, 1.0)))
    assert torch.equal(total, kernels.masked_weight_grad(dy, x, bits, _codebook((0.0, 1.0)), time_major=True)[0])
    for got, want in ((total, per_sample.sum(0)), (selected, (per_sample * index).sum(0))):
        assert (got.double() - want).norm() / want.norm() < 1e-5


@pytest.mark.skipif(_backend._import_kernels() is None, reason="triton is not installed")
@pytest.mark.parametrize("interpreted", [False, True], ids=["compiled", "interpreted"])
def test_under_the_interpreter_fused_sends_bf16_activations_to_the_torch_backend(interpreted, monkeypatch):
    """Triton's interpreter computes bf16 dots wrongly, so there bf16 takes the torch path; compiled kernels
    take every activation dtype."""
    monkeypatch.setattr(_backend, "INTERPRETED", interpreted)
    kernels = _backend._import_kernels()
    assert fused._kernels_take(kernels, torch.bfloat16) is not interpreted
    assert fused._kernels_take(kernels, torch.float16) and fused._kernels_take(kernels, torch.float32)
    assert not fused._kernels_take(kernels, torch.float64)


@pytest.mark.skipif(not INTERPRETED, reason="the bf16 model through the interpreter (TRITON_INTERPRET=1)")
def test_a_bf16_model_under_the_interpreter_matches_loop():
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, seed=3).to(torch.bfloat16)
    tokens = torch.randint(0, config.vocab_size, (2, config.seq_len), generator=torch.Generator().manual_seed(0))
    got = model(tokens, estimator="ste", implementation="fused", seed=3).float()
    want = model(tokens, estimator="ste", implementation="loop", seed=3).float()
    assert (got - want).norm() <= 3e-2 * want.norm()


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_kernels_take_16_bit_activations_and_accumulate_in_fp32(dtype):
    """x and dy in fp16/bf16, fp32 weights: the masked weight is rounded to the activations' dtype, as autocast does."""
    if INTERPRETED and dtype == torch.bfloat16:
        pytest.skip("Triton's interpreter computes bf16 dots wrongly (relative error ~1e9): checked on CUDA")
    x, weight, bias, logits, dy, index = _problem()
    codes = (0.25, 1.0)
    masked = (weight * torch.tensor(codes)[index.long()]).to(dtype).float()  # W_b, rounded
    bits = sampler.pack_bits(index).to(KERNEL_DEVICE)
    dev = lambda t: t.to(KERNEL_DEVICE)  # noqa: E731
    x16, dy16 = x.to(dtype), dy.to(dtype)

    def relative(got, want):
        return ((got.float().cpu() - want).norm() / want.norm()).item()

    y = _kernels().masked_linear(dev(x16), dev(weight), bits, _codebook(codes), dev(bias))
    assert y.dtype == dtype
    assert relative(y, torch.baddbmm(bias, x16.float(), masked.transpose(1, 2))) < 1e-2
    dx = _kernels().masked_linear_input_grad(dev(dy16), dev(weight), bits, _codebook(codes))
    assert dx.dtype == dtype
    assert relative(dx, torch.bmm(dy16.float(), masked)) < 1e-2
    total, selected, _ = _kernels().masked_weight_grad(dev(dy16), dev(x16), bits, _codebook(codes))
    per_sample = torch.bmm(dy16.float().transpose(1, 2), x16.float())
    assert total.dtype == torch.float32
    assert relative(total, per_sample.sum(0)) < 1e-3
    assert relative(selected, (per_sample * index).sum(0)) < 1e-3


def _fused_step(model, tokens, estimator, autocast_dtype=None):
    """Logits and every parameter's gradient of one fused step (autocast on the kernels' device where given)."""
    with torch.autocast(KERNEL_DEVICE, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(tokens, estimator=estimator, implementation="fused", seed=5, tau=0.8)
        loss = estimators.next_token_loss(logits.float(), tokens)
    return logits.detach().float(), torch.autograd.grad(loss, list(model.parameters()))


@needs_kernels
@pytest.mark.parametrize(
    "estimator, autocast_dtype, stacked",
    [("ste", None, True), ("reinmax", torch.bfloat16, True), ("gumbel_rao", None, False)],
    ids=["ste", "reinmax_bf16", "gumbel_rao"],
)
def test_fused_applies_query_key_value_as_one_stacked_layer(monkeypatch, estimator, autocast_dtype, stacked):
    """Where the estimator needs no per-sample noise, fused computes q, k and v as one layer of the three stacked
    (fused.fused_linears), with the logits and gradients of the layers applied one by one."""
    if INTERPRETED and autocast_dtype == torch.bfloat16:
        pytest.skip("Triton's interpreter computes bf16 dots wrongly (relative error ~1e9): checked on CUDA")
    model = estimators.build_model(CONFIGS["odd-k2"], device=KERNEL_DEVICE, seed=3)
    tokens = torch.randint(0, CONFIGS["odd-k2"].vocab_size, (2, 9), device=KERNEL_DEVICE)  # partial tiles still
    results = []
    stacking = fused.fused_linears
    monkeypatch.setattr(fused, "fused_linears", lambda *a: results.append(stacking(*a)) or results[-1])
    if not stacked:  # the forward decides
        model(tokens, estimator=estimator, implementation="fused", seed=5, tau=0.8)
        assert results == [None]
        return
    logits, grads = _fused_step(model, tokens, estimator, autocast_dtype)
    assert len(results) == 1 and results[0] is not None  # odd-k2: one block
    monkeypatch.setattr(fused, "fused_linears", lambda *a: None)  # layer by layer
    want_logits, want_grads = _fused_step(model, tokens, estimator, autocast_dtype)
    tolerance = 1e-5 if autocast_dtype is None else 1e-2
    torch.testing.assert_close(logits, want_logits, rtol=tolerance, atol=tolerance)
    largest = max(want.abs().max().item() for want in want_grads)
    for (name, _), grad, want in zip(model.named_parameters(), grads, want_grads, strict=True):
        scale = max(want.abs().max().item(), 1e-3 * largest)  # as test_equivalence's GRAD_SCALE_FLOOR
        assert (grad.float() - want.float()).abs().max().item() <= tolerance * scale, name


@needs_kernels
def test_fused_runs_the_hooks_of_query_key_value(monkeypatch):
    """A hook on q (or a global one) makes fused apply q, k and v module by module, so that it runs."""
    model = estimators.build_model(CONFIGS["tiny"], device=KERNEL_DEVICE, seed=3)
    tokens = torch.randint(0, CONFIGS["tiny"].vocab_size, (1, 4), device=KERNEL_DEVICE)
    stacked = []
    stacking = fused.fused_linears
    monkeypatch.setattr(fused, "fused_linears", lambda *a: stacked.append(1) or stacking(*a))
    _fused_step(model, tokens, "ste")
    assert len(stacked) == CONFIGS["tiny"].n_layer, "the control: without hooks, every block stacks"
    seen = []
    handle = model.blocks[0].attn.q.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    stacked.clear()
    _fused_step(model, tokens, "ste")
    handle.remove()
    assert seen == [(1, 4, 32)] and len(stacked) == CONFIGS["tiny"].n_layer - 1
    with torch.nn.modules.module.register_module_forward_hook(lambda module, inputs, output: None):
        stacked.clear()
        _fused_step(model, tokens, "ste")
    assert stacked == []


@needs_kernels
@pytest.mark.parametrize("bad", ["none", "nan", "-inf"])
@pytest.mark.parametrize("token_dtype", [torch.int64, torch.int32])
def test_step_values_reduces_the_logits_and_the_ids_and_clamps_the_ids(bad, token_dtype):
    """kernels.step_values: max |logit| over layers of other sizes (NaN and inf kept), the ids' min and max
    (more ids than a block), and the ids clamped into the vocabulary."""
    generator = torch.Generator().manual_seed(0)
    layers = [torch.randn(shape, generator=generator) for shape in [(7, 5, 2), (300, 40, 2), (3, 3, 2)]]
    layers[1][5, 3, 1] = -17.5  # the largest magnitude, negative
    if bad != "none":
        layers[0][1, 1, 0] = float(bad)
    layers = [layer.to(KERNEL_DEVICE) for layer in layers]
    table = torch.tensor([layer.data_ptr() for layer in layers], device=KERNEL_DEVICE)
    numels = torch.tensor([layer.numel() for layer in layers], device=KERNEL_DEVICE)
    tokens = torch.randint(0, 50, (3, 3000), generator=generator)
    tokens[2, 2999], tokens[0, 0] = -4, 77
    safe, values = _kernels().step_values(
        tokens.to(token_dtype).to(KERNEL_DEVICE), 50, table, numels, torch.float32, max(numels.tolist())
    )
    assert safe.dtype == token_dtype and torch.equal(safe.cpu().long(), tokens.clamp(0, 49))
    largest, low, high = step_value_check._read_reductions(values.cpu())  # as StepValueCheck.result reads them
    want = {"none": 17.5, "nan": float("nan"), "-inf": float("inf")}[bad]
    assert largest == want or (np.isnan(want) and np.isnan(largest))
    assert (low, high) == (-4, 77)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the forward's value checks launch a kernel on CUDA only")
def test_on_cuda_the_forwards_value_checks_are_one_kernel(monkeypatch):
    """The model's StepValueCheck takes kernels.step_values, whose values it reads."""
    model = estimators.build_model(CONFIGS["tiny"], device="cuda")
    tokens = torch.randint(0, CONFIGS["tiny"].vocab_size, (2, 8), device="cuda")
    launches = []
    step_values = _kernels().step_values
    monkeypatch.setattr(_kernels(), "step_values", lambda *args: launches.append(1) or step_values(*args))
    model(tokens, estimator="ste", implementation="bmm", seed=0)
    assert launches == [1]
    tokens[1, 3] = CONFIGS["tiny"].vocab_size
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, "):
        model(tokens, estimator="ste", implementation="bmm", seed=0)
    assert launches == [1, 1]


@needs_kernels
def test_masks_side_by_side_are_one_stacked_layers_and_others_are_refused():
    """fused_triton.side_by_side_masks: the masks of layers adjacent in draw_bits_by_layer's output, as one
    layer's; None for layers out of order or apart, a missing mask, and masks that do not end on a byte's end."""
    model = estimators.build_model(CONFIGS["tiny"], device=KERNEL_DEVICE, seed=3)
    samples = range(5, 8)
    drawn = sampler.draw_bits_by_layer(model.stochastic_layers(), 9, samples, {})
    draw = MaskDraw("ste", "fused", 1.0, 9, samples, drawn)
    attention = model.blocks[1].attn
    stacked = fused_triton.side_by_side_masks((attention.q, attention.k, attention.v), draw)
    want = [
        sampler.draw_index(layer.logits, 9, layer.param_id, samples)
        for layer in (attention.q, attention.k, attention.v)
    ]
    assert torch.equal(stacked.cpu(), sampler.pack_bits(torch.cat(want, 1).cpu()))
    assert fused_triton.side_by_side_masks((attention.k, attention.v, attention.o), draw) is not None  # adjacent too
    for layers in [
        (attention.k, attention.q, attention.v),
        (attention.q, attention.v),
        (model.blocks[0].attn.v, attention.q),
    ]:
        assert fused_triton.side_by_side_masks(layers, draw) is None
    missing = MaskDraw(
        "ste", "fused", 1.0, 9, samples, {key: value for key, value in drawn.items() if key != attention.k.param_id}
    )
    assert fused_triton.side_by_side_masks((attention.q, attention.k, attention.v), missing) is None
    odd = ModelConfig(d_model=30, n_head=2, n_layer=1, d_ff=8, vocab_size=11, seq_len=4)  # 900 weights a layer
    model = estimators.build_model(odd, device=KERNEL_DEVICE, seed=3)
    drawn = sampler.draw_bits_by_layer(model.stochastic_layers(), 9, samples, {})
    attention = model.blocks[0].attn
    draw = MaskDraw("ste", "fused", 1.0, 9, samples, drawn)
    assert fused_triton.side_by_side_masks((attention.q, attention.k, attention.v), draw) is None


@needs_kernels
@pytest.mark.parametrize("estimator", ["ste", "gumbel"])
def test_compiled_fused_runs_the_kernels_op_exactly(estimator, monkeypatch):
    """A compiled model's fused layers run estimators::fused_linear on packed masks (the Triton backend's op):
    logits and every gradient are eager's exactly (aot_eager: no reordering of the other layers' arithmetic;
    eager applies q, k, v one by one too, as a compiled model does)."""
    from test_compile_model import EXACT, _check_compiled_matches_eager

    calls = []
    fused_linear = fused.fused_ops.fused_linear

    def spy(*arguments, kernels):
        calls.append(kernels)
        return fused_linear(*arguments, kernels=kernels)

    monkeypatch.setattr(fused.fused_ops, "fused_linear", spy)
    monkeypatch.setattr(fused.Fused, "apply_stacked", lambda self, x, layers, draw: None)
    arguments = {"seeds": [torch.tensor(-3)] * 2, "batch": 2, "backend": "aot_eager", "tolerance": EXACT}
    _check_compiled_matches_eager(CONFIGS["tiny"], KERNEL_DEVICE, estimator, "fused", True, **arguments)
    assert calls and all(calls)
