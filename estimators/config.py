"""Model configurations and the named presets.

Presets are frozen once released: benchmarks compare them across commits.
Add a new preset rather than edit one.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _checks


@dataclass(frozen=True)
class ModelConfig:
    """A stochastic transformer: ``n_layer`` pre-LayerNorm blocks of width ``d_model``.

    ``codebook`` holds the value c_k of each of the K categories of a weight's
    mask (m = D . c); by default c = linspace(0, 1, K), i.e. (0, 1) for K = 2:
    a learned keep/drop mask per weight.
    """

    d_model: int
    n_head: int
    n_layer: int
    d_ff: int
    vocab_size: int
    seq_len: int
    num_categories: int = 2
    codebook: tuple[float, ...] | None = None

    def __post_init__(self):
        """Sizes are integers (Python or numpy, not bool) >= 1, stored as int; the codebook as floats."""
        for name in ("d_model", "n_head", "n_layer", "d_ff", "vocab_size", "seq_len"):
            value = getattr(self, name)
            object.__setattr__(self, name, _integer(value, 1, None, f"{name} must be a positive int, got {value!r}"))
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        k = self.num_categories
        object.__setattr__(
            self, "num_categories", _integer(k, 2, 255, f"num_categories must lie in [2, 255], got {k!r}")
        )
        if self.codebook is not None:
            object.__setattr__(self, "codebook", _checks.check_codebook(self.codebook, self.num_categories))

    @property
    def codebook_values(self) -> tuple[float, ...]:
        if self.codebook is not None:
            return tuple(float(c) for c in self.codebook)
        k = self.num_categories
        return tuple(i / (k - 1) for i in range(k))


def _integer(value: object, low: int, high: int | None, message: str) -> int:
    """``value`` as an int (Python or numpy, not bool) in [low, high], else ValueError(message)."""
    try:
        return _checks.check_int("value", value, low, high)
    except (TypeError, ValueError):
        raise ValueError(message) from None


PRESETS: dict[str, ModelConfig] = {
    # The reference run's model: 12 d_model^2 per-sample weights (12 MiB fp32 a sample).
    "seed": ModelConfig(d_model=512, n_head=8, n_layer=3, d_ff=2048, vocab_size=4096, seq_len=128),
    # The whole benchmark matrix on a 2-core CPU in minutes.
    "small": ModelConfig(d_model=256, n_head=4, n_layer=2, d_ff=1024, vocab_size=1024, seq_len=64),
}
