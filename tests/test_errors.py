"""Arguments to the package's public API: a bad one gets a clear error that names the valid choices, nothing is
clamped or ignored; an odd but valid one (a numpy number, a 0-d integer tensor) is taken as its value.

One parametrised test per kind of bad argument. What is not argument checking (the model's own state, CUDA's
deferred checks, double backward) is in test_hardening.py; the tools' and the suite's arguments in
test_tool_errors.py.
"""

import math

import numpy as np
import pytest
import torch

import estimators
from benchmarks.workload import random_tokens

from conftest import CONFIGS

INF, NAN = math.inf, math.nan
SEED_MESSAGE = r"seed must be an int in \[0, 2\*\*64\)"


@pytest.fixture(scope="module")
def model():
    return estimators.build_model(CONFIGS["tiny"], seed=0)


@pytest.fixture(scope="module")
def tokens():
    return random_tokens(CONFIGS["tiny"], 2, seed=0)[:, :8]


def _estimate_args(shape=(4, 3), dtype=torch.float32):
    return torch.randn(shape, dtype=dtype), torch.rand(shape, dtype=dtype).clamp(1e-4, 1 - 1e-4)


def _noise(shape, dtype=torch.float32):
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)).clamp(1e-3, 1 - 1e-3).to(dtype)


# Names: estimators, implementations, presets.
def test_unknown_estimator_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown estimator 'st'.*'ste', 'reinmax', 'gumbel'"):
        estimators.estimate("st", *_estimate_args())


def test_unknown_estimator_in_model(model, tokens):
    with pytest.raises(ValueError, match=r"unknown estimator 'REINMAX'.*'reinmax'"):
        model(tokens, estimator="REINMAX", implementation="bmm", seed=0)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'big'.*'seed', 'small'"):
        estimators.build_model("big")


def test_unknown_implementation_names_the_choices(model, tokens):
    with pytest.raises(ValueError, match=r"unknown implementation 'bmn'.*'bmm'.*'fused'.*'shared'"):
        model(tokens, estimator="ste", implementation="bmn", seed=0)


def test_current_with_a_batch(model, tokens):
    with pytest.raises(NotImplementedError, match=r"'current'.*batch size 1 only, got 2.*loop, einsum, bmm"):
        model(tokens, estimator="ste", implementation="current", seed=0)


# tau: a finite number > 0, and small enough that (|logits| + noise) / tau stays finite in the logits' dtype.
@pytest.mark.parametrize("entry", ["estimate", "model"])
@pytest.mark.parametrize("tau", [0, 0.0, -1.0, NAN, INF, "1", True])
def test_bad_tau(model, tokens, entry, tau):
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        if entry == "estimate":
            estimators.estimate("ste", *_estimate_args(), tau=tau)
        else:
            model(tokens, estimator="ste", implementation="bmm", seed=0, tau=tau)


# (estimator, dtype, tau, logits): the noise estimators add a Gumbel perturbation (|G| <= 17) before dividing by
# tau and the check allows for it, so their logits are small enough (|logits| <= 1) that logits / tau alone passes.
TAUS_TOO_SMALL = [
    ("reinmax", torch.float32, 1e-45, "randn"),
    ("reinmax", torch.float32, 1e-39, "randn"),
    ("reinmax", torch.float16, 1e-5, "randn"),
    *[
        (name, dtype, tau, "rand")
        for name in ("gumbel", "gumbel_rao")
        for dtype, tau in [(torch.float32, 3e-38), (torch.float32, 3e-39), (torch.float16, 2e-5)]
    ],
]


@pytest.mark.parametrize(("name", "dtype", "tau", "logits"), TAUS_TOO_SMALL)
def test_estimate_refuses_a_tau_too_small_for_its_logits(name, dtype, tau, logits):
    values = torch.randn(8, 2) * 3 if logits == "randn" else torch.rand(8, 2)
    with pytest.raises(ValueError, match="too small"):
        estimators.estimate(name, values.to(dtype), _noise((8, 2), dtype), tau=tau)


@pytest.mark.parametrize("tau", [3e-39, 1e-40])
@pytest.mark.parametrize("estimator", ["gumbel", "gumbel_rao", "ste"])
@pytest.mark.parametrize("implementation", ["bmm", "fused"])
def test_the_model_refuses_a_tau_too_small_for_its_logits(estimator, implementation, tau):
    model = estimators.build_model(CONFIGS["tiny"])
    with pytest.raises(ValueError, match=rf"tau={tau:g} is too small .* use tau >= "):
        model(random_tokens(CONFIGS["tiny"], 2, 0), estimator=estimator, implementation=implementation, seed=0, tau=tau)


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


