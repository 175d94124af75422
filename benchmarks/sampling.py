"""Greedy against sampled forecasts: point accuracy of the median, CRPS and 80% coverage.

For a base (default `tiny`) with an optional LoRA adapter (the `adapter/` artifact of a training
run), forecast the validation split of the preset's protocol once per sampling setting and print
MSE/MAE of the point forecast (greedy, or the median of the samples; invalid values filled by
persistence), LLMTime's CRPS and the 80% interval's coverage, with the wall time. Settings are
chosen on the validation split only; the figures quoted in docs/probabilistic.md come from here.

Usage: python benchmarks/sampling.py [--adapter RUN_ARTIFACTS/adapter] [--data FILE]
       [--preset tiny] [--context 256] [--settings 1:1.0:1.0,10:1.0:1.0,10:0.7:1.0,20:1.0:1.0]
       (each setting: samples:temperature:top_p)
"""

from __future__ import annotations

import argparse
import time

import torch

from lvmodel.base import load_base
from lvmodel.evaluate import evaluate_llm
from lvmodel.lora import adapter_settings, load_adapter
from lvtrack.datafile import prepare_data
from lvtrack.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="", help="a run's adapter/ folder (default: none)")
    parser.add_argument("--data", default="data/lotka_volterra_data.h5")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--base", default="", help="base model (default: the preset's)")
    parser.add_argument("--context", type=int, default=0, help="context (default: the preset's)")
    parser.add_argument(
        "--settings", default="1:1.0:1.0,10:1.0:1.0,10:0.7:1.0,10:1.0:0.9,20:1.0:1.0"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    preset = get_preset(args.preset)
    prep = prepare_data(args.data)
    model, tok = load_base(args.base or preset.base_model)
    lora = None
    if args.adapter:
        model, lora = load_adapter(model, args.adapter), adapter_settings(args.adapter)
    val = prep.scored("val", preset.eval_series)
    context = args.context or preset.context_length
    print("| samples | temperature | top_p | MSE h5 | MAE h5 | CRPS | coverage 80% | s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for setting in args.settings.split(","):
        n, temperature, top_p = setting.split(":")
        start = time.perf_counter()
        ev = evaluate_llm(
            model,
            tok,
            prep.codec,
            val,
            preset.history_steps,
            preset.horizon,
            context,
            lora,
            batch_size=32,
            num_samples=int(n),
            temperature=float(temperature),
            top_p=float(top_p),
        )
        m = ev.metrics
        print(
            f"| {n} | {temperature} | {top_p} | {m['mse_filled']:.4f} | {m['mae_filled']:.4f} | "
            f"{m.get('crps', float('nan')):.4f} | {m.get('coverage80', float('nan')):.3f} | "
            f"{time.perf_counter() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
