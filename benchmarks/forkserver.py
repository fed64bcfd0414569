"""Work done once in asv's forkserver, before it forks a process for every benchmark and parameter set.

Each forked process inherits what the server imported and built, so paying
for it here instead of in every process shortens the suite (numbers in
docs/BENCHMARKING.md). Nothing here touches CUDA: CUDA does not survive a fork.
"""

from __future__ import annotations

import os
import sys

from . import workload


def in_asv_forkserver() -> bool:
    """Whether this process is asv's forkserver, which imports the suite once and forks every benchmark from it.

    asv's discovery and setup_cache run in processes of their own, which fork
    nothing: they skip the work below that only pays for itself across forks.
    """
    return os.environ.get("ASV") == "true" and sys.argv[1:2] == ["run_server"]


def prepare(device: str) -> None:
    """Build the CPU model; on CUDA also import Triton and the compiler, without touching the GPU."""
    workload.prebuild_cpu_model()
    if device == "cuda":
        _prepare_triton()
        _import_compiler()


def _prepare_triton() -> None:
    """Import Triton and compute its JIT cache key without touching CUDA.

    The key hashes Triton's sources and libtriton (0.4 s on the H100 host), and
    the first launch imports Gluon (0.1 s); done before the fork, neither is
    repeated in every benchmark process.
    """
    try:
        try:
            from estimators import kernels  # noqa: F401
        except ImportError:  # a checkout whose kernels are the one module estimators.triton_kernels
            from estimators import triton_kernels  # noqa: F401

        try:
            from triton.runtime.cache import triton_key  # Triton >= 3.3
        except ImportError:
            from triton.compiler.compiler import triton_key
        triton_key()
        import triton.experimental.gluon.language  # noqa: F401
    except Exception:  # no Triton, or another layout: each process pays on first use
        pass


def _import_compiler() -> None:
    """Import dynamo and inductor without touching CUDA.

    On the H100 host this takes ~8 s (torch's modules there are compiled from
    source at every import); done before the fork, a `compiled` process takes
    2-3 s instead of 11.
    """
    try:
        import torch._dynamo  # noqa: F401
        import torch._inductor.compile_fx  # noqa: F401
    except Exception:  # another torch layout: each compiled process pays on first use
        pass
