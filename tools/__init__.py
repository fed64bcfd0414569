"""Command-line tools around the asv suite, grouped by job.

- ``tools.run``: run asv the way this project needs it (``asv_project``, through asv's patches in
  ``asv_patches``), the main job (``bench``), the regression gate (``gate``), the GPU-host wrapper
  (``gpu_suite.sh``) and its record of the GPUs' state (``host_state``).
- ``tools.reporting``: read asv's results (``results``) and report them (``report``, its tables in
  ``tables``, its live equivalence check in ``live_check``; ``spread``), make the published dashboard
  work offline (``dashboard``).
- ``tools.probes``: developer probes that measure outside asv (``floor``, ``profile_gpu``, ``host_cost``,
  ``ddp_scaling``).

Every tool runs as ``python -m tools.<group>.<tool> [arguments]`` and has ``main(argv) -> int``.
"""
