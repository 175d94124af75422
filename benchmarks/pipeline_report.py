"""Report on a finished (or dead) `pipeline` experiment: wall time per phase, budget, accuracy table.

Reads the experiment's runs from MLflow (the pipeline's step runs are tagged `phase`, see
projects/pipeline.py and packages/lvtrack/src/lvtrack/ledger.py) and prints:

- wall time of each pipeline step (the newest finished run of each entry point, else the newest
  one), their sum and the pipeline runs' own durations; the target on one H200-class GPU is the
  whole qwen pipeline in at most 20 minutes;
- the FLOPs budget used: the sum of `flops_total` over the experiment's budgeted runs (as the
  ledger counts them: a refused run holds nothing, a running one its reservation), by phase, and
  as a share of the budget (the runs' `lv.budget` tag, else 1e17);
- an accuracy table like the reference study's: MSE and MAE at horizon 5 (original units;
  `val_mse_h5`, `val_mae_h5`, `test_*` where logged) of the untrained model (the `baseline`
  phase's runs, one per context), the initial run, the context sweep and the final run, at each
  context length; cells no run evaluated are marked `n/e`; plus the reference forecasters.

Usage:
  python benchmarks/pipeline_report.py --experiment-name NAME [--tracking-uri URI] [--json FILE]
  python benchmarks/pipeline_report.py --experiment-id 3 --tracking-uri sqlite:///mlflow.db

Needs mlflow (pip install -r requirements.txt); the tracking URI defaults to
$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STEPS = ("data", "reference", "baseline", "initial", "sweep", "context", "final")
STEPS_ALL = (*STEPS, "budget")
MODEL_ROWS = (
    ("untrained", "baseline"),
    ("initial", "initial"),
    ("context sweep", "context"),
    ("final", "final"),
)
SPLIT_METRICS = (
    ("val", "MSE", "val_mse_h5"),
    ("val", "MAE", "val_mae_h5"),
    ("test", "MSE", "test_mse_h5"),
    ("test", "MAE", "test_mae_h5"),
)
DEFAULT_BUDGET = 1e17
TARGET_MINUTES = 20
TAG_PHASE, TAG_PLANNED, TAG_REFUSED, TAG_BUDGET = (
    "phase",
    "lv.flops_planned",
    "lv.refused",
    "lv.budget",
)
TAG_ENTRY, TAG_PARENT = "mlflow.project.entryPoint", "mlflow.parentRunId"
OPEN = ("RUNNING", "SCHEDULED")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="pipeline_report.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment-name", help="the experiment the pipeline ran in")
    which.add_argument("--experiment-id", help="... or its id")
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    p.add_argument("--wall-seconds", type=float, help="the whole `mlflow run`, timed outside")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON here")
    return p.parse_args(argv)


# -- reading runs ----------------------------------------------------------------------------------


def all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def seconds(run: Any) -> float | None:
    if not run.info.end_time:
        return None
    return (run.info.end_time - run.info.start_time) / 1e3


def newest(runs: Iterable[Any]) -> Any | None:
    """The newest FINISHED run, else the newest of any status."""
    runs = sorted(runs, key=lambda r: r.info.start_time, reverse=True)
    done = [r for r in runs if r.info.status == "FINISHED"]
    return (done or runs or [None])[0]


def step_runs(runs: list[Any]) -> dict[str, Any]:
    """Entry point -> the `mlflow run` run of that pipeline step that counts."""
    out = {}
    for step in STEPS_ALL:
        run = newest(r for r in runs if r.data.tags.get(TAG_ENTRY) == step)
        if run is not None:
            out[step] = run
    return out


def descendants(runs: list[Any], root: Any) -> list[Any]:
    """Every run below `root` (children, grandchildren...)."""
    kids: dict[str, list[Any]] = {}
    for r in runs:
        kids.setdefault(r.data.tags.get(TAG_PARENT, ""), []).append(r)
    out, todo = [], [root.info.run_id]
    while todo:
        for r in kids.get(todo.pop(), []):
            out.append(r)
            todo.append(r.info.run_id)
    return out


def context_of(run: Any) -> int | None:
    value = run.data.params.get("context_length") or run.data.params.get("resolved_context_length")
    try:
        return int(float(value)) if value not in (None, "", "-1") else None
    except ValueError:
        return None


# -- the report ------------------------------------------------------------------------------------


def phase_times(runs: list[Any], steps: dict[str, Any]) -> dict[str, Any]:
    pipelines = sorted(
        (r for r in runs if r.data.tags.get(TAG_ENTRY) == "pipeline"),
        key=lambda r: r.info.start_time,
    )
    last = pipelines[-1].info.run_id if pipelines else None
    rows = [
        {
            "step": step,
            "run_id": run.info.run_id,
            "status": run.info.status,
            "seconds": seconds(run),
            # a step the newest pipeline run reused ran under an earlier one (or on its own)
            "reused": last is not None and run.data.tags.get(TAG_PARENT) != last,
        }
        for step, run in steps.items()
    ]
    return {
        "steps": rows,
        "steps_total_s": sum(r["seconds"] or 0.0 for r in rows),
        "pipeline_runs": [
            {"run_id": r.info.run_id, "status": r.info.status, "seconds": seconds(r)}
            for r in pipelines
        ],
    }


def budget_used(runs: list[Any]) -> dict[str, Any]:
    """FLOPs charged, as lvtrack.ledger counts them, over the runs with a planned-FLOPs tag."""
    by_phase: dict[str, float] = {}
    total = 0.0
    plain = sum(r.data.metrics.get("flops_total", 0.0) for r in runs)
    budgets = set()
    for r in runs:
        tags = r.data.tags
        if not tags.get(TAG_PLANNED) or tags.get(TAG_REFUSED) == "true":
            continue
        if tags.get(TAG_BUDGET):
            budgets.add(float(tags[TAG_BUDGET]))
        spent = r.data.metrics.get("flops_total", 0.0)
        charge = max(spent, float(tags[TAG_PLANNED])) if r.info.status in OPEN else spent
        phase = tags.get(TAG_PHASE) or "untagged"
        by_phase[phase] = by_phase.get(phase, 0.0) + charge
        total += charge
    budget = max(budgets) if budgets else DEFAULT_BUDGET
    return {
        "flops_total": total,
        "flops_total_all_runs": plain,
        "budget": budget,
        "budget_share": total / budget,
        "budget_share_of_1e17": total / 1e17,
        "by_phase": by_phase,
        "budget_tags": sorted(budgets),
    }


def accuracy(runs: list[Any], steps: dict[str, Any]) -> dict[str, Any]:
    """model -> context -> metric -> value, from the step runs' descendants that logged them."""
    table: dict[str, dict[int, dict[str, float]]] = {}
    contexts: set[int] = set()
    for label, step in MODEL_ROWS:
        root = steps.get(step)
        if root is None:
            continue
        for run in sorted(descendants(runs, root), key=lambda r: r.info.start_time):
            ctx = context_of(run)
            metrics = {m: run.data.metrics[m] for _, _, m in SPLIT_METRICS if m in run.data.metrics}
            if ctx is None or not metrics:
                continue
            contexts.add(ctx)
            table.setdefault(label, {})[ctx] = metrics  # the newest run per context wins
    if "baseline" in steps:
        resolved = steps["baseline"].data.params.get("resolved_contexts", "")
        contexts.update(int(c) for c in resolved.split(",") if c.strip().isdigit())
    reference = {}
    if "reference" in steps:
        for run in descendants(runs, steps["reference"]):
            name = (run.info.run_name or "").removeprefix("reference ").strip()
            metrics = {m: run.data.metrics[m] for _, _, m in SPLIT_METRICS if m in run.data.metrics}
            if metrics:
                reference[name] = metrics
    return {"contexts": sorted(contexts), "models": table, "reference": reference}


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/e"
    return f"{value:.4g}"


