"""Ways to apply per-sample stochastic weights to a batch, one ``Implementation`` object per name.

A stochastic linear layer has weight W [out, in], bias [out], logits theta
[out, in, K] and a codebook c [K]. For sample b (a row of the batch):
D_b = estimator(theta, U_b), m_b = D_b . c, W_b = W * m_b, y_b = x_b W_b^T + bias.

Every implementation gets its masks from ``MaskDraw``, which draws them from
the one shared sampler, so all of them compute the same function and differ
only in how the per-sample weights are applied and differentiated:

- ``current``: the single-sample path (batch 1 only), the speedup baseline;
- ``loop``, ``einsum``, ``bmm``, ``vmap``: materialise W_b for every sample (``materialised``);
- ``fused``: never materialises W_b (``fused``, with its backends ``fused_triton`` and ``fused_torch``);
- ``compiled``: ``torch.compile`` of the ``bmm`` path.

``FLOOR`` ("shared", ``floor``) is not an implementation of the per-sample layer: every
row uses the mask of the batch's first sample, the cost floor that per-sample
discreteness is measured against. It is an ``Implementation`` object all the same.

The model looks an implementation up by name (``lookup``) and calls only the ``Implementation``
interface (``base``). ``register`` adds one under a new name, ``unregister`` takes it away again.
"""

from __future__ import annotations

from .. import _checks
from .base import Implementation, MaskDraw
from .floor import Shared
from .fused import Fused
from .materialised import (
    COMPILED_GRAPH_LIMIT,
    Bmm,
    Compiled,
    Current,
    Einsum,
    Loop,
    Vmap,
    masked_bmm,
    masked_weight,
)

__all__ = [
    "COMPILED_GRAPH_LIMIT",
    "FLOOR",
    "IMPLEMENTATIONS",
    "Implementation",
    "MaskDraw",
    "lookup",
    "masked_bmm",
    "masked_weight",
    "register",
    "unregister",
]

_BATCHED = (Loop(), Einsum(), Bmm(), Vmap(), Fused(), Compiled())
_BUILT_IN = (Current(batched=[implementation.name for implementation in _BATCHED]), *_BATCHED)

IMPLEMENTATIONS = tuple(implementation.name for implementation in _BUILT_IN)
FLOOR = Shared.name

_REGISTRY: dict[str, Implementation] = {implementation.name: implementation for implementation in _BUILT_IN}
_REGISTRY[FLOOR] = Shared()


def lookup(name: str) -> Implementation:
    """The implementation registered as ``name``: one of ``IMPLEMENTATIONS``, ``FLOOR``, or one ``register`` added.

    Args:
        name: what ``model(..., implementation=name)`` names.

    Returns:
        the ``Implementation`` object.

    Raises:
        ValueError: for any other name (or a non-str), naming the valid choices.

    Example::

        >>> lookup("bmm")
        <Bmm implementation 'bmm'>
    """
    implementation = _REGISTRY.get(name) if isinstance(name, str) else None
    if implementation is None:
        _checks.check_choice("implementation", name, _REGISTRY)
    return implementation


def register(implementation: Implementation) -> Implementation:
    """Make ``implementation`` available to the model as ``implementation.name``.

    It joins the names ``lookup`` accepts and lists, not ``IMPLEMENTATIONS`` (the built-in ones, which the
    benchmarks and tests run).

    Args:
        implementation: an ``Implementation`` instance whose ``name`` is a str not yet registered.

    Returns:
        ``implementation``.

    Raises:
        TypeError: for anything but an ``Implementation`` with a str ``name``.
        ValueError: where the name is registered already, naming those registered.

    Example::

        >>> class Renamed(Implementation):
        ...     name = "bmm_again"
        ...
        ...     def apply(self, x, layer, draw):
        ...         return lookup("bmm").apply(x, layer, draw)
        >>> register(Renamed())
        >>> logits = model(tokens, estimator="ste", implementation="bmm_again", seed=0)
        >>> unregister("bmm_again")
    """
    if not isinstance(implementation, Implementation):
        raise TypeError(f"register takes an Implementation, got {type(implementation).__name__}")
    name = getattr(implementation, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"an Implementation's name must be a str, got {name!r}")
    if name in _REGISTRY:
        registered = ", ".join(map(repr, _REGISTRY))
        raise ValueError(f"implementation {name!r} is registered already; registered: {registered}")
    _REGISTRY[name] = implementation
    return implementation


def unregister(name: str) -> None:
    """Take away an implementation that ``register`` added; the built-in ones and ``FLOOR`` stay.

    Args:
        name: the name it was registered under.

    Raises:
        ValueError: for a built-in name, or one not registered, naming those ``unregister`` can take away.

    Example::

        >>> unregister("bmm_again")
    """
    added = [registered for registered in _REGISTRY if registered not in (*IMPLEMENTATIONS, FLOOR)]
    if name not in added:
        raise ValueError(
            f"unregister takes an implementation that register added, got {name!r}; "
            f"added: {', '.join(map(repr, added)) or 'none'}"
        )
    del _REGISTRY[name]