# estimate's logits and noise.
@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "a row of -inf"])
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_non_finite_logits(name, bad):
    logits = torch.randn(5, 3)
    if bad == "a row of -inf":
        logits[2] = -INF
    else:
        logits[2, 1] = float(bad)
    with pytest.raises(ValueError, match=r"logits must be finite \(no NaN or inf\); mask a category with a large"):
        estimators.estimate(name, logits, _noise((5, 3)))


def test_noise_shape_mismatch():
    logits, _ = _estimate_args()
    with pytest.raises(ValueError, match=r"uniform must have the logits' shape \(4, 3\), got \(4, 2\)"):
        estimators.estimate("ste", logits, torch.rand(4, 2))


def test_noise_dtype_mismatch():
    logits, uniform = _estimate_args()
    with pytest.raises(TypeError, match="uniform must have the logits' dtype torch.float32, got torch.float64"):
        estimators.estimate("ste", logits, uniform.double())


@pytest.mark.parametrize("value", [0.0, 1.0, -0.5])
def test_noise_outside_open_unit_interval(value):
    logits, uniform = _estimate_args()
    uniform[0, 0] = value
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        estimators.estimate("gumbel", logits, uniform)


@pytest.mark.parametrize("which", ["logits", "uniform"])
def test_sparse_logits_or_noise_are_refused(which):
    logits, uniform = _estimate_args()
    arguments = {"logits": logits, "uniform": uniform}
    arguments[which] = arguments[which].to_sparse()
    with pytest.raises(TypeError, match=which + r" must be a dense \(strided\) tensor, got a sparse_coo tensor"):
        estimators.estimate("ste", arguments["logits"], arguments["uniform"])


def test_integer_logits():
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        estimators.estimate("ste", torch.ones(4, 3, dtype=torch.int64), torch.rand(4, 3))


def test_single_category():
    with pytest.raises(ValueError, match="K >= 2 categories"):
        estimators.estimate("ste", *_estimate_args((4, 1)))


def test_packed_masks_need_two_categories():
    with pytest.raises(ValueError, match="packed masks need K = 2 categories, got K = 3"):
        estimators.sampler.draw_bits(torch.zeros(2, 2, 3), 0, 0, [0])


@pytest.mark.parametrize("entry", ["estimate", "model"])
def test_meta_tensors_are_refused(model, entry):
    if entry == "estimate":
        with pytest.raises(ValueError, match="logits must be on a real device, not 'meta'"):
            estimators.estimate("ste", torch.randn(4, 2, device="meta"), torch.rand(4, 2, device="meta"))
    else:
        with pytest.raises(ValueError, match="the model runs on real devices only"):
            model(random_tokens(CONFIGS["tiny"], 1, 0).to("meta"), estimator="ste", implementation="bmm", seed=0)


# Seeds: an int in [0, 2**64) of any integer type, at every entry point that takes one.
# Seeds in [0, 2**64) of every integer type: (seed, the int it is).
GOOD_SEEDS = {
    "uint64_max_tensor": (torch.tensor(2**64 - 1, dtype=torch.uint64), 2**64 - 1),
    "uint64_tensor": (torch.tensor(2**63 + 5, dtype=torch.uint64), 2**63 + 5),
    "uint32_max_tensor": (torch.tensor(2**32 - 1, dtype=torch.uint32), 2**32 - 1),
    "uint16_tensor": (torch.tensor(7, dtype=torch.uint16), 7),
    "uint8_tensor": (torch.tensor(7, dtype=torch.uint8), 7),
    "int8_tensor": (torch.tensor(7, dtype=torch.int8), 7),
    "int16_tensor": (torch.tensor(7, dtype=torch.int16), 7),
    "int32_tensor": (torch.tensor(2**31 - 1, dtype=torch.int32), 2**31 - 1),
    "int64_tensor": (torch.tensor(7), 7),
    "int64_tensor_two_complement": (torch.tensor(-1, dtype=torch.int64), 2**64 - 1),
    "numpy_uint64_max": (np.uint64(2**64 - 1), 2**64 - 1),
    "numpy_0d_uint64": (np.array(2**64 - 1, dtype=np.uint64), 2**64 - 1),
    "numpy_int8": (np.int8(3), 3),
    "int_2_64_minus_1": (2**64 - 1, 2**64 - 1),
}
BAD_SEEDS = {
    "negative": -1,
    "2**64": 2**64,
    "huge": 2**200,
    "huge_negative": -(2**200),
    "float": 1.5,
    "none": None,
    "bool": True,
    "complex": 1j,
    "string": "5",
    "bytes": b"5",
    "list": [5],
    "int32_negative_tensor": torch.tensor(-1, dtype=torch.int32),
    "int8_negative_tensor": torch.tensor(-128, dtype=torch.int8),
    "uint64_vector": torch.tensor([3], dtype=torch.uint64),
    "int64_vector": torch.tensor([5]),
    "int64_matrix": torch.tensor([[5]]),
    "expanded_uint8_tensor": torch.tensor(2, dtype=torch.uint8).expand(2),
    "float_tensor": torch.tensor(5.0),
    "bool_tensor": torch.tensor(True),
    "complex_tensor": torch.tensor(1 + 0j),
    "empty_tensor": torch.tensor([], dtype=torch.int64),
    "numpy_negative": np.int64(-1),
    "numpy_vector": np.array([1, 2]),
    "numpy_float": np.float64(3.0),
    "numpy_bool": np.bool_(True),
}


