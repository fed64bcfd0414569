"""Shared fixtures: devices, model configurations, and TF32 off everywhere."""

import os

import pytest
import torch

from estimators import ModelConfig

# Small models that still exercise every code path: several layers, partial
# kernel tiles (sizes that are not multiples of the block sizes), K = 3, and a
# K = 2 codebook whose "drop" value is not zero.
CONFIGS = {
    "tiny": ModelConfig(d_model=32, n_head=2, n_layer=2, d_ff=64, vocab_size=50, seq_len=16),
    "odd-k2": ModelConfig(d_model=72, n_head=3, n_layer=1, d_ff=40, vocab_size=33, seq_len=37, codebook=(0.25, 1.0)),
    "k3": ModelConfig(
        d_model=48,
        n_head=3,
        n_layer=1,
        d_ff=80,
        vocab_size=70,
        seq_len=24,
        num_categories=3,
        codebook=(0.0, 0.5, 1.0),
    ),
}

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]


if os.environ.get("PYTEST_XDIST_WORKER"):  # make test runs two workers on two cores: one thread each
    torch.set_num_threads(1)


def pythonpath_first(folder) -> str:
    """PYTHONPATH for a child process: ``folder`` first, then this process's PYTHONPATH (on a GPU host the
    offline wheels' site directory, where asv and pytest live, is named there)."""
    return os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 tolerances assume IEEE fp32 matmuls: keep TF32 off."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
