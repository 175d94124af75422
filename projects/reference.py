"""`reference` entry point: the non-LLM forecasters on the same protocol, one run each.

Persistence, the training mean, a VAR on log values, a nearest-neighbour analog over the training
split, and the Rosenzweig-MacArthur ODE fitted to each history (`lvmodel.reference`), scored on the
validation and test splits exactly like the LLM runs, so the MLflow UI shows where the LLM stands.
They use no LLM and are not charged to the FLOPs budget (their CPU cost is negligible).
"""

from __future__ import annotations

import json

import click
import mlflow

from lvmodel.evaluate import Evaluation
from lvmodel.metrics import protocol_split, score
from lvmodel.reference import REFERENCE_FORECASTERS, make_reference
from lvtrack.datafile import prepare_data
from lvtrack.describe import describe_run, parent_description, run_description
from lvtrack.evaluation_log import log_common, log_evaluation
from lvtrack.ledger import TAG_PHASE
from lvtrack.options import data_option, preset_option
from lvtrack.presets import get_preset
from lvtrack.tracking import setup_tracking


@click.command()
@preset_option
@data_option
@click.option("--only", default="", help="Comma-separated forecasters (default: all).")
def main(preset: str, data_file: str, only: str) -> None:
    """Fit each reference forecaster on the training split; score validation and test."""
    p = get_preset(preset)
    names = [n for n in only.split(",") if n] or list(REFERENCE_FORECASTERS)
    unknown = sorted(set(names) - set(REFERENCE_FORECASTERS))
    if unknown:
        raise click.BadParameter(
            f"unknown {unknown}; known: {sorted(REFERENCE_FORECASTERS)}", param_hint="--only"
        )
    setup_tracking()
    prep = prepare_data(data_file)
    summary = {}
    with mlflow.start_run(run_name="reference"):
        mlflow.set_tags(
            {
                TAG_PHASE: "reference",
                "preset": p.name,
                "mlflow.runName": "reference",
                "lv.parent": "true",
            }
        )
        for name in names:
            with mlflow.start_run(run_name=f"reference {name}", nested=True):
                mlflow.set_tags(
                    {
                        TAG_PHASE: "reference",
                        "preset": p.name,
                        "forecaster": name,
                        "mlflow.runName": f"reference {name}",
                    }
                )
                log_common(
                    prep,
                    {
                        "forecaster": name,
                        "history_steps": p.history_steps,
                        "horizon": p.horizon,
                        "preset": p.name,
                    },
                )
                model = make_reference(name).fit(prep.series("train"), prep.traj.time)
                scored: dict[str, float] = {}
                for split in ("val", "test"):
                    hist, truth = protocol_split(
                        prep.scored(split, p.eval_series), p.history_steps, p.horizon
                    )
                    pred = model.predict(hist, p.horizon)
                    ev = Evaluation(
                        metrics=score(pred, hist, truth),
                        histories=hist,
                        truth=truth,
                        predictions=pred,
                    )
                    metrics = log_evaluation(ev, split, p.horizon, prep.traj.time)
                    scored.update(metrics)
                    summary[f"{name}/{split}"] = metrics[f"{split}_mse_h{p.horizon}"]
                mlflow.log_metric("flops_total", 0.0)
                describe_run(run_description("reference", {"forecaster": name}, scored))
        children = [({"forecaster": n}, summary[f"{n}/val"]) for n in names]
        metric = f"val_mse_h{p.horizon}"
        describe_run(
            parent_description("reference", len(names), "forecasters", children, metric=metric)
        )
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
