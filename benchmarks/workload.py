"""What a training step runs on: the preset's model and a batch of token ids.

The tests and the report draw their tokens from ``random_tokens`` too, so a
figure, a test and a live check see the same batches.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

import estimators

from .dense import build_dense
from .environment import DEVICE, PRESET

_prebuilt_cpu_model = None


def random_tokens(config, batch: int, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Token ids [batch, config.seq_len], uniform over the vocabulary, drawn on the CPU from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, config.seq_len), generator=generator).to(device)


def preset_config(width: int | None = None):
    """This machine's preset at this commit; NotImplementedError (asv: n/a) where the commit lacks it.

    ``width``: the same architecture with d_model = width and d_ff = 4 width (the width benchmark's models).
    """
    if PRESET not in getattr(estimators, "PRESETS", {}):
        raise NotImplementedError(f"preset {PRESET!r} does not exist at this commit")
    config = estimators.PRESETS[PRESET]
    return config if width is None else dataclasses.replace(config, d_model=width, d_ff=4 * width)


def tokens(batch: int) -> torch.Tensor:
    """The suite's batch of ``batch`` rows on this machine's device (seeded by its size)."""
    return random_tokens(preset_config(), batch, seed=batch, device=DEVICE)


def _build_cpu_model():
    try:
        return estimators.build_model(PRESET, device="cpu", seed=0)
    except Exception as error:  # a commit without this preset or API: setup says n/a
        return error


def prebuild_cpu_model() -> None:
    """Build the model before asv forks (``forkserver.prepare``): every process copies it instead."""
    global _prebuilt_cpu_model
    _prebuilt_cpu_model = _build_cpu_model()


@functools.cache
def model(width: int | None = None):
    """The preset's model (at ``width``, see ``preset_config``) on this machine's device, built once per process."""
    if width is not None:
        return estimators.build_model(preset_config(width), device="cpu", seed=0).to(DEVICE)
    built = _build_cpu_model() if _prebuilt_cpu_model is None else _prebuilt_cpu_model
    if isinstance(built, Exception):
        raise NotImplementedError(f"preset {PRESET!r} cannot be built at this commit: {built!r}")
    return built.to(DEVICE)


@functools.cache
def dense_model(width: int | None = None):
    """The preset's architecture (at ``width``) without masks (benchmarks/dense.py) on this machine's device."""
    return build_dense(preset_config(width), seed=0).to(DEVICE)