def _seed_entry_points(seed):
    """Every public entry point taking a seed, as (name, call)."""
    model = estimators.build_model(CONFIGS["tiny"], seed=0)
    tokens = random_tokens(CONFIGS["tiny"], 2, seed=0)[:, :4]
    yield "build_model", lambda: estimators.build_model(CONFIGS["tiny"], seed=seed)
    for implementation in (*estimators.IMPLEMENTATIONS, estimators.FLOOR):
        if implementation == "compiled":
            continue  # bmm's checks, compiled: the forward checks the seed before it runs anything
        rows = tokens[:1] if implementation == "current" else tokens
        yield implementation, lambda i=implementation, r=rows: model(r, estimator="ste", implementation=i, seed=seed)
    yield "noise.uniform", lambda: estimators.noise.uniform(seed, 0, range(2), (3, 2))


@pytest.mark.parametrize("name", GOOD_SEEDS)
def test_seeds_of_every_integer_type_in_range_are_their_value(name):
    seed, value = GOOD_SEEDS[name]
    for entry, call in _seed_entry_points(seed):
        got = call()
        want = dict(_seed_entry_points(value))[entry]()
        if isinstance(got, torch.nn.Module):
            got, want = got.state_dict(), want.state_dict()
            assert all(torch.equal(got[key], want[key]) for key in want), entry
        else:
            assert torch.equal(got, want), entry


@pytest.mark.parametrize("name", BAD_SEEDS)
def test_bad_seeds_raise_the_seed_checks_own_message(name):
    """Never torch's 'value cannot be converted to type int64_t without overflow' or a TypeError."""
    for entry, call in _seed_entry_points(BAD_SEEDS[name]):
        with pytest.raises(ValueError, match=SEED_MESSAGE):
            call()
            pytest.fail(f"{entry} took the seed")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_seed_tensors_on_a_cuda_model():
    """On a CUDA model: an int64 device seed is read by the kernels; a CPU integer tensor is read as its value;
    a device seed of another integer dtype gets the seed check's message (its value would need a sync)."""
    model = estimators.build_model(CONFIGS["tiny"], device="cuda", seed=0)
    tokens = random_tokens(CONFIGS["tiny"], 2, seed=0)[:, :4].cuda()
    want = model(tokens, estimator="ste", implementation="fused", seed=2**64 - 1)
    for seed in (torch.tensor(-1, device="cuda"), torch.tensor(2**64 - 1, dtype=torch.uint64)):
        torch.testing.assert_close(model(tokens, estimator="ste", implementation="fused", seed=seed), want)
    for seed in (torch.tensor(5, dtype=torch.uint64, device="cuda"), torch.tensor(5, dtype=torch.int32, device="cuda")):
        with pytest.raises(ValueError, match=SEED_MESSAGE):
            model(tokens, estimator="ste", implementation="fused", seed=seed)


@pytest.mark.parametrize("offset", [-1, 2**32, 0.5, 1.0, np.float32(2), True, "0"])
def test_bad_sample_offset(model, tokens, offset):
    with pytest.raises(ValueError, match=r"sample_offset must be an int in \[0, 2\*\*32 - batch\], got"):
        model(tokens, estimator="ste", implementation="bmm", seed=0, sample_offset=offset)


def test_data_parallel_offset_refuses_ranks_past_the_sample_counter():
    assert estimators.data_parallel_offset(2**31, rank=1) == 2**31
    for local_batch, rank in [(2**31, 3), (2**31, 2), (1, 2**32)]:
        with pytest.raises(ValueError, match="2\\*\\*32"):
            estimators.data_parallel_offset(local_batch, rank=rank)


