"""Where the time goes on a GPU: a development aid, not the benchmark (asv is).

Times the suite's own training step (benchmarks.step: CUDA-graph replays of
the forward and of the backward, and one eager step, each the median of
repeats), its peak memory (benchmarks.memory), the fused kernels alone under
a few tile configurations and dot precisions (passed to the launchers as
arguments), and a torch.profiler breakdown. Writes a text report and JSON
under --out. The preset is the suite's: ESTIMATORS_BENCH_PRESET (default
``seed`` on CUDA).

    python -m tools.probes.profile_gpu --out $OUT --batches 1 2 8 16 --sweep --profile ste/fused
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

import estimators
from benchmarks import grid
from benchmarks.machine import PRESET
from benchmarks.skips import runs
from benchmarks.step import TrainingStep
from benchmarks.workload import random_tokens
from estimators.model import next_token_loss

from ..arguments import positive_int


def _median_ms(run, repeats: int) -> tuple[float, float]:
    """Median milliseconds of ``run()`` (which synchronises) over ``repeats`` calls, and the spread (IQR / median)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1e3)
    quartiles = statistics.quantiles(times, n=4)
    median = statistics.median(times)
    return median, (quartiles[2] - quartiles[0]) / median


def step_times(estimator, implementation, batch, repeats, precision="fp32"):
    """The suite's step: replayed forward and backward (ms), one eager step (ms), and its peak memory (MiB)."""
    step = TrainingStep(estimator, implementation, batch, precision)
    peak = step.peak_memory() / 2**20
    step.timer.forward()  # captures (the untimed warm-up asv gives the suite, too)
    forward, forward_iqr = _median_ms(step.timer.forward, repeats)
    step.timer.backward()
    backward, backward_iqr = _median_ms(step.timer.backward, repeats)

    def eager():
        step.gradients(step.loss())
        torch.cuda.synchronize()

    eager()
    eager_ms, _ = _median_ms(eager, repeats)
    return dict(
        forward_ms=forward,
        backward_ms=backward,
        forward_iqr=forward_iqr,
        backward_iqr=backward_iqr,
        eager_step_ms=eager_ms,
        peak_mib=peak,
    )


