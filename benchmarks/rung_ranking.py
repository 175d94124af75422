"""Do short runs rank settings like long ones? WSD rungs against short cosine runs, on tiny.

For each (lr, rank) of a small grid, on the tiny preset's base, batch and context:

- ``long``: one full run of ``--long`` steps with the cosine schedule (what `final` does), scored
  on ``--score-series`` validation series: the ranking a search should predict;
- ``wsd@S``: the search's rungs (:class:`lvmodel.rungs.WsdRungs`): the stable phase to S steps,
  scored on a decay branch of ``--decay`` x S steps (``val_mse_filled`` on the forecasting
  metric's fixed subset, as in `search`);
- ``cosine@S``: a whole cosine run of S steps (what the grid's short sweep runs do), scored the
  same way.

- ``nll@S``: LLMTime's NLL/D (`lvmodel.nll`) of the same decay branch's model on the same
  validation series: one teacher-forced forward pass instead of generating the forecasts; the
  FLOPs and seconds of both ways of scoring a rung are summed over every rung (``--no-cosine``
  skips the cosine runs).

It prints each setting's scores and the Spearman rank correlation of every short score with the
long runs' (1 = the same order). Deterministic on CPU for a seed. Figures measured are quoted in
docs/search.md.

Usage: python benchmarks/rung_ranking.py [--lrs 1e-3,3e-3,1e-2] [--ranks 4,16] [--rungs 20,60,180]
       [--long 600] [--no-cosine] [--data FILE] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import lvdata
from lvmodel.base import load_base
from lvmodel.config import TrainConfig
from lvmodel.evaluate import evaluate_llm
from lvmodel.lora import LoraSettings, apply_lora
from lvmodel.nll import nll_per_dim
from lvmodel.rungs import WsdRungs
from lvmodel.train import fit

COURSEWORK = Path(__file__).resolve().parents[2] / "shared" / "data" / "lotka_volterra_data.h5"


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    ap.add_argument("--ranks", default="4,16")
    ap.add_argument("--rungs", default="20,60,180")
    ap.add_argument("--long", type=int, default=600)
    ap.add_argument("--decay", type=float, default=0.2)
    ap.add_argument("--score-series", type=int, default=100)
    ap.add_argument("--data", type=Path, default=COURSEWORK if COURSEWORK.exists() else None)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-cosine", action="store_true", help="skip the short cosine runs")
    args = ap.parse_args(argv)
    from lvtrack.presets import get_preset  # the tiny preset's settings, nothing of MLflow

    p = get_preset("tiny")
    traj = lvdata.load_trajectories(args.data) if args.data else lvdata.simulate(1000, seed=0)
    parts = lvdata.split(len(traj.values), seed=0)
    train, val = traj.values[parts.train], traj.values[parts.val]
    codec = lvdata.LLMTimeCodec.fit(train, decimals=2)
    rungs = [int(s) for s in args.rungs.split(",")]
    base_config = TrainConfig(
        lr=1.0,
        batch_size=p.batch_size,
        context_length=p.context_length,
        warmup_steps=p.warmup_steps,
        eval_every=0,
        eval_windows=p.eval_windows,
        forecast_every=0,  # the forecasting metric at the end of a fit only
        forecast_series=p.forecast_series,
        forecast_history=p.history_steps,
        forecast_horizon=p.horizon,
        seed=0,
    )
    scores: dict[str, dict[str, float]] = {}
    cost = {"nll_flops": 0.0, "nll_s": 0.0, "forecast_flops": 0.0, "forecast_s": 0.0}
    for lr in _floats(args.lrs):
        for rank in [int(r) for r in args.ranks.split(",")]:
            key = f"lr={lr:g} r={rank}"
            lora = LoraSettings(rank=rank, targets=p.lora_targets)
            config = replace(base_config, lr=lr)

            def model(lora: LoraSettings = lora) -> torch.nn.Module:
                """A fresh LoRA model: every run of a setting starts from the same init."""
                base, _ = load_base("tiny", dtype=torch.float32, device="cpu")
                torch.manual_seed(0)
                return apply_lora(base, lora)

            _, tok = load_base("tiny", dtype=torch.float32, device="cpu")
            row: dict[str, float] = {}
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory() as tmp:
                trainer = WsdRungs(
                    model(), tok, codec, train, val, config, lora, tmp, decay_fraction=args.decay
                )
                for steps in rungs:
                    row[f"wsd@{steps}"] = trainer.rung(steps).metrics["val_mse_filled"]
                    # The branch's model, scored both ways on the forecasting subset.
                    subset = val[: p.forecast_series]
                    t1 = time.perf_counter()
                    nll = nll_per_dim(
                        trainer.model, tok, codec, subset, p.history_steps, p.horizon,
                        p.context_length, lora,
                    )  # fmt: skip
                    t2 = time.perf_counter()
                    fc = evaluate_llm(
                        trainer.model, tok, codec, subset, p.history_steps, p.horizon,
                        p.context_length, lora, batch_size=32,
                    )  # fmt: skip
                    t3 = time.perf_counter()
                    row[f"nll@{steps}"] = nll.value
                    cost["nll_flops"] += nll.flops
                    cost["nll_s"] += t2 - t1
                    cost["forecast_flops"] += fc.flops
                    cost["forecast_s"] += t3 - t2
            for steps in [] if args.no_cosine else rungs:
                short = replace(config, steps=steps, schedule="cosine")
                done = fit(model(), tok, codec, train, val, short, lora, progress=False)
                row[f"cosine@{steps}"] = done.final["val_mse_filled"]
            long_model = model()
            long = replace(config, steps=args.long, schedule="cosine", forecast_series=0)
            fit(long_model, tok, codec, train, val, long, lora, progress=False)
            ev = evaluate_llm(
                long_model, tok, codec, val[: args.score_series], p.history_steps, p.horizon,
                p.context_length, lora, batch_size=32,
            )  # fmt: skip
            row["long"] = ev.metrics["mse_filled"]
            scores[key] = row
            print(f"{key}: {json.dumps(row)} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)

    names = list(scores)
    columns = [c for c in next(iter(scores.values())) if c != "long"]
    long_scores = np.array([scores[n]["long"] for n in names])
    print(f"tiny, context {p.context_length}, long runs {args.long} steps (cosine)\n")
    print("| setting | " + " | ".join([*columns, "long"]) + " |")
    print("|---|" + "---:|" * (len(columns) + 1))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{scores[n][c]:.4f}" for c in [*columns, "long"]) + " |")
    rho = {c: float(spearmanr([scores[n][c] for n in names], long_scores)[0]) for c in columns}
    print("| **Spearman vs long** | " + " | ".join(f"{rho[c]:+.2f}" for c in columns) + " | |")
    print(
        f"\nScoring every rung: NLL/D {cost['nll_flops']:.3e} FLOPs, {cost['nll_s']:.1f} s; "
        f"greedy forecasts {cost['forecast_flops']:.3e} FLOPs, {cost['forecast_s']:.1f} s"
    )
    if args.json:
        out = {"scores": scores, "spearman": rho, "cost": cost}
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
