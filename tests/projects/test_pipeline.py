"""`mlflow run . -e pipeline` end to end on the micro preset (a random tiny base: plumbing only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[2]
PHASES = ("data", "reference", "baseline", "initial", "sweep", "context", "final")


@pytest.mark.slow
def test_pipeline_runs_every_step_and_reuses_finished_ones(
    tracking_uri, random_tiny_dir, small_data_file, tmp_path
):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", tracking_uri],
        env=env,
        check=True,
        capture_output=True,
    )
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(REPO),
        "-e",
        "pipeline",
        "--env-manager",
        "local",
        "-P",
        "preset=micro",
        "-P",
        f"base_model={random_tiny_dir}",
        "-P",
        f"data_file={small_data_file}",
        # The cuts for a quick pass of a large model reach every phase that takes them.
        "-P",
        "steps=1",
        "-P",
        "lrs=0.002",
        "-P",
        "ranks=2,4",
        "-P",
        "eval_series=3",
        "-P",
        "method=grid",  # the coursework's; the search pipeline: below
    ]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    phases = {r.data.tags.get("phase") for r in runs}
    assert set(PHASES) | {"report", "pipeline"} <= phases
    assert all(r.info.status == "FINISHED" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs if r.info.status != "FINISHED"
    ]
    # The budget table's total is the sum of flops_total over the budgeted runs.
    report = next(r for r in runs if r.info.run_name == "budget")
    budgeted = [r for r in runs if "lv.flops_planned" in r.data.tags]
    # baseline, initial, sweep (1 lr x 2), context, final; the report's test cells: the base and
    # the initial run at both contexts, the final run at the context it did not train at
    assert len(budgeted) == 2 + 1 + 2 + 2 + 1 + 5
    trained = [r for r in budgeted if r.data.tags["phase"] not in ("baseline", "report")]
    assert {r.data.params["steps"] for r in trained} == {"1"}
    assert {r.data.metrics["steps_run"] for r in trained} == {1.0}
    assert {r.data.params["eval_series"] for r in budgeted} == {"3"}
    sweep = sorted(
        (r.data.params["lr"], r.data.params["rank"])
        for r in trained
        if r.data.tags["phase"] == "sweep"
    )
    assert sweep == [("0.002", "2"), ("0.002", "4")]
    assert report.data.metrics["flops_spent"] == sum(
        r.data.metrics["flops_total"] for r in budgeted
    )
    final = next(r for r in budgeted if r.data.tags["phase"] == "final")
    assert {"val_mse_h5", "test_mse_h5", "test_mae_h5"} <= set(final.data.metrics)
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("lv-forecaster", "champion")
    assert champion.run_id == final.info.run_id

    # A second pipeline reuses every finished step: no new training runs.
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (second.stdout + second.stderr).count("already finished") == 7
    again = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len([r for r in again if "lv.flops_planned" in r.data.tags]) == len(budgeted)


def test_the_search_pipeline_runs_search_in_place_of_sweep_and_context(tracking_uri, monkeypatch):
    """`--method search` (the default): each step an MLflow project run, in this order, with
    the cuts it takes (the steps are faked: the search itself is tested in test_search_entry)."""
    from click.testing import CliRunner

    from projects import pipeline

    ran: list[tuple[str, dict[str, str]]] = []

    class Submitted:
        def __init__(self, entry_point: str) -> None:
            self.run_id = f"run-{entry_point}"

    def fake_run(uri, entry_point, parameters, **kw):
        ran.append((entry_point, parameters))
        return Submitted(entry_point)

    monkeypatch.setattr(mlflow.projects, "run", fake_run)
    result = CliRunner().invoke(pipeline.main, ["--preset", "micro", "--eval-series", "3"])
    assert result.exit_code == 0, result.output
    assert [e for e, _ in ran] == [
        "data", "reference", "baseline", "initial", "search", "final", "report",
        "budget",
    ]  # fmt: skip
    params = dict(ran)
    assert params["search"] == {
        "data_file": "data/lotka_volterra_data.h5",
        "preset": "micro",
        "eval_series": "3",
    }
    assert params["report"] == params["search"]  # the runs' own base model, the series cut
