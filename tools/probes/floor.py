"""The arithmetic floor of one training step: FLOPs and minimal bytes, per preset and batch.

    python -m tools.probes.floor [--preset seed] [--tflops 29] [--tbps 3.0]

Counts the matrix products (the elementwise work is a few percent): per token
and layer, q/k/v/o 4 x 2 d^2, attention scores and values 2 x 2 T d (causal,
computed in full), the MLP 2 x 2 d d_ff; plus the LM head 2 d V. The backward
costs twice the forward. Per-sample masks add no products. Bytes: parameters
read twice and gradients written once, and the activations a step keeps
(measured: the Floor benchmark's memory growth per sample) written and read
once. ``--tflops`` defaults to the fp32 rate cuBLAS SGEMM reached on the
H100 at these shapes (0.037 ms for 1.07 GFLOP, TF32 off).
"""

from __future__ import annotations

import argparse

import estimators
from benchmarks.grid import BATCHES

from ..arguments import positive_float


def step_flops(config, batch: int) -> float:
    d, t, f, v = config.d_model, config.seq_len, config.d_ff, config.vocab_size
    per_token = config.n_layer * (8 * d * d + 4 * t * d + 4 * d * f) + 2 * d * v
    return 3.0 * per_token * t * batch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="seed", choices=tuple(estimators.PRESETS))
    parser.add_argument("--tflops", type=positive_float, default=29.0, help="matrix product rate (TFLOP/s)")
    parser.add_argument("--tbps", type=positive_float, default=3.0, help="memory bandwidth (TB/s)")
    parser.add_argument("--activations-mib", type=positive_float, default=18.0, help="activation bytes a sample keeps")
    args = parser.parse_args(argv)
    config = estimators.PRESETS[args.preset]
    params = sum(p.numel() for p in estimators.build_model(args.preset).parameters())
    print(f"preset {args.preset}: {params / 1e6:.1f} M parameters; {args.tflops} TFLOP/s, {args.tbps} TB/s\n")
    print("| batch | GFLOP | arithmetic floor (ms) | MB moved | memory floor (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for batch in BATCHES:
        flops = step_flops(config, batch)
        moved = 3 * 4 * params + 2 * args.activations_mib * 2**20 * batch
        cells = [batch, f"{flops / 1e9:.1f}", f"{flops / args.tflops / 1e9:.2f}", f"{moved / 1e6:.0f}"]
        cells.append(f"{moved / args.tbps / 1e9:.3f}")
        print("| " + " | ".join(map(str, cells)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
