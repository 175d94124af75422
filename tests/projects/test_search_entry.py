"""`search`: trials are child runs of the search's parent, pruned at their rung with their FLOPs
charged, the ledger never above the budget; bad input refused before anything is charged."""

from __future__ import annotations

import math

import mlflow
import optuna
import pytest
from click.testing import CliRunner

from lvtrack.ledger import TAG_PLANNED, read_ledger
from lvtrack.search import ATTR_RUN, TAG_STUDY, TAG_TRIAL, TAG_TRIAL_STATE
from projects import search as search_entry

BUDGET = 2e12  # micro: rungs of ~15 and ~45 steps, three trials in the search's quarter


def _runs() -> list[mlflow.entities.Run]:
    return mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")


def test_a_search_runs_trials_as_children_charged_to_the_ledger(tracking_uri, micro_args, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [
        *micro_args,
        "--budget",
        f"{BUDGET:g}",
        "--share",
        "0.25",
        "--rungs",
        "2",
        "--trials",
        "3",
    ]
    result = CliRunner().invoke(search_entry.main, [*args, "--storage", storage, "--study", "s"])
    assert result.exit_code == 0, result.output

    runs = _runs()
    (parent,) = [r for r in runs if r.data.tags.get("lv.search_worker") == "true"]
    trials = [r for r in runs if TAG_TRIAL in r.data.tags]
    study = optuna.load_study(study_name="s", storage=storage)
    started = [t for t in study.trials if ATTR_RUN in t.user_attrs]
    assert len(trials) == len(started) >= 2
    by_run = {t.user_attrs[ATTR_RUN]: t for t in started}
    for run in trials:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags[TAG_STUDY] == "s"
        trial = by_run[run.info.run_id]
        assert int(tags[TAG_TRIAL]) == trial.number
        assert run.info.status == "FINISHED"
        assert run.data.metrics["flops_total"] > 0  # what it spent is charged, pruned or not
        state = tags[TAG_TRIAL_STATE]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert state == "completed"
            assert math.isclose(run.data.metrics["val_mse_filled_h5"], trial.value)
        else:
            assert state.startswith("pruned"), state
            assert "val_mse_filled_h5" not in run.data.metrics  # final never picks it
        # Each scored rung's metric at the rung's stable step (the steps logged as a param).
        rung_steps = [int(s) for s in run.data.params["rung_steps"].split(",")]
        history = mlflow.MlflowClient().get_metric_history(
            run.info.run_id, "rung_val_mse_filled_h5"
        )
        assert [m.step for m in history] == rung_steps[: len(history)]
        assert history, "every started trial scores its first rung"

    ledger = read_ledger(mlflow.MlflowClient(), parent.info.experiment_id, int(BUDGET))
    assert ledger.spent + ledger.reserved <= BUDGET
    assert ledger.reserved == 0  # nothing left running
    search_spent = ledger.by_phase()["search"][1]
    assert search_spent <= 0.25 * BUDGET
    assert search_spent == sum(int(r.data.metrics["flops_total"]) for r in trials)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/history.png", "plots/rungs.png"} <= artifacts


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--space", "lr="], "expected LOW:HIGH"),
        (["--space", "lr=1e-2:1e-4"], "LOW < HIGH"),
        (["--space", "depth=3"], "unknown search space name 'depth'"),
        (["--storage", "postgresql://nobody@127.0.0.1:9/none"], "does not answer"),
        (["--share", "1e-9"], "does not cover"),
        (["--trials", "0"], "0 is not in the range x>=1"),
        (["--share", "1.5"], "1.5 is not in the range 0<x<=1"),
    ],
)
def test_bad_input_is_refused_before_anything_is_charged(
    tracking_uri, micro_args, tmp_path, extra, message
):
    storage = ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
    result = CliRunner().invoke(
        search_entry.main, [*micro_args, "--budget", f"{BUDGET:g}", *storage, *extra]
    )
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert not [r for r in _runs() if TAG_PLANNED in r.data.tags]


def test_a_study_made_with_another_space_is_refused(tracking_uri, micro_args, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=storage).set_user_attr("lv.space", '{"lr": [1]}')
    result = CliRunner().invoke(
        search_entry.main,
        [*micro_args, "--budget", f"{BUDGET:g}", "--storage", storage, "--study", "s"],
    )
    assert result.exit_code != 0
    assert "was created with another search space" in result.output
    assert not [r for r in _runs() if TAG_PLANNED in r.data.tags]


def test_a_search_scored_by_nll_feeds_final(tracking_uri, micro_args, tmp_path):
    """`--rung-score nll`: each rung is scored by NLL/D (logged as `rung_val_nll_per_dim_h5`),
    a completed trial carries it as `val_nll_per_dim_h5` (not the forecasting metric, which it
    never computed), the parent names the score, and `final` takes the settings of the trial
    with the lowest NLL/D."""
    from projects import final as final_entry

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [*micro_args, "--budget", f"{BUDGET:g}", "--share", "0.25", "--rungs", "2"]
    args += ["--trials", "3", "--rung-score", "nll", "--storage", storage, "--study", "n"]
    result = CliRunner().invoke(search_entry.main, args)
    assert result.exit_code == 0, result.output
    runs = _runs()
    (parent,) = [r for r in runs if r.data.tags.get("lv.search_worker") == "true"]
    trials = [r for r in runs if TAG_TRIAL in r.data.tags]
    completed = [r for r in trials if r.data.tags[TAG_TRIAL_STATE] == "completed"]
    assert completed
    for run in trials:
        assert "val_mse_filled_h5" not in run.data.metrics
        history = mlflow.MlflowClient().get_metric_history(
            run.info.run_id, "rung_val_nll_per_dim_h5"
        )
        assert history and all(math.isfinite(m.value) for m in history)
    best = min(completed, key=lambda r: r.data.metrics["val_nll_per_dim_h5"])
    assert parent.data.metrics["best_val_nll_per_dim"] == best.data.metrics["val_nll_per_dim_h5"]

    final = CliRunner().invoke(final_entry.main, [*micro_args, "--budget", f"{BUDGET:g}"])
    assert final.exit_code == 0, final.output
    assert f"(from search:{best.info.run_id})" in final.output
