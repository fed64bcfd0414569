"""What an implementation is given and what it offers the model: ``MaskDraw`` and ``Implementation``."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .. import noise, ops, sampler
from ..gradients import NEEDS_UNIFORM


@dataclass(frozen=True)
class MaskDraw:
    """What one forward pass draws: estimator, temperature, seed and the sample index of each row.

    ``implementation`` is the name the model was called with (see ``implementations.lookup``).
    ``seed`` is a ``noise.Seed``: an int, or an int64 tensor on the device that the kernels read when
    they run; it must hold its value until the pass's backward has run (the model passes a snapshot).
    ``drawn`` holds masks drawn ahead for several layers (``Implementation.draw_ahead``; for ``fused``
    packed bits by ``param_id`` from ``sampler.draw_bits_by_layer``); a layer not in it draws its own.

    Example::

        >>> draw = MaskDraw("ste", "bmm", tau=1.0, seed=1234, samples=range(4))
        >>> draw.index(layer).shape  # [4, out, in]
    """

    estimator: str
    implementation: str
    tau: float
    seed: noise.Seed
    samples: range
    drawn: dict = field(default_factory=dict, compare=False, repr=False)

    def index(self, layer) -> torch.Tensor:
        """uint8 [B, out, in]: the sampled category of every weight, for each row (inside a compiled model
        through the custom op ``estimators::draw_index``, which computes the same bits)."""
        if torch.compiler.is_compiling():
            return ops.draw_index(layer.logits, self.seed, layer.param_id, self.samples)
        return sampler.draw_index(layer.logits, self.seed, layer.param_id, self.samples)

    def uniform(self, layer) -> torch.Tensor | None:
        """The noise U [B, out, in, K], if the estimator's backward needs it; else None (inside a compiled
        model through ``estimators::uniform``)."""
        if not NEEDS_UNIFORM[self.estimator]:
            return None
        if torch.compiler.is_compiling():
            return ops.uniform(layer.logits, self.seed, layer.param_id, self.samples)
        return sampler.uniform(self.seed, layer.param_id, self.samples, layer.logits.shape, layer.logits.device)


class Implementation(abc.ABC):
    """One way to apply a stochastic linear layer to a batch: the model calls nothing else of it.

    A layer (``StochasticLinear``) has weight W ``[out, in]``, bias ``[out]``, mask logits theta
    ``[out, in, K]``, a codebook c ``[K]`` and its noise stream ``param_id``. For row b of the batch
    an implementation computes y_b = x_b (W * m_b)^T + bias with m_b = D_b . c, D_b the sample of
    ``draw.samples[b]`` drawn through ``draw`` (from the one shared sampler), and gives x, W, bias
    and theta their gradients, theta's through ``draw.estimator``. Implementations differ only in
    how they apply and differentiate the masks, never in which masks they draw.

    A subclass sets ``name`` and defines ``apply``; the other methods have defaults that suit an
    implementation applying each layer on its own.

    Example::

        >>> class Renamed(Implementation):
        ...     name = "bmm_again"
        ...
        ...     def apply(self, x, layer, draw):
        ...         return implementations.lookup("bmm").apply(x, layer, draw)
        >>> implementations.register(Renamed())
        >>> logits = model(tokens, estimator="ste", implementation="bmm_again", seed=0)
    """

    name: str  # what ``model(..., implementation=name)`` names

    def check_batch(self, batch: int) -> None:
        """Raise where this implementation cannot run a batch of ``batch`` rows; by default every batch runs.

        Args:
            batch: the number of rows B of the model's input.

        Raises:
            NotImplementedError: where the batch size is not supported, naming the implementations that run it.

        Example::

            >>> implementations.lookup("bmm").check_batch(8)  # returns None
        """
        return None

    def draw_ahead(self, layers: Sequence, seed: noise.Seed, samples: range, tables: dict) -> dict[int, torch.Tensor]:
        """Masks the implementation draws for many layers at once, before the forward pass runs them.

        The model calls it once a pass with all its stochastic layers and passes what it returns to
        every layer as ``MaskDraw.drawn``. By default nothing is drawn ahead: ``{}``.

        Args:
            layers: the model's ``StochasticLinear`` layers, in their order.
            seed: the pass's seed (an int, or an int64 tensor on the device).
            samples: the rows' sample indices, consecutive.
            tables: the model's cache of device tables (see ``sampler.draw_bits_by_layer``), which
                outlives the pass.

        Returns:
            masks by ``param_id``, in the form ``apply`` reads them; ``{}`` for none.

        Example::

            >>> implementations.lookup("bmm").draw_ahead(model.stochastic_layers(), 0, range(4), {})
            {}
        """
        return {}

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, layer, draw: MaskDraw) -> torch.Tensor:
        """y ``[B, T, out]`` of ``layer`` on x ``[B, T, in]``, row b with the mask of sample ``draw.samples[b]``.

        Args:
            x: activations ``[B, T, in]``.
            layer: a ``StochasticLinear`` (weight, bias, logits, codebook, param_id).
            draw: the forward pass's ``MaskDraw``.

        Returns:
            y ``[B, T, out]``, differentiable in x and the layer's parameters.

        Example::

            >>> draw = MaskDraw("ste", "bmm", tau=1.0, seed=0, samples=range(2))
            >>> y = implementations.lookup("bmm").apply(torch.randn(2, 16, layer.weight.shape[1]), layer, draw)
        """

    def apply_stacked(self, x: torch.Tensor, layers: Sequence, draw: MaskDraw) -> torch.Tensor | None:
        """Several layers of one input at once: ``[apply(x, layer, draw) for layer in layers]`` concatenated
        along the last axis, or None where the implementation has no such path (the default).

        The model offers it the layers of one input (the attention's q, k and v) where calling them
        as modules would run nothing but their forward; on None it applies them one by one. A result
        must be what applying them one by one gives, up to the order of floating-point sums.

        Args:
            x: activations ``[B, T, in]``, the input of every layer.
            layers: ``StochasticLinear`` layers of one input width.
            draw: the forward pass's ``MaskDraw``.

        Returns:
            y ``[B, T, sum of the layers' out]``, or None.

        Example::

            >>> y = implementations.lookup("fused").apply_stacked(x, (attention.q, attention.k, attention.v), draw)
            >>> q, k, v = y.split(attention.q.weight.shape[0], -1) if y is not None else ...
        """
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} implementation {self.name!r}>"
