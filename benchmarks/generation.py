"""Forecasting speed: series per second of greedy and of sampled evaluation forecasts.

On a base (default `tiny`) and the project's own generated data (`lvdata.simulate`, the
coursework's generator; no data file needed), forecast the validation-sized set of series with
the `tiny` preset's protocol (history 50 steps, horizon 5, context 256) greedily and with
`--samples` samples per series, and print series/s, wall seconds and the analytic FLOPs of each.
Each setting runs `--repeats` times; the best time is reported (the machine is shared).

Figures on 2 shared CPU cores (`--threads 1`, best of 3; before = `generate` with
`num_return_sequences`, fixed batches of 16 series; after = `lvmodel.decode.Decoder`):

| forecast | before (batch 16) | after (batch 16) | after (memory-sized: 100) |
|---|---:|---:|---:|
| greedy, series/s | 31.5 | 27.8 | 35.5 |
| sampled x10, series/s | 4.0 | 9.4 | 10.1 |
| sampled x10, FLOPs | 7.40e11 | 1.90e11 | 1.99e11 |

Greedy forecasts are identical before and after; sampled ones too at the same batches (the
memory-sized default puts all 100 series in one batch, seeded `seed + 0`, so other draws).

Usage: python benchmarks/generation.py [--base tiny] [--series 100] [--samples 10]
       [--repeats 3] [--batch-size N] [--threads N] [--device cpu] [--save FILE.npz]
"""

from __future__ import annotations

import argparse
import inspect
import time

import numpy as np
import torch

import lvdata
from lvmodel.base import load_base
from lvmodel.forecast import forecast
from lvmodel.metrics import protocol_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="tiny")
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=0, help="0: forecast's default")
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save", default="", help="save the forecasts to this .npz file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    traj = lvdata.simulate(n_systems=args.series, seed=0)
    codec = lvdata.LLMTimeCodec.fit(traj.values, decimals=2)
    histories, _ = protocol_split(traj.values, args.history, args.horizon)
    model, tok = load_base(args.base, dtype=torch.float32, device=args.device)
    default_batch = inspect.signature(forecast).parameters["batch_size"].default
    kw = {"batch_size": args.batch_size} if args.batch_size else {}
    print(
        f"base {args.base}, {len(histories)} series, history {args.history}, horizon "
        f"{args.horizon}, context {args.context}, {torch.get_num_threads()} threads, "
        f"{args.device}, batch_size {args.batch_size or f'default ({default_batch})'}"
    )
    outputs: dict[str, np.ndarray] = {}
    print("| forecast | series/s | s (best) | FLOPs | invalid |")
    print("|---|---:|---:|---:|---:|")
    for name, samples in (("greedy", 1), (f"sampled x{args.samples}", args.samples)):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            f = forecast(
                model,
                tok,
                codec,
                histories,
                args.horizon,
                context_length=args.context,
                num_samples=samples,
                seed=0,
                **kw,
            )
            times.append(time.perf_counter() - start)
        best = min(times)
        print(
            f"| {name} | {len(histories) / best:.1f} | {best:.2f} | {f.flops:.3e} | {f.invalid} |"
        )
        outputs[name.split()[0]] = f.values
    if args.save:
        np.savez(args.save, **outputs)


if __name__ == "__main__":
    main()