def test_numpy_numbers_are_accepted_everywhere():
    """numpy numbers are numbers: the configuration, the seeds, tau and the sample offset take them as values."""
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
    same = estimators.build_model(config, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True))
    tokens = random_tokens(config, 2, seed=0)
    logits = model(
        tokens, estimator="ste", implementation="bmm", seed=np.int64(5), tau=np.float32(0.5), sample_offset=np.int64(4)
    )
    again = model(tokens, estimator="ste", implementation="bmm", seed=5, tau=0.5, sample_offset=4)
    assert torch.equal(logits, again)
    logits, uniform = torch.randn(3, 2), _noise((3, 2))
    got = estimators.estimate("gumbel", logits, uniform, tau=np.float64(2.0))
    assert torch.equal(got, estimators.estimate("gumbel", logits, uniform, tau=2.0))


# Model configurations: sizes are integers >= 1 that fit together, codebooks finite numbers in float32.
@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(d_model=True), ValueError, "d_model must be a positive int"),
        (dict(d_model=32.0), ValueError, "d_model must be a positive int"),
        (dict(d_model=30, n_head=4), ValueError, "divisible by n_head"),
        (dict(seq_len=0), ValueError, "seq_len must be a positive int"),
        (dict(vocab_size=0), ValueError, "vocab_size must be a positive int"),
        (dict(num_categories=2.5), ValueError, r"num_categories must lie in \[2, 255\]"),
        (dict(num_categories=1), ValueError, r"num_categories must lie in \[2, 255\]"),
        (dict(codebook="01"), TypeError, "codebook must be a sequence"),
        (dict(codebook=(0.0, NAN)), ValueError, "finite"),
        (dict(codebook=(0.0, INF)), ValueError, "finite"),
        (dict(codebook=(0.0, "1")), ValueError, "finite"),
        (dict(codebook=(1e308, -1e308)), ValueError, "finite in float32"),
        (dict(codebook=(0.0, 3.5e38)), ValueError, "finite in float32"),
        (dict(codebook=(0.0, True)), ValueError, "finite"),
        (dict(codebook=(0.0,)), ValueError, "codebook needs num_categories=2 values, got 1"),
        (dict(codebook=(0.0, 0.5, 1.0)), ValueError, "codebook needs num_categories=2 values, got 3"),
    ],
)
def test_bad_model_configurations_are_refused(change, error, match):
    sizes = dict(d_model=32, n_head=2, n_layer=1, d_ff=16, vocab_size=20, seq_len=8) | change
    with pytest.raises(error, match=match):
        estimators.ModelConfig(**sizes)


# Devices.
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


# Tokens.
@pytest.mark.parametrize("bad", [-1, 50, 1000])
def test_token_ids_out_of_range(model, tokens, bad):
    tokens = tokens.clone()
    tokens[1, 3] = bad
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 50\)"):
        model(tokens, estimator="ste", implementation="bmm", seed=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int16, torch.uint8])
def test_wrong_token_dtype(model, tokens, dtype):
    with pytest.raises(TypeError, match="tokens must be a torch.int64 or torch.int32 tensor"):
        model(tokens.to(dtype), estimator="ste", implementation="bmm", seed=0)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr"])
def test_sparse_tokens_are_refused(model, tokens, layout):
    sparse = tokens.to_sparse() if layout == "sparse_coo" else tokens.to_sparse_csr()
    with pytest.raises(TypeError, match=rf"tokens must be a dense \(strided\) tensor, got a {layout} tensor"):
        model(sparse, estimator="ste", implementation="bmm", seed=0)


def test_tokens_not_a_tensor(model):
    with pytest.raises(TypeError, match="tokens must be a torch.int64 or torch.int32 tensor, got list"):
        model([[1, 2]], estimator="ste", implementation="bmm", seed=0)


@pytest.mark.parametrize("shape", [(8,), (1, 2, 8)])
def test_wrong_token_rank(model, shape):
    with pytest.raises(ValueError, match=r"tokens must have rank 2 \[batch, time\]"):
        model(torch.zeros(shape, dtype=torch.int64), estimator="ste", implementation="bmm", seed=0)


@pytest.mark.parametrize("shape", [(1, 17), (0, 4), (1, 0)])
def test_token_length_beyond_the_model(model, shape):
    with pytest.raises(ValueError, match=r"tokens must be \[batch >= 1, 1 <= time <= 16\]"):
        model(torch.zeros(shape, dtype=torch.int64), estimator="ste", implementation="bmm", seed=0)


def test_int32_tokens_are_accepted(model, tokens):
    out = model(tokens.int(), estimator="ste", implementation="bmm", seed=0)
    assert torch.equal(out, model(tokens, estimator="ste", implementation="bmm", seed=0))


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
