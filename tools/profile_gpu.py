"""Where the time goes on a GPU: a development aid, not the benchmark (asv is).

Times forward and backward of every implementation with CUDA events
(warm-up, then the median of repeats), the peak memory of a training step,
the fused kernels alone under a few tile shapes, and a torch.profiler
breakdown. Writes a text report and JSON under --out.

    python tools/profile_gpu.py --out $OUT --batches 1 2 8 16 --sweep --profile
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import estimators
from estimators.model import next_token_loss


def step_times(model, tokens, estimator, implementation, repeats):
    """Median forward and backward milliseconds (CUDA events) and peak memory of one step (MiB)."""

    def step():
        logits = model(tokens, estimator=estimator, implementation=implementation, seed=1234)
        return next_token_loss(logits, tokens)

    for _ in range(3):
        model.zero_grad(set_to_none=True)
        step().backward()
    forward, backward = [], []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start, middle, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        start.record()
        loss = step()
        middle.record()
        loss.backward()
        end.record()
        torch.cuda.synchronize()
        forward.append(start.elapsed_time(middle))
        backward.append(middle.elapsed_time(end))
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step().backward()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    model.zero_grad(set_to_none=True)
    spread = lambda xs: (statistics.quantiles(xs, n=4)[2] - statistics.quantiles(xs, n=4)[0]) / statistics.median(xs)  # noqa: E731
    return dict(
        forward_ms=statistics.median(forward), backward_ms=statistics.median(backward),
        forward_iqr=spread(forward), backward_iqr=spread(backward), peak_mib=peak,
    )  # fmt: skip


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
    tokens = torch.randint(0, 32, (1, 8), device="cuda")
    report.append("\nCPU overhead: tiny model on CUDA, batch 1, ms per step (no synchronisation between steps)")
    for implementation in list(estimators.IMPLEMENTATIONS) + [estimators.FLOOR]:
        for estimator in ("ste", "gumbel"):
            def step():
                model.zero_grad(set_to_none=True)
                logits = model(tokens, estimator=estimator, implementation=implementation, seed=1)
                next_token_loss(logits, tokens).backward()
            per_step = host_ms(step, warmup=5, repeats=40)
            with torch.no_grad():
                forward = host_ms(lambda: model(tokens, estimator=estimator, implementation=implementation, seed=1),
                                  warmup=0, repeats=40)  # fmt: skip
            report.append(f"  {implementation:>9} {estimator:>7}: step {per_step:6.2f}  forward (no grad) {forward:6.2f}")
    from estimators import triton_kernels as tk

    small = torch.randn(4, 4, 2, device="cuda")
    a = torch.randn(8, device="cuda")
    for name, fn in (("torch.add", lambda: a + a), ("triton sample_bits", lambda: tk.sample_bits(small, 5, range(1)))):
        report.append(f"  one {name} launch: {host_ms(fn, warmup=10, repeats=1000) * 1e3:.1f} us")


def kernel_sweep(report):
    """The fused kernels alone, seed-preset shapes at batch 16, under a few tile shapes."""
    import triton.testing

    from estimators import sampler, triton_kernels as tk

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
    report.append(f"  cuBLAS bmm forward (materialised W_b)   {bench(lambda: torch.baddbmm(bias, x, w_b.transpose(1, 2))):.4f}")
    report.append(f"  cuBLAS dense x W^T (one mask)            {bench(lambda: torch.nn.functional.linear(x, w_b[0], bias)):.4f}")
    report.append(f"  cuBLAS dense dW = dy^T x (one mask)      {bench(lambda: dy.flatten(0, 1).T @ x.flatten(0, 1)):.4f}")
    report.append(f"  sampler (bits)                           {bench(lambda: sampler.draw_bits(logits, 0, 0, range(batch))):.4f}")
    report.append(f"  sampler (index)                          {bench(lambda: sampler.draw_index(logits, 0, 0, range(batch))):.4f}")
    want_y = torch.baddbmm(bias.double(), x.double(), w_b.double().transpose(1, 2))
    want_g = torch.bmm(dy.double().transpose(1, 2), x.double()).sum(0)
    relative = lambda got, want: ((got.double() - want).norm() / want.norm()).item()  # noqa: E731
    matmul_configs = [
        dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=32, num_warps=4), dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=16, num_warps=4),
        dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=2), dict(BLOCK_T=32, BLOCK_N=64, BLOCK_K=32, num_warps=2),
        dict(BLOCK_T=64, BLOCK_N=128, BLOCK_K=32, num_warps=4), dict(BLOCK_T=128, BLOCK_N=64, BLOCK_K=32, num_warps=8),
        dict(BLOCK_T=128, BLOCK_N=128, BLOCK_K=32, num_warps=8), dict(BLOCK_T=64, BLOCK_N=64, BLOCK_K=64, num_warps=4),
    ]  # fmt: skip
    grad_configs = [
        dict(BLOCK_O=64, BLOCK_I=64, BLOCK_T=32, num_warps=8), dict(BLOCK_O=32, BLOCK_I=64, BLOCK_T=32, num_warps=4),
        dict(BLOCK_O=64, BLOCK_I=64, BLOCK_T=32, num_warps=4), dict(BLOCK_O=64, BLOCK_I=128, BLOCK_T=32, num_warps=8),
        dict(BLOCK_O=128, BLOCK_I=128, BLOCK_T=32, num_warps=8),
    ]  # fmt: skip
    for precision in ("ieee", "tf32x3"):
        tk._DOT_PRECISION = precision
        for blocks in matmul_configs:
            tk._MATMUL_BLOCKS = blocks
            try:
                fwd = bench(lambda: tk.masked_linear(x, weight, bits, (0.0, 1.0), bias))
                dx = bench(lambda: tk.masked_linear_input_grad(dy, weight, bits, (0.0, 1.0)))
                error = relative(tk.masked_linear(x, weight, bits, (0.0, 1.0), bias), want_y)
                report.append(f"  {precision} masked matmul {blocks}: forward {fwd:.4f}, input grad {dx:.4f}, rel err {error:.1e}")
            except Exception as exc:  # a tile shape that does not compile: report and go on
                report.append(f"  {precision} masked matmul {blocks}: {type(exc).__name__} {str(exc)[:80]}")
        for blocks in grad_configs:
            tk._WEIGHT_GRAD_BLOCKS = blocks
            for target in (132, 264):
                tk._TARGET_PROGRAMS = target
                try:
                    plain = bench(lambda: tk.masked_weight_grad(dy, x, bits, (0.0, 1.0)))
                    gumbel = bench(lambda: tk.masked_weight_grad(dy, x, bits, (0.0, 1.0), (logits, 7, 0, 1.0)))
                    error = relative(tk.masked_weight_grad(dy, x, bits, (0.0, 1.0))[0], want_g)
                    report.append(f"  {precision} weight grad {blocks} ~{target}: {plain:.4f} (gumbel {gumbel:.4f}), rel err {error:.1e}")
                except Exception as exc:
                    report.append(f"  {precision} weight grad {blocks}: {type(exc).__name__} {str(exc)[:80]}")
    report.append(f"  cuBLAS fp32 bmm rel err {relative(torch.baddbmm(bias, x, w_b.transpose(1, 2)), want_y):.1e}")


def profile_step(model, tokens, estimator, implementation, report):
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        model.zero_grad(set_to_none=True)
        next_token_loss(model(tokens, estimator=estimator, implementation=implementation, seed=1), tokens).backward()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            model.zero_grad(set_to_none=True)
            next_token_loss(model(tokens, estimator=estimator, implementation=implementation, seed=1), tokens).backward()
        torch.cuda.synchronize()
    report.append(f"\nprofile {estimator}/{implementation} batch {tokens.shape[0]} (5 steps)")
    report.append(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 8, 16])
    parser.add_argument("--estimators", nargs="+", default=list(estimators.ESTIMATORS))
    parser.add_argument("--implementations", nargs="+", default=list(estimators.IMPLEMENTATIONS) + [estimators.FLOOR])
    parser.add_argument("--compiled-batches", type=int, nargs="*", default=[16])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--overhead", action="store_true")
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--profile", nargs="*", default=[], help="estimator/implementation pairs at the largest batch")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    args.out.mkdir(parents=True, exist_ok=True)
    report = [f"{torch.cuda.get_device_name()} torch {torch.__version__} preset {args.preset}"]
    model = estimators.build_model(args.preset, device="cuda", seed=0)
    config = estimators.PRESETS[args.preset]
    rows = []
    for batch in [] if args.skip_table else args.batches:
        tokens = torch.randint(0, config.vocab_size, (batch, config.seq_len), device="cuda")
        for estimator in args.estimators:
            for implementation in args.implementations:
                if implementation == "current" and batch != 1:
                    continue
                if implementation == "compiled" and batch not in args.compiled_batches:
                    continue
                started = time.time()
                try:
                    result = step_times(model, tokens, estimator, implementation, args.repeats)
                except torch.OutOfMemoryError:
                    result = dict(error="out of memory")
                    torch.cuda.empty_cache()
                result.update(batch=batch, estimator=estimator, implementation=implementation, seconds=time.time() - started)
                rows.append(result)
                print(json.dumps(result), flush=True)
    (args.out / "profile_rows.json").write_text(json.dumps(rows, indent=1))
    report.append(f"\n{'batch':>5} {'estimator':>8} {'implementation':>14} {'fwd ms':>8} {'bwd ms':>8} {'total':>8} {'iqr f/b':>11} {'peak MiB':>9}")
    for r in rows:
        if "error" in r:
            report.append(f"{r['batch']:>5} {r['estimator']:>8} {r['implementation']:>14} {r['error']}")
            continue
        report.append(
            f"{r['batch']:>5} {r['estimator']:>8} {r['implementation']:>14} {r['forward_ms']:8.3f} {r['backward_ms']:8.3f} "
            f"{r['forward_ms'] + r['backward_ms']:8.3f} {r['forward_iqr']:5.1%}/{r['backward_iqr']:5.1%} {r['peak_mib']:9.1f}"
        )
    if args.overhead:
        launch_overhead(report)
    if args.sweep:
        kernel_sweep(report)
    for pair in args.profile:
        estimator, implementation = pair.split("/")
        tokens = torch.randint(0, config.vocab_size, (max(args.batches), config.seq_len), device="cuda")
        profile_step(model, tokens, estimator, implementation, report)
    text = "\n".join(report)
    (args.out / "profile_report.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
