"""The Floor, ``shared``: one mask for the whole batch, the cost per-sample discreteness is measured against.

It is not an implementation of the per-sample layer (it is not in ``IMPLEMENTATIONS``): every row uses the
mask of the batch's first sample, y_b = x_b W_0^T + bias.
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import Implementation, MaskDraw
from .materialised import masked_weight


class Shared(Implementation):
    """The floor: one mask, that of the batch's first sample, for every row.

    Example::

        >>> logits = model(tokens, estimator="ste", implementation="shared", seed=0)
    """

    name = "shared"

    def apply(self, x, layer, draw):
        first = MaskDraw(draw.estimator, draw.implementation, draw.tau, draw.seed, draw.samples[:1])
        weights = masked_weight(
            draw.estimator,
            layer.weight,
            layer.logits,
            layer.codebook,
            first.index(layer),
            first.uniform(layer),
            draw.tau,
        )
        return F.linear(x, weights[0], layer.bias)
