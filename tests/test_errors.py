"""Bad input gets a clear error that names the valid choices; nothing is clamped or ignored."""

import math

import numpy as np
import pytest
import torch

import estimators
from benchmarks.workload import random_tokens

from conftest import CONFIGS


@pytest.fixture(scope="module")
def model():
    return estimators.build_model(CONFIGS["tiny"], seed=0)


@pytest.fixture(scope="module")
def tokens():
    return random_tokens(CONFIGS["tiny"], 2, seed=0)[:, :8]


def _estimate_args(shape=(4, 3), dtype=torch.float32):
    return torch.randn(shape, dtype=dtype), torch.rand(shape, dtype=dtype).clamp(1e-4, 1 - 1e-4)


def test_unknown_estimator_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown estimator 'st'.*'ste', 'reinmax', 'gumbel'"):
        estimators.estimate("st", *_estimate_args())


@pytest.mark.parametrize("tau", [0, -1.0, math.nan, math.inf, "1", True])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        estimators.estimate("ste", *_estimate_args(), tau=tau)


def test_nan_logits():
    logits, uniform = _estimate_args()
    logits[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"logits must be finite \(no NaN or inf\)"):
        estimators.estimate("reinmax", logits, uniform)


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


def test_integer_logits():
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        estimators.estimate("ste", torch.ones(4, 3, dtype=torch.int64), torch.rand(4, 3))


def test_single_category():
    with pytest.raises(ValueError, match="K >= 2 categories"):
        estimators.estimate("ste", *_estimate_args((4, 1)))


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'big'.*'seed', 'small'"):
        estimators.build_model("big")


def test_unknown_implementation_names_the_choices(model, tokens):
    with pytest.raises(ValueError, match=r"unknown implementation 'bmn'.*'bmm'.*'fused'.*'shared'"):
        model(tokens, estimator="ste", implementation="bmn", seed=0)


def test_unknown_estimator_in_model(model, tokens):
    with pytest.raises(ValueError, match=r"unknown estimator 'REINMAX'.*'reinmax'"):
        model(tokens, estimator="REINMAX", implementation="bmm", seed=0)


def test_model_tau(model, tokens):
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        model(tokens, estimator="ste", implementation="bmm", seed=0, tau=0.0)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, None])
def test_bad_seed(model, tokens, seed):
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\)"):
        model(tokens, estimator="ste", implementation="bmm", seed=seed)


SEED_MESSAGE = r"seed must be an int in \[0, 2\*\*64\)"
# Seeds in [0, 2**64) of every integer type: (seed, the int it is).
GOOD_ODD_SEEDS = {
    "uint64_max_tensor": (torch.tensor(2**64 - 1, dtype=torch.uint64), 2**64 - 1),
    "uint64_tensor": (torch.tensor(2**63 + 5, dtype=torch.uint64), 2**63 + 5),
    "uint32_max_tensor": (torch.tensor(2**32 - 1, dtype=torch.uint32), 2**32 - 1),
    "uint16_tensor": (torch.tensor(7, dtype=torch.uint16), 7),
    "int8_tensor": (torch.tensor(7, dtype=torch.int8), 7),
    "int32_tensor": (torch.tensor(2**31 - 1, dtype=torch.int32), 2**31 - 1),
    "int64_tensor_two_complement": (torch.tensor(-1, dtype=torch.int64), 2**64 - 1),
    "numpy_uint64_max": (np.uint64(2**64 - 1), 2**64 - 1),
    "numpy_0d_uint64": (np.array(2**64 - 1, dtype=np.uint64), 2**64 - 1),
    "numpy_int8": (np.int8(3), 3),
    "int_2_64_minus_1": (2**64 - 1, 2**64 - 1),
}
BAD_ODD_SEEDS = {
    "int32_negative_tensor": torch.tensor(-1, dtype=torch.int32),
    "int8_negative_tensor": torch.tensor(-128, dtype=torch.int8),
    "uint64_vector": torch.tensor([3], dtype=torch.uint64),
    "float_tensor": torch.tensor(5.0),
    "bool_tensor": torch.tensor(True),
    "complex_tensor": torch.tensor(1 + 0j),
    "empty_tensor": torch.tensor([], dtype=torch.int64),
    "numpy_negative": np.int64(-1),
    "numpy_vector": np.array([1, 2]),
    "numpy_float": np.float64(3.0),
    "numpy_bool": np.bool_(True),
    "huge": 2**200,
    "huge_negative": -(2**200),
    "2**64": 2**64,
    "complex": 1j,
    "string": "5",
    "bytes": b"5",
    "list": [5],
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


@pytest.mark.parametrize("name", GOOD_ODD_SEEDS)
def test_seeds_of_every_integer_type_in_range_are_their_value(name):
    seed, value = GOOD_ODD_SEEDS[name]
    for entry, call in _seed_entry_points(seed):
        got = call()
        want = dict(_seed_entry_points(value))[entry]()
        if isinstance(got, torch.nn.Module):
            got, want = got.state_dict(), want.state_dict()
            assert all(torch.equal(got[key], want[key]) for key in want), entry
        else:
            assert torch.equal(got, want), entry


@pytest.mark.parametrize("name", BAD_ODD_SEEDS)
def test_bad_seeds_raise_the_seed_checks_own_message(name):
    """Never torch's 'value cannot be converted to type int64_t without overflow' or a TypeError."""
    for _entry, call in _seed_entry_points(BAD_ODD_SEEDS[name]):
        with pytest.raises(ValueError, match=SEED_MESSAGE):
            call()


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


def test_current_with_a_batch(model, tokens):
    with pytest.raises(NotImplementedError, match=r"'current'.*batch size 1 only, got 2.*loop, einsum, bmm"):
        model(tokens, estimator="ste", implementation="current", seed=0)


@pytest.mark.parametrize("offset", [-1, 2**32, 0.5])
def test_bad_sample_offset(model, tokens, offset):
    with pytest.raises(ValueError, match="sample_offset must be an int"):
        model(tokens, estimator="ste", implementation="bmm", seed=0, sample_offset=offset)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_model=30, n_head=4), "divisible by n_head"),
        (dict(num_categories=1), r"num_categories must lie in \[2, 255\]"),
        (dict(codebook=(0.0, 0.5, 1.0)), "codebook needs num_categories=2 values, got 3"),
        (dict(vocab_size=0), "vocab_size must be a positive int"),
    ],
)
def test_bad_config(kwargs, message):
    base = dict(d_model=32, n_head=2, n_layer=1, d_ff=64, vocab_size=50, seq_len=16)
    with pytest.raises(ValueError, match=message):
        estimators.ModelConfig(**{**base, **kwargs})


def test_packed_masks_need_two_categories():
    with pytest.raises(ValueError, match="packed masks need K = 2 categories, got K = 3"):
        estimators.sampler.draw_bits(torch.zeros(2, 2, 3), 0, 0, [0])


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
