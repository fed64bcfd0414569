"""Whether Triton's interpreter runs the kernels: TRITON_INTERPRET=1 runs them on the CPU, in numpy, instead of
compiling them (how CI checks them). Read once, at import, as Triton reads it."""

from __future__ import annotations

import os

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