def host_ms(fn, warmup, repeats):
    """Host milliseconds per call of ``fn`` over ``repeats`` calls after ``warmup``, synchronised at both ends."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1e3


def launch_overhead(report):
    """CPU cost per step where GPU work is negligible (a tiny model, batch 1), and per launch."""
    config = estimators.ModelConfig(d_model=16, n_head=2, n_layer=3, d_ff=16, vocab_size=32, seq_len=8)
    model = estimators.build_model(config, device="cuda")
    tokens = random_tokens(config, 1, seed=0, device="cuda")
    report.append("\nCPU overhead: tiny model on CUDA, batch 1, ms per step (no synchronisation between steps)")
    for implementation in list(estimators.IMPLEMENTATIONS) + [estimators.FLOOR]:
        for estimator in ("ste", "gumbel"):

            def step():
                model.zero_grad(set_to_none=True)
                logits = model(tokens, estimator=estimator, implementation=implementation, seed=1)
                next_token_loss(logits, tokens).backward()

            per_step = host_ms(step, warmup=5, repeats=40)
            with torch.no_grad():
                forward = host_ms(
                    lambda: model(tokens, estimator=estimator, implementation=implementation, seed=1),
                    warmup=0,
                    repeats=40,
                )
            report.append(
                f"  {implementation:>9} {estimator:>7}: step {per_step:6.2f}  forward (no grad) {forward:6.2f}"
            )
    from estimators import kernels as tk

    small = torch.randn(4, 4, 2, device="cuda")
    a = torch.randn(8, device="cuda")
    for name, fn in (("torch.add", lambda: a + a), ("triton sample_bits", lambda: tk.sample_bits(small, 5, range(1)))):
        report.append(f"  one {name} launch: {host_ms(fn, warmup=10, repeats=1000) * 1e3:.1f} us")


MATMUL_SWEEP = [
    dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=32, num_warps=4),
    dict(BLOCK_T=64, BLOCK_N=128, BLOCK_K=32, num_warps=4),
    dict(BLOCK_T=128, BLOCK_N=64, BLOCK_K=32, num_warps=8),
    dict(BLOCK_T=128, BLOCK_N=128, BLOCK_K=32, num_warps=8),
    dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=64, num_warps=4),
    dict(BLOCK_T=128, BLOCK_N=64, BLOCK_K=64, num_warps=4),
    dict(BLOCK_T=128, BLOCK_N=128, BLOCK_K=64, num_warps=8),
    dict(BLOCK_T=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=4),
    dict(BLOCK_T=64, BLOCK_N=128, BLOCK_K=64, num_warps=4, num_stages=4),
    dict(BLOCK_T=128, BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=4),
    dict(BLOCK_T=128, BLOCK_N=256, BLOCK_K=32, num_warps=8, num_stages=3),
]
WEIGHT_GRAD_SWEEP = [
    dict(BLOCK_R=32, BLOCK_C=64, BLOCK_T=32, num_warps=4),
    dict(BLOCK_R=64, BLOCK_C=64, BLOCK_T=32, num_warps=4),
    dict(BLOCK_R=64, BLOCK_C=64, BLOCK_T=64, num_warps=4),
    dict(BLOCK_R=64, BLOCK_C=128, BLOCK_T=64, num_warps=8),
    dict(BLOCK_R=128, BLOCK_C=128, BLOCK_T=64, num_warps=8),
    dict(BLOCK_R=128, BLOCK_C=64, BLOCK_T=64, num_warps=4),
    dict(BLOCK_R=64, BLOCK_C=64, BLOCK_T=128, num_warps=4),
    dict(BLOCK_R=128, BLOCK_C=128, BLOCK_T=32, num_warps=8),
    dict(BLOCK_R=128, BLOCK_C=128, BLOCK_T=32, num_warps=8, num_stages=4),
    dict(BLOCK_R=128, BLOCK_C=64, BLOCK_T=32, num_warps=4, num_stages=4),
    dict(BLOCK_R=64, BLOCK_C=128, BLOCK_T=32, num_warps=4, num_stages=4),
]


def _say(report, line):
    """Append ``line`` to the report and print it at once (a sweep stopped at its time limit keeps its lines)."""
    report.append(line)
    print(line, flush=True)


def layer_shapes(width: int) -> list[tuple[int, int]]:
    """(out, in) of the stochastic layers of a model of d_model ``width`` (d_ff = 4 width): attention, MLP up, down."""
    return [(width, width), (4 * width, width), (width, 4 * width)]


def kernel_sweep(report, batches=(16, 64), dtypes=("fp32", "bf16"), widths=(512,), precisions=("tf32x3", "tf32")):
    """The fused kernels alone at the layer shapes of ``widths``, under several tiles, dtypes and precisions."""
    import triton.testing

    from estimators import kernels as tk
    from estimators import sampler

    bench = lambda fn: triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median")  # noqa: E731
    relative = lambda got, want: ((got.double() - want).norm() / want.norm()).item()  # noqa: E731
    torch_dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    time_, codes = 128, torch.tensor((0.0, 1.0), device="cuda")
    shapes = [shape for width in widths for shape in layer_shapes(width)]
    for (out_features, in_features), batch, dtype in itertools.product(shapes, batches, dtypes):
        weight = torch.randn(out_features, in_features, device="cuda")
        bias = torch.randn(out_features, device="cuda")
        logits = torch.randn(out_features, in_features, 2, device="cuda")
        x = torch.randn(batch, time_, in_features, device="cuda").to(torch_dtypes[dtype])
        dy = torch.randn(batch, time_, out_features, device="cuda").to(torch_dtypes[dtype])
        bits = sampler.draw_bits(logits, 0, 0, range(batch))
        w_b = (weight * sampler.unpack_bits(bits, (out_features, in_features)).float()).to(x.dtype)
        want_y = torch.baddbmm(bias.double(), x.double(), w_b.double().transpose(1, 2))
        want_g = torch.bmm(dy.double().transpose(1, 2), x.double()).sum(0)
        del w_b  # B masked copies: only the reference needs them
        w_one = (weight * sampler.unpack_bits(bits[:1], (out_features, in_features)).float()).to(x.dtype)
        shape = f"out {out_features} x in {in_features}"
        _say(report, f"\nkernels alone, {dtype}, batch {batch}, T {time_}, {shape} (median ms)")
        cublas_dense = bench(lambda: torch.nn.functional.linear(x, w_one[0], bias.to(x.dtype)))
        cublas_dx = bench(lambda: dy @ w_one[0])
        cublas_dw = bench(lambda: dy.flatten(0, 1).T @ x.flatten(0, 1))
        _say(report, f"  cuBLAS, one mask: forward {cublas_dense:.4f}, dx {cublas_dx:.4f}, dW {cublas_dw:.4f}")
        _say(report, f"  sampler (bits) {bench(lambda: sampler.draw_bits(logits, 0, 0, range(batch))):.4f}")
        for precision in precisions if dtype == "fp32" else ("tf32x3",):
            for tiles in MATMUL_SWEEP:
                options = dict(tiles=tiles, precision=precision)
                try:
                    fwd = bench(lambda: tk.masked_linear(x, weight, bits, codes, bias, **options))
                    dx = bench(
                        lambda: tk.masked_linear_input_grad(dy, weight, bits, codes, **options, weight_copy=False)
                    )
                    dx_copy = bench(
                        lambda: tk.masked_linear_input_grad(dy, weight, bits, codes, **options, weight_copy=True)
                    )
                    error = relative(tk.masked_linear(x, weight, bits, codes, bias, **options), want_y)
                    _say(
                        report,
                        f"  {precision} matmul {tiles}: fwd {fwd:.4f} dx {dx:.4f} dx (W^T copy) {dx_copy:.4f} "
                        f"err {error:.1e}",
                    )
                except Exception as exc:  # a tile shape that does not compile: report and go on
                    _say(report, f"  {precision} matmul {tiles}: {type(exc).__name__} {str(exc)[:80]}")
            layouts = (False, True) if dtype == "fp32" else (False,)
            for tiles, target, time_major in itertools.product(WEIGHT_GRAD_SWEEP, (132, 264), layouts):
                options = dict(tiles=tiles, precision=precision, target_programs=target, time_major=time_major)
                layout = " time-major" if time_major else ""
                try:
                    plain = bench(lambda: tk.masked_weight_grad(dy, x, bits, codes, **options))
                    error = relative(tk.masked_weight_grad(dy, x, bits, codes, **options)[0], want_g)
                    _say(report, f"  {precision} weight grad{layout} {tiles} ~{target}: {plain:.4f} err {error:.1e}")
                except Exception as exc:
                    _say(report, f"  {precision} weight grad {tiles}: {type(exc).__name__} {str(exc)[:80]}")


def profile_step(estimator, implementation, batch, report):
    """torch.profiler over five eager steps of the suite's step (after three warm-up steps)."""
    from torch.profiler import ProfilerActivity, profile

    step = TrainingStep(estimator, implementation, batch)
    for _ in range(3):
        step.gradients(step.loss())
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step.gradients(step.loss())
        torch.cuda.synchronize()
    report.append(f"\nprofile {estimator}/{implementation} batch {batch} (5 steps)")
    report.append(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[1, 2, 8, 16])
    parser.add_argument("--estimators", nargs="+", default=list(estimators.ESTIMATORS))
    parser.add_argument(
        "--implementations", nargs="+", default=[*estimators.IMPLEMENTATIONS, estimators.FLOOR, grid.DENSE]
    )
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=grid.PRECISIONS)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--sweep", nargs="*", choices=("fp32", "bf16", "fp16"), help="the fused kernels alone, per dtype"
    )
    parser.add_argument(
        "--sweep-widths", type=positive_int, nargs="+", default=[512], help="d_model of the swept layers"
    )
    parser.add_argument("--sweep-precisions", nargs="+", default=["tf32x3", "tf32"], choices=("tf32x3", "tf32"))
    parser.add_argument("--overhead", action="store_true", help="host cost per step of a tiny model")
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--profile", nargs="*", default=[], help="estimator/implementation pairs at the largest batch")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("profiles CUDA kernels and needs a CUDA device (torch.cuda.is_available() is False)")
    if args.repeats < 2:
        parser.error("--repeats must be >= 2 (the spread takes quartiles)")
    args.out.mkdir(parents=True, exist_ok=True)
    report = [f"{torch.cuda.get_device_name()} torch {torch.__version__} preset {PRESET}"]
    rows = []
    cells = itertools.product(args.precisions, args.batches, args.estimators, args.implementations)
    for precision, batch, estimator, implementation in [] if args.skip_table else cells:
        if implementation != grid.DENSE and not runs(implementation, batch, "cuda") and batch <= 64:
            continue  # what the suite runs, as it runs it (batches past the suite's grid: every implementation)
        if implementation == grid.DENSE and estimator != args.estimators[0]:
            continue  # Dense has no estimator
        started = time.time()
        try:
            result = step_times(estimator, implementation, batch, args.repeats, precision)
        except torch.OutOfMemoryError:
            result = dict(error="out of memory")
            torch.cuda.empty_cache()
        result.update(precision=precision, batch=batch, estimator=estimator, implementation=implementation)
        result.update(seconds=time.time() - started)
        rows.append(result)
        print(json.dumps(result), flush=True)
    (args.out / "profile_rows.json").write_text(json.dumps(rows, indent=1))
    header = ("precision", "batch", "estimator", "impl", "fwd ms", "bwd ms", "total", "iqr f/b", "eager ms", "peak MiB")
    report.append("\n" + " ".join(f"{h:>14}" for h in header))
    for r in rows:
        cells = [r["precision"], r["batch"], r["estimator"], r["implementation"]]
        if "error" in r:
            report.append(" ".join(f"{c:>14}" for c in cells) + f" {r['error']}")
            continue
        cells += [f"{r['forward_ms']:.3f}", f"{r['backward_ms']:.3f}", f"{r['forward_ms'] + r['backward_ms']:.3f}"]
        cells += [
            f"{r['forward_iqr']:.1%}/{r['backward_iqr']:.1%}",
            f"{r['eager_step_ms']:.3f}",
            f"{r['peak_mib']:.1f}",
        ]
        report.append(" ".join(f"{c:>14}" for c in cells))
    if args.overhead:
        launch_overhead(report)
    if args.sweep:
        kernel_sweep(report, args.batches, args.sweep, args.sweep_widths, args.sweep_precisions)
    for pair in args.profile:
        estimator, implementation = pair.split("/")
        profile_step(estimator, implementation, max(args.batches), report)
    text = "\n".join(report)
    (args.out / "profile_report.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
