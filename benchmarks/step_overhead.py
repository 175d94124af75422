"""Time per training step spent outside the step itself, on the `tiny` preset (CPU).

On a GPU a LoRA step of Qwen2.5-0.5B takes about 30 ms; whatever the loop does around it (drawing
the batch, counting FLOPs, writing metrics to MLflow, the progress bar, checkpoints) adds to every
step. This runs `lvmodel.fit` as the `train` entry point does (the tiny preset's settings and
cadence from `lvtrack.request.TrainRequest`, random tiny weights, the project's generated data,
metrics through `lvtrack.runs.FlopsMeter` into a fresh SQLite store) and reports:

- overhead per step (median, and mean over steps with no evaluation or checkpoint due): the wall
  time between two steps minus the step (forward, backward, optimizer);
- the share of the loop's wall time in the steps, in in-run evaluations and in checkpoints.

On a CPU a step's device work is synchronous, so "the step" is its real compute; the overhead is
the host's own work, which a GPU does not hide.

    python benchmarks/step_overhead.py --steps 150
    PYTHONPATH=<old checkout>/packages/lvmodel/src:... python benchmarks/step_overhead.py  # before
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import torch

import lvdata
import lvmodel.train as train_mod
from lvmodel.lora import apply_lora
from lvmodel.tiny import random_tiny
from lvtrack.presets import get_preset
from lvtrack.request import TrainRequest
from lvtrack.runs import FlopsMeter


def timed(record: list[tuple[float, float]], fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record.append((t0, time.perf_counter()))

    return wrapper


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    preset = get_preset("tiny")
    req = TrainRequest.from_preset(preset, "train", "overhead", args.steps)
    config = req.train_config()
    traj = lvdata.simulate(n_systems=120, n_steps=100, seed=args.seed)
    codec = lvdata.LLMTimeCodec.fit(traj.values[:100])
    base, tok = random_tiny(seed=args.seed)
    model = apply_lora(base, req.lora())

    steps: list[tuple[float, float]] = []
    evals: list[tuple[float, float]] = []
    ckpts: list[tuple[float, float]] = []
    fit_cls = train_mod._Fit
    fit_cls.step = timed(steps, fit_cls.step)  # type: ignore[method-assign]
    fit_cls.evaluate = timed(evals, fit_cls.evaluate)  # type: ignore[method-assign]
    fit_cls.checkpoint = timed(ckpts, fit_cls.checkpoint)  # type: ignore[method-assign]

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        mlflow.set_experiment("overhead")
        meter = FlopsMeter()
        if hasattr(FlopsMeter, "log_rows"):  # batched rows at logging points

            def on_metrics(rows: Any) -> None:
                meter.log_rows([(s, m["flops_cumulative"], m) for s, m in rows])
        else:  # one synchronous write per step

            def on_metrics(step: int, metrics: dict[str, float]) -> None:  # type: ignore[misc]
                meter.log(metrics["flops_cumulative"], step, metrics)

        with mlflow.start_run():
            t0 = time.perf_counter()
            train_mod.fit(
                model, tok, codec, traj.values[:100], traj.values[100:], config, req.lora(),
                on_metrics=on_metrics, checkpoint_dir=Path(tmp) / "ckpt", progress=True,
            )  # fmt: skip
            wall = time.perf_counter() - t0

    busy = sorted(evals + ckpts)
    gaps = []
    for (_, a1), (b0, _) in itertools.pairwise(steps):
        if not any(a1 <= e0 < b0 for e0, _ in busy):
            gaps.append(b0 - a1)
    in_steps = sum(b - a for a, b in steps)
    in_evals = sum(b - a for a, b in evals)
    in_ckpts = sum(b - a for a, b in ckpts)
    print(
        f"tiny preset, {len(steps)} steps of {config.batch_size} x {config.context_length}, "
        f"cadence: eval_every {config.eval_every}, forecast_every {config.forecast_every}, "
        f"checkpoint_every {config.checkpoint_every}"
        + (
            f", checkpoint_seconds {config.checkpoint_seconds}"
            if hasattr(config, "checkpoint_seconds")
            else ""
        )
    )
    print(f"step itself: median {statistics.median(b - a for a, b in steps) * 1e3:.1f} ms")
    print(
        f"overhead per step (no evaluation or checkpoint due): median "
        f"{statistics.median(gaps) * 1e3:.2f} ms, mean {statistics.mean(gaps) * 1e3:.2f} ms "
        f"over {len(gaps)} steps"
    )
    print(
        f"overhead per step, all steps: {(wall - in_steps - in_evals - in_ckpts) / len(steps) * 1e3:.2f}"
        f" ms mean; wall {wall:.1f} s: steps {in_steps / wall:.1%}, in-run evaluations "
        f"{in_evals / wall:.1%} ({len(evals)}), checkpoints {in_ckpts / wall:.1%} ({len(ckpts)})"
    )


if __name__ == "__main__":
    main()
