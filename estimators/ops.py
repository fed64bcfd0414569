"""The mask sampler as torch custom operators, opaque to ``torch.compile``.

The sampler hashes 32-bit integers (numpy on the CPU, Triton kernels on CUDA), which dynamo cannot
trace: uint32 arithmetic has no fake-tensor kernels and numpy calls end the graph. Registered as
``torch.library.custom_op``\\ s with fake implementations (the output's shape and dtype only), a
compiled model calls them as single graph nodes and runs the eager sampler inside, so its masks
and noise are bit for bit the eager ones.

    estimators::draw_index(logits, seed, param, first_sample, count) -> uint8 [count, *logits.shape[:-1]]
    estimators::draw_bits(logits, seed, param, first_sample, count)  -> uint8 [count, ceil(W / 8)]  (K = 2)
    estimators::uniform(logits, seed, param, first_sample, count)    -> float32 [count, *logits.shape]

``logits``: the layer's mask logits (read, never differentiated: pass them detached); ``seed``: a 0-d
int64 tensor holding the seed's 64 bits (two's complement), on the CPU (read there) or on the logits'
CUDA device (the kernels read it when they run, as a CUDA graph needs); ``param``: the layer's
``param_id``; samples ``first_sample .. first_sample + count - 1``. The Python functions of the same
names take a ``noise.Seed`` (an int or such a tensor) and a ``range`` of samples.

    estimators::checked_tokens(tokens, mask_logits, vocab_size, tau, margin, codebooks, codebook_names)
        -> a copy of tokens

runs a forward pass's value checks (``step_value_check.StepValueCheck``), which read tensors on the host: as
graph breaks they would split a compiled model and stop ``fullgraph=True``.
"""

from __future__ import annotations

import torch

from . import _checks, noise, sampler, step_value_check

_INT64_LIMIT = 2**63


def seed_tensor(seed: noise.Seed) -> torch.Tensor:
    """``seed`` as the ops take it: a tensor seed as it is, an int in [0, 2**64) as a 0-d int64 CPU tensor."""
    if isinstance(seed, torch.Tensor):
        return seed
    return torch.tensor(seed - 2**64 if seed >= _INT64_LIMIT else seed, dtype=torch.int64)


def check_seed(seed: object, device: torch.device | str) -> noise.Seed:
    """``_checks.check_seed`` for a compiled forward: a 0-d int64 CPU tensor stays a tensor, a graph input that
    the ops read where they run, so a compiled model draws a new seed's masks without recompiling (reading it
    in the graph would break the graph; an int seed is a constant of the graph, recompiled for each value)."""
    if isinstance(seed, torch.Tensor) and seed.device.type == "cpu" and seed.dim() == 0 and seed.dtype == torch.int64:
        return seed
    return _checks.check_seed(seed, device)


def _seed(seed: torch.Tensor) -> noise.Seed:
    """The sampler's seed: a CPU tensor's value as an int in [0, 2**64); a device tensor as it is."""
    if seed.device.type == "cpu":
        return int(seed.item()) & (2**64 - 1)
    return seed


@torch.library.custom_op("estimators::draw_index", mutates_args=())
def _draw_index(logits: torch.Tensor, seed: torch.Tensor, param: int, first_sample: int, count: int) -> torch.Tensor:
    return sampler.draw_index(logits, _seed(seed), param, range(first_sample, first_sample + count))


@_draw_index.register_fake
def _(logits, seed, param, first_sample, count):
    return logits.new_empty((count, *logits.shape[:-1]), dtype=torch.uint8)


@torch.library.custom_op("estimators::draw_bits", mutates_args=())
def _draw_bits(logits: torch.Tensor, seed: torch.Tensor, param: int, first_sample: int, count: int) -> torch.Tensor:
    return sampler.draw_bits(logits, _seed(seed), param, range(first_sample, first_sample + count))


