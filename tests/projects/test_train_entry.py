"""The training entry points: a run logs everything, the budget refuses what does not fit."""

from __future__ import annotations

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from lvtrack.ledger import TAG_PLANNED, TAG_REFUSED
from projects import budget as budget_entry
from projects import train as train_entry


def _train(args: list[str]):
    return CliRunner().invoke(train_entry.main, args)


@pytest.fixture
def base_args(micro_args) -> list[str]:
    return list(micro_args)


def _runs():
    return mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")


def test_train_run_logs_params_metrics_flops_and_artifacts(tracking_uri, base_args):
    result = _train([*base_args, "--steps", "3", "--run-name", "t1"])
    assert result.exit_code == 0, result.output
    (run,) = _runs()
    assert run.info.status == "FINISHED" and run.info.run_name == "t1"
    m, p = run.data.metrics, run.data.params
    assert {"val_mse_h5", "val_mae_h5", "val_invalid_rate", "val_mse_filled_h5"} <= set(m)
    assert "test_mse_h5" not in m  # the test split is reported by the final run only
    assert m["flops_total"] == m["flops_train"] + m["flops_eval"]
    assert 0 < m["flops_total"] <= float(run.data.tags[TAG_PLANNED])
    assert (p["lr"], p["rank"], p["steps"], p["preset"]) == ("0.001", "2", "3", "micro")
    assert {"codec_alpha", "codec_decimals", "trainable_params"} <= set(p)
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["lotka_volterra"]
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [h.step for h in history] == [1, 2, 3]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "codec.json", "flops.json", "plots"} <= arts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    # step_errors: the error against the step ahead (beside the reference forecasters when the
    # experiment has their runs; none here). Greedy scores: no fan chart.
    assert plots == {"plots/curves.png", "plots/forecast_val.png", "plots/step_errors_val.png"}
    adapter = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in adapter


def test_run_over_budget_is_refused_before_training(tracking_uri, base_args):
    result = _train([*base_args, "--steps", "3", "--budget", "1e9"])
    assert result.exit_code == 1
    assert "refused" in result.output and "planned" in result.output
    assert "Traceback" not in result.output
    (run,) = _runs()
    assert run.info.status == "FAILED"
    assert run.data.tags[TAG_REFUSED] == "true"
    assert "train_loss" not in run.data.metrics  # nothing trained


def test_a_refused_run_never_loads_the_base_model(tracking_uri, base_args, monkeypatch):
    """Planning reads the base's config only; weights load after the ledger said yes (a 0.5B
    model takes a minute and GBs of memory on a CPU: not for a run that cannot start)."""
    import lvtrack.training_run

    loads: list[str] = []
    real = lvtrack.training_run.load_base
    monkeypatch.setattr(
        lvtrack.training_run, "load_base", lambda spec, **kw: loads.append(spec) or real(spec, **kw)
    )
    refused = _train([*base_args, "--steps", "3", "--budget", "1e9"])
    assert refused.exit_code == 1 and "refused" in refused.output
    assert loads == []
    admitted = _train([*base_args, "--steps", "1"])
    assert admitted.exit_code == 0, admitted.output
    assert loads == [base_args[3]]  # the same code path loads it once the run is admitted


def test_budget_refuses_once_spent_and_table_adds_up(tracking_uri, base_args):
    assert _train([*base_args, "--steps", "2", "--run-name", "a"]).exit_code == 0
    (first,) = _runs()
    spent = first.data.metrics["flops_total"]
    planned = float(first.data.tags[TAG_PLANNED])
    # A budget that holds one run's plan but not two: the second is refused.
    budget = f"{spent + planned * 0.9:.6e}"
    second = _train([*base_args, "--steps", "2", "--run-name", "b", "--budget", budget])
    assert second.exit_code == 1 and "refused" in second.output
    table = CliRunner().invoke(budget_entry.main, ["--preset", "micro"])
    assert table.exit_code == 0, table.output
    assert "| train | 1 |" in table.output
    report = next(r for r in _runs() if r.info.run_name == "budget")
    finished = [r for r in _runs() if r.data.tags.get("phase") == "train"]
    assert report.data.metrics["flops_spent"] == sum(
        r.data.metrics.get("flops_total", 0.0) for r in finished
    )


def test_budget_table_takes_runs_of_any_phase_tag(tracking_uri):
    """Phase tags are free text (a user's own runs, or none): the table still prints and logs."""
    client = MlflowClient()
    exp = mlflow.set_experiment("phases").experiment_id
    for phase, flops in (("my phase?", 300.0), (None, 200.0)):
        tags = {TAG_PLANNED: "100", **({"phase": phase} if phase else {})}
        run = client.create_run(exp, tags=tags)
        client.log_metric(run.info.run_id, "flops_total", flops)
        client.set_terminated(run.info.run_id)
    table = CliRunner().invoke(budget_entry.main, ["--preset", "micro"])
    assert table.exit_code == 0, table.output
    assert "| my phase? | 1 | 3.000e+02 |" in table.output
    assert "| untagged | 1 | 2.000e+02 |" in table.output
    report = next(r for r in client.search_runs([exp]) if r.info.run_name == "budget")
    assert report.data.metrics["flops_my phase_"] == 300.0
    assert report.data.metrics["flops_untagged"] == 200.0
    assert report.data.metrics["flops_spent"] == 500.0


def test_bad_parameters_fail_cleanly(tracking_uri, base_args):
    result = _train([*base_args, "--lr", "-3"])
    assert result.exit_code == 2 and "--lr" in result.output
    result = _train(
        ["--preset", "micro", "--base-model", "/nonexistent/model", "--data-file", base_args[-1]]
    )
    assert result.exit_code == 1 and "/nonexistent/model" in result.output
    assert "Traceback" not in result.output
