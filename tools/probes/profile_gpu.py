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
import json
import statistics
import time
from pathlib import Path

import torch

import estimators
from benchmarks import grid
from benchmarks.machine import PRESET
from benchmarks.step import TrainingStep
from benchmarks.workload import random_tokens
from estimators.model import next_token_loss


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


def step_times(estimator, implementation, batch, repeats):
    """The suite's step: replayed forward and backward (ms), one eager step (ms), and its peak memory (MiB)."""
    step = TrainingStep(estimator, implementation, batch)
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
    from estimators import triton_kernels as tk

    small = torch.randn(4, 4, 2, device="cuda")
    a = torch.randn(8, device="cuda")
    for name, fn in (("torch.add", lambda: a + a), ("triton sample_bits", lambda: tk.sample_bits(small, 5, range(1)))):
        report.append(f"  one {name} launch: {host_ms(fn, warmup=10, repeats=1000) * 1e3:.1f} us")


def kernel_sweep(report):
    """The fused kernels alone, seed-preset shapes at batch 16, under a few tile shapes."""
    import triton.testing

    from estimators import sampler
    from estimators import triton_kernels as tk

    batch, time_, width = 16, 128, 512
    x = torch.randn(batch, time_, width, device="cuda")
    dy = torch.randn(batch, time_, width, device="cuda")
    weight = torch.randn(width, width, device="cuda")
    bias = torch.randn(width, device="cuda")
    logits = torch.randn(width, width, 2, device="cuda")
    bits = sampler.draw_bits(logits, 0, 0, range(batch))
    masks = sampler.unpack_bits(bits, (width, width)).float()
    w_b = weight * masks
    bench = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")  # noqa: E731
    report.append(f"\nkernels alone, batch {batch}, T {time_}, {width}x{width} (median ms)")
    report.append(
        f"  cuBLAS bmm forward (materialised W_b)   {bench(lambda: torch.baddbmm(bias, x, w_b.transpose(1, 2))):.4f}"
    )
    report.append(
        f"  cuBLAS dense x W^T (one mask)            {bench(lambda: torch.nn.functional.linear(x, w_b[0], bias)):.4f}"
    )
    report.append(
        f"  cuBLAS dense dW = dy^T x (one mask)      {bench(lambda: dy.flatten(0, 1).T @ x.flatten(0, 1)):.4f}"
    )
    report.append(
        f"  sampler (bits)                           {bench(lambda: sampler.draw_bits(logits, 0, 0, range(batch))):.4f}"
    )
    index_ms = bench(lambda: sampler.draw_index(logits, 0, 0, range(batch)))
    report.append(f"  sampler (index)                          {index_ms:.4f}")
    want_y = torch.baddbmm(bias.double(), x.double(), w_b.double().transpose(1, 2))
    want_g = torch.bmm(dy.double().transpose(1, 2), x.double()).sum(0)
    relative = lambda got, want: ((got.double() - want).norm() / want.norm()).item()  # noqa: E731
    matmul_configs = [
        dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=32, num_warps=4),
        dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=16, num_warps=4),
        dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=2),
        dict(BLOCK_T=32, BLOCK_N=64, BLOCK_K=32, num_warps=2),
        dict(BLOCK_T=64, BLOCK_N=128, BLOCK_K=32, num_warps=4),
        dict(BLOCK_T=128, BLOCK_N=64, BLOCK_K=32, num_warps=8),
        dict(BLOCK_T=128, BLOCK_N=128, BLOCK_K=32, num_warps=8),
        dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=64, num_warps=4),
    ]
    grad_configs = [
        dict(BLOCK_O=64, BLOCK_I=64, BLOCK_T=32, num_warps=8),
        dict(BLOCK_O=32, BLOCK_I=64, BLOCK_T=32, num_warps=4),
        dict(BLOCK_O=64, BLOCK_I=64, BLOCK_T=32, num_warps=4),
        dict(BLOCK_O=64, BLOCK_I=128, BLOCK_T=32, num_warps=8),
        dict(BLOCK_O=128, BLOCK_I=128, BLOCK_T=32, num_warps=8),
    ]
    codes = (0.0, 1.0)
    for precision in ("ieee", "tf32x3"):
        for tiles in matmul_configs:
            try:
                fwd = bench(lambda: tk.masked_linear(x, weight, bits, codes, bias, tiles=tiles, precision=precision))
                dx = bench(
                    lambda: tk.masked_linear_input_grad(dy, weight, bits, codes, tiles=tiles, precision=precision)
                )
                error = relative(
                    tk.masked_linear(x, weight, bits, codes, bias, tiles=tiles, precision=precision), want_y
                )
                report.append(
                    f"  {precision} masked matmul {tiles}: forward {fwd:.4f}, input grad {dx:.4f}, rel err {error:.1e}"
                )
            except Exception as exc:  # a tile shape that does not compile: report and go on
                report.append(f"  {precision} masked matmul {tiles}: {type(exc).__name__} {str(exc)[:80]}")
        for tiles in grad_configs:
            for target in (132, 264):
                options = dict(tiles=tiles, precision=precision, target_programs=target)
                try:
                    plain = bench(lambda: tk.masked_weight_grad(dy, x, bits, codes, **options))
                    gumbel = bench(lambda: tk.masked_weight_grad(dy, x, bits, codes, (logits, 7, 0, 1.0), **options))
                    error = relative(tk.masked_weight_grad(dy, x, bits, codes, **options)[0], want_g)
                    label = f"  {precision} weight grad {tiles} ~{target}"
                    report.append(f"{label}: {plain:.4f} (gumbel {gumbel:.4f}), rel err {error:.1e}")
                except Exception as exc:
                    report.append(f"  {precision} weight grad {tiles}: {type(exc).__name__} {str(exc)[:80]}")
    report.append(f"  cuBLAS fp32 bmm rel err {relative(torch.baddbmm(bias, x, w_b.transpose(1, 2)), want_y):.1e}")


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
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 8, 16])
    parser.add_argument("--estimators", nargs="+", default=list(estimators.ESTIMATORS))
    parser.add_argument("--implementations", nargs="+", default=[*estimators.IMPLEMENTATIONS, estimators.FLOOR])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sweep", action="store_true", help="the fused kernels alone under several tiles")
    parser.add_argument("--overhead", action="store_true", help="host cost per step of a tiny model")
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--profile", nargs="*", default=[], help="estimator/implementation pairs at the largest batch")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = [f"{torch.cuda.get_device_name()} torch {torch.__version__} preset {PRESET}"]
    rows = []
    for batch in [] if args.skip_table else args.batches:
        for estimator in args.estimators:
            for implementation in args.implementations:
                if not grid.runs(implementation, batch, "cuda"):  # what the suite runs, as it runs it
                    continue
                started = time.time()
                try:
                    result = step_times(estimator, implementation, batch, args.repeats)
                except torch.OutOfMemoryError:
                    result = dict(error="out of memory")
                    torch.cuda.empty_cache()
                result.update(batch=batch, estimator=estimator, implementation=implementation)
                result.update(seconds=time.time() - started)
                rows.append(result)
                print(json.dumps(result), flush=True)
    (args.out / "profile_rows.json").write_text(json.dumps(rows, indent=1))
    header = ("batch", "estimator", "implementation", "fwd ms", "bwd ms", "total", "iqr f/b", "eager ms", "peak MiB")
    report.append("\n" + " ".join(f"{h:>14}" for h in header))
    for r in rows:
        cells = [r["batch"], r["estimator"], r["implementation"]]
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
        kernel_sweep(report)
    for pair in args.profile:
        estimator, implementation = pair.split("/")
        profile_step(estimator, implementation, max(args.batches), report)
    text = "\n".join(report)
    (args.out / "profile_report.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