@_draw_bits.register_fake
def _(logits, seed, param, first_sample, count):
    torch._check(logits.shape[-1] == 2, lambda: f"packed masks need K = 2 categories, got K = {logits.shape[-1]}")
    weights = logits.numel() // 2
    return logits.new_empty((count, (weights + 7) // 8), dtype=torch.uint8)


@torch.library.custom_op("estimators::uniform", mutates_args=())
def _uniform(logits: torch.Tensor, seed: torch.Tensor, param: int, first_sample: int, count: int) -> torch.Tensor:
    samples = range(first_sample, first_sample + count)
    return sampler.uniform(_seed(seed), param, samples, logits.shape, logits.device)


@_uniform.register_fake
def _(logits, seed, param, first_sample, count):
    return logits.new_empty((count, *logits.shape), dtype=torch.float32)


@torch.library.custom_op("estimators::checked_tokens", mutates_args=())
def _checked_tokens(
    tokens: torch.Tensor,
    mask_logits: list[torch.Tensor],
    vocab_size: int,
    tau: float,
    margin: float,
    codebooks: list[torch.Tensor],
    codebook_names: str,
) -> torch.Tensor:
    names = codebook_names.split(",") if codebook_names else []
    check = step_value_check.StepValueCheck(
        tokens, vocab_size, mask_logits, tau, margin, codebooks=dict(zip(names, codebooks, strict=True))
    )
    check.result()
    return check.safe_tokens.clone()


@_checked_tokens.register_fake
def _(tokens, mask_logits, vocab_size, tau, margin, codebooks, codebook_names):
    return torch.empty_like(tokens)


class StepValueCheck:
    """``step_value_check.StepValueCheck`` as one graph node, ``estimators::checked_tokens``, for a compiled forward.

    The same checks, run (and raised) where the node runs; ``safe_tokens`` is the node's output, a copy of
    the tokens (clamped into the vocabulary on CUDA), which the pass must embed so that the node stays in
    the graph. On CUDA the host waits there for the device to reach the checks.
    """

    def __init__(self, tokens, vocab_size, mask_logits, tau, margin, tables=None, codebooks=None):
        logits = [layer_logits.detach() for layer_logits in mask_logits]
        codebooks = codebooks or {}
        # The layers' names as one string: a custom op takes no list of strings (module names hold no comma).
        names = ",".join(codebooks)
        values = [codebook.detach() for codebook in codebooks.values()]
        self.safe_tokens = _checked_tokens(tokens, logits, vocab_size, tau, margin, values, names)

    def result(self) -> None:
        """Nothing left to read: the node has checked."""


def _check_samples(samples: range) -> range:
    if not isinstance(samples, range) or samples.step != 1:
        raise ValueError(f"samples must be a range of consecutive sample indices, got {samples!r}")
    return samples


def draw_index(logits: torch.Tensor, seed: noise.Seed, param: int, samples: range) -> torch.Tensor:
    """``sampler.draw_index`` through ``estimators::draw_index``: uint8 [len(samples), *logits.shape[:-1]]."""
    samples = _check_samples(samples)
    return _draw_index(logits.detach(), seed_tensor(seed), param, samples.start, len(samples))


def draw_bits(logits: torch.Tensor, seed: noise.Seed, param: int, samples: range) -> torch.Tensor:
    """``sampler.draw_bits`` through ``estimators::draw_bits``: uint8 [len(samples), ceil(W / 8)] (K = 2)."""
    samples = _check_samples(samples)
    if logits.shape[-1] != 2:
        raise ValueError(f"packed masks need K = 2 categories, got K = {logits.shape[-1]}")
    return _draw_bits(logits.detach(), seed_tensor(seed), param, samples.start, len(samples))


def uniform(logits: torch.Tensor, seed: noise.Seed, param: int, samples: range) -> torch.Tensor:
    """``sampler.uniform`` of the logits' shape and device through ``estimators::uniform``: float32
    [len(samples), *logits.shape]."""
    samples = _check_samples(samples)
    return _uniform(logits.detach(), seed_tensor(seed), param, samples.start, len(samples))