def print_report(report: dict[str, Any]) -> None:
    times = report["times"]
    print(f"\nexperiment {report['experiment']} ({report['experiment_id']}) at {report['uri']}")
    print(f"preset {report['preset'] or '?'}\n")
    print("wall time per pipeline step")
    print(f"  {'step':<10} {'status':<9} {'seconds':>9} {'share':>6}  run")
    total = times["steps_total_s"] or 1.0
    for row in times["steps"]:
        s = row["seconds"]
        share = f"{s / total:6.1%}" if s is not None else "     -"
        shown = f"{s:9.1f}" if s is not None else "  running"
        note = "  (reused: not run by the newest pipeline run)" if row["reused"] else ""
        print(f"  {row['step']:<10} {row['status']:<9} {shown} {share}  {row['run_id']}{note}")
    print(f"  {'sum':<10} {'':<9} {times['steps_total_s']:9.1f}")
    for p in times["pipeline_runs"]:
        s = p["seconds"]
        print(
            f"  pipeline run {p['run_id']} {p['status']}: "
            f"{f'{s:.1f} s' if s is not None else 'still running'}"
        )
    wall = report.get("wall_seconds")
    if wall is not None:
        print(f"  mlflow run (timed outside): {wall:.0f} s = {wall / 60:.1f} min")
    if report["preset"] == "qwen":
        reused = [row["step"] for row in times["steps"] if row["reused"]]
        if reused:
            print(
                f"  target <= {TARGET_MINUTES} min: not judged (steps reused: {', '.join(reused)})"
            )
        else:
            spent = wall if wall is not None else times["steps_total_s"]
            verdict = "met" if spent <= TARGET_MINUTES * 60 else "NOT met"
            print(f"  target <= {TARGET_MINUTES} min on one H200-class GPU: {verdict}")

    b = report["budget"]
    print("\nFLOPs budget (sum of flops_total over the budgeted runs)")
    for phase, flops in sorted(b["by_phase"].items(), key=lambda kv: -kv[1]):
        print(f"  {phase:<10} {flops:12.4g}  {flops / b['budget']:7.2%}")
    print(
        f"  {'total':<10} {b['flops_total']:12.4g}  {b['budget_share']:7.2%} of "
        f"{b['budget']:.3g} ({b['flops_total'] / 1e17:.4f} x 1e17)"
    )
    if abs(b["flops_total_all_runs"] - b["flops_total"]) > 0.5:
        print(
            f"  (flops_total over every run, running and refused included: {b['flops_total_all_runs']:.4g})"
        )

    acc = report["accuracy"]
    ctxs = acc["contexts"]
    print("\nhorizon-5 accuracy, original units (n/e: not evaluated at that context)")
    head = "".join(f"{'ctx ' + str(c):>12}" for c in ctxs)
    print(f"  {'model':<14} {'metric':<9}{head}")
    for label, _ in MODEL_ROWS:
        cells = acc["models"].get(label)
        if not cells:
            print(f"  {label:<14} {'(no runs)':<9}")
            continue
        logged = {m for per in cells.values() for m in per}
        first = True
        for split, name, metric in SPLIT_METRICS:
            if metric not in logged:
                continue
            row = "".join(f"{fmt(cells.get(c, {}).get(metric)):>12}" for c in ctxs)
            print(f"  {label if first else '':<14} {split + ' ' + name:<9}{row}")
            first = False
    if acc["reference"]:
        print("\nreference forecasters (no FLOPs; history only)")
        print(f"  {'forecaster':<14}" + "".join(f"{s + ' ' + n:>12}" for s, n, _ in SPLIT_METRICS))
        for name, metrics in sorted(acc["reference"].items()):
            print(
                f"  {name:<14}" + "".join(f"{fmt(metrics.get(m)):>12}" for _, _, m in SPLIT_METRICS)
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        print(
            "pipeline_report: needs mlflow: pip install -r requirements.txt (mlflow==3.17.2)",
            file=sys.stderr,
        )
        return 2
    mlflow.set_tracking_uri(args.tracking_uri)
    client = MlflowClient()
    if args.experiment_name:
        exp = client.get_experiment_by_name(args.experiment_name)
        if exp is None:
            print(
                f"pipeline_report: no experiment named {args.experiment_name!r} at "
                f"{args.tracking_uri}",
                file=sys.stderr,
            )
            return 2
    else:
        try:
            exp = client.get_experiment(args.experiment_id)
        except Exception as err:
            print(f"pipeline_report: experiment {args.experiment_id}: {err}", file=sys.stderr)
            return 2
    runs = all_runs(client, exp.experiment_id)
    if not runs:
        print(f"pipeline_report: experiment {exp.name!r} has no runs", file=sys.stderr)
        return 1
    steps = step_runs(runs)
    presets = {r.data.tags.get("preset") for r in steps.values()} - {None}
    report = {
        "experiment": exp.name,
        "experiment_id": exp.experiment_id,
        "uri": args.tracking_uri,
        "preset": ",".join(sorted(presets)),
        "wall_seconds": args.wall_seconds,
        "times": phase_times(runs, steps),
        "budget": budget_used(runs),
        "accuracy": accuracy(runs, steps),
    }
    print_report(report)
    missing = [s for s in STEPS if s not in steps]
    if missing:
        print(f"\nsteps with no run in this experiment: {', '.join(missing)}")
    summary = {
        "pipeline_wall_s": args.wall_seconds,
        "steps_s": {row["step"]: row["seconds"] for row in report["times"]["steps"]},
        "flops_total": report["budget"]["flops_total"],
        "budget_share": report["budget"]["budget_share"],
        "accuracy": {
            label: {str(c): m for c, m in cells.items()}
            for label, cells in report["accuracy"]["models"].items()
        },
    }
    print("\n" + json.dumps(summary, separators=(",", ":")))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
