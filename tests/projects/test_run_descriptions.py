"""Run descriptions (the tag `mlflow.note.content`, the MLflow UI's description of a run): the
lines of `lvtrack.describe`, and what finished runs of the entry points carry."""

from __future__ import annotations

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from lvtrack import describe
from lvtrack.selection import SELECTION_METRIC
from projects import baseline as baseline_entry
from projects import final as final_entry
from projects import train as train_entry

NAN = float("nan")


def test_a_training_run_line() -> None:
    line = describe.run_description(
        "final",
        {"lr": 3e-3, "rank": 16, "context_length": 256, "steps": 9999},
        {
            "steps_run": 2324.0,  # what ran wins over the steps asked for
            "val_mse_filled_h5": 0.0123,
            "val_mse_h5": 0.0101,  # the filled one is the headline: it is what selects
            "val_invalid_rate": 0.0,
            "test_mse_filled_h5": 0.015,
            "test_invalid_rate": 0.02,
            "budget_share": 0.991,
        },
    )
    assert line == (
        "final · lr 3e-3 · rank 16 · context 256 · 2,324 steps · val MSE h5 0.0123 · "
        "test MSE h5 0.015 (2.0% invalid) · 99.1% of budget"
    )


def test_baseline_reference_and_trial_lines() -> None:
    baseline = describe.run_description(
        "baseline",
        {"lr": 0.0, "rank": 0, "context_length": 128},  # nothing trained: no lr or rank
        {"val_mse_filled_h5": 0.349, "budget_share": 4e-5},
        state="zero-shot",
    )
    assert baseline == "baseline · context 128 · zero-shot · val MSE h5 0.349 · 0.004% of budget"
    reference = describe.run_description(
        "reference", {"forecaster": "knn"}, {"val_mse_h5": 0.0123, "test_mse_h5": 0.0035}
    )
    assert reference == "reference · knn · val MSE h5 0.0123 · test MSE h5 0.0035"
    trial = describe.run_description(
        "search",
        {"lr": 0.00215, "rank": 4, "context_length": 128},
        {SELECTION_METRIC: 0.202, "budget_share": 0.0125},
        label="search trial 3",
        state="pruned at rung 1",
    )
    assert trial == (
        "search trial 3 · lr 2.2e-3 · rank 4 · context 128 · pruned at rung 1 · "
        "val MSE h5 0.202 · 1.2% of budget"
    )
    # a trial that died before its first rung has no score: none is shown, not "nan"
    assert describe.run_description("search", {}, {SELECTION_METRIC: NAN}) == "search"


def test_parent_lines_name_what_they_hold_and_the_best() -> None:
    sweep = describe.parent_description(
        "sweep",
        3,
        "runs",
        [({"lr": 1e-3, "rank": 4}, 0.0123), ({"lr": 1e-4, "rank": 2}, NAN), ({"lr": 5e-5}, 0.02)],
    )
    assert sweep == "sweep · 3 runs · best lr 1e-3 rank 4 · val MSE h5 0.0123"
    context = describe.parent_description(
        "context",
        2,
        "runs",
        [({"context_length": 512}, 0.01), ({"context_length": 128}, 0.03)],
        fixed={"lr": 1e-3, "rank": 4},
    )
    assert context == "context · 2 runs · at lr 1e-3 rank 4 · best context 512 · val MSE h5 0.01"
    reference = describe.parent_description(
        "reference", 2, "forecasters", [({"forecaster": "var"}, 0.008)], metric="val_mse_h5"
    )
    assert reference == "reference · 2 forecasters · best var · val MSE h5 0.008"
    assert describe.parent_description("sweep", 2, "runs", [({"lr": 1e-3}, NAN)]) == (
        "sweep · 2 runs"
    )
    summary = {
        "trials": 12, "completed": 4, "pruned": 8, "search_flops": 1.97e16, "best_value": 0.202,
        "best_trial": 3, "lr": 2e-3, "rank": 8, "context": 256,
    }  # fmt: skip
    assert describe.search_description(summary, 1e17) == (
        "search · 12 trials · 4 completed, 8 pruned, 19.7% of budget · best lr 2e-3 rank 8 "
        "context 256 · val MSE h5 0.202"
    )


def test_report_lines() -> None:
    assert describe.promote_description(3, "champion", SELECTION_METRIC, 0.0123, "2") == (
        "promote · version 3 @champion · val MSE h5 0.0123 · replaces version 2"
    )
    assert describe.promote_description("3", "champion", SELECTION_METRIC, 0.0123, "3").endswith(
        "unchanged"
    )
    assert describe.promote_description(1, "champion", SELECTION_METRIC, 0.5, None).endswith(
        "no previous holder"
    )
    assert describe.budget_description(3.2e16, 1e17, 6.8e16) == (
        "budget · 3.2e16 of 1e17 FLOPs spent (32.0%) · 6.8e16 left"
    )
    assert describe.pipeline_description("grid", ["data", "final", "budget"], ["data"]) == (
        "pipeline · method grid · 3 steps: 2 run, 1 reused · data > final > budget"
    )


def _note(run: mlflow.entities.Run) -> str:
    return run.data.tags[MLFLOW_RUN_NOTE]


def _runs() -> list[mlflow.entities.Run]:
    return mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")


def test_a_micro_training_run_and_its_mlflow_run_parent_are_described(
    tracking_uri: str, micro_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The work run names its phase, settings and headline metric; under `mlflow run` (its run
    and experiment ids in the environment) the entry point's run takes the work run's line and
    names it."""
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("lv-forecast")
    outer = client.create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", outer)  # as `mlflow run` sets them
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    result = CliRunner().invoke(train_entry.main, [*micro_args, "--steps", "2"])
    assert result.exit_code == 0, result.output
    (work,) = [r for r in _runs() if r.info.run_id != outer]
    m = work.data.metrics
    line = _note(work)
    assert line.startswith("train · lr 1e-3 · rank 2 · context 128 · 2 steps · val MSE h5 ")
    assert f"val MSE h5 {describe.number(m[SELECTION_METRIC])}" in line
    assert line.endswith(f" · {describe.percent(m['budget_share'])} of budget")
    assert "test MSE" not in line  # train scores no test split unless asked
    assert _note(client.get_run(outer)) == f"{line} · work run {work.info.run_id}"


def test_baseline_runs_and_their_parent_are_described(
    tracking_uri: str, micro_args: list[str]
) -> None:
    result = CliRunner().invoke(baseline_entry.main, micro_args)
    assert result.exit_code == 0, result.output
    runs = _runs()
    parent = next(r for r in runs if r.data.tags.get("lv.parent") == "true")
    children = sorted(
        (r for r in runs if r is not parent), key=lambda r: int(r.data.params["context_length"])
    )
    assert [r.data.params["context_length"] for r in children] == ["64", "128"]
    for run in children:
        ctx, m = run.data.params["context_length"], run.data.metrics
        assert _note(run) == (
            f"baseline · context {ctx} · zero-shot · val MSE h5 "
            f"{describe.number(m[SELECTION_METRIC])}"
            + (
                f" ({describe.percent(m['val_invalid_rate'])} invalid)"
                if m["val_invalid_rate"]
                else ""
            )
            + f" · {describe.percent(m['budget_share'])} of budget"
        )
    best = min(children, key=lambda r: r.data.metrics[SELECTION_METRIC])
    assert _note(parent) == (
        f"baseline · 2 contexts · best context {best.data.params['context_length']} · "
        f"val MSE h5 {describe.number(best.data.metrics[SELECTION_METRIC])}"
    )


def test_the_final_run_is_described_and_its_version_carries_few_tags(
    tracking_uri: str, micro_args: list[str]
) -> None:
    """Through `finish_run`: the final run's line has both splits; its registered version has
    only the identifying tags and the selection metric, and the card holds the run's figures."""
    result = CliRunner().invoke(final_entry.main, micro_args)
    assert result.exit_code == 0, result.output
    (run,) = _runs()
    m = run.data.metrics
    line = _note(run)
    assert line.startswith("final · lr 1e-3 · rank 2 · context 128 · ")
    assert f"val MSE h5 {describe.number(m[SELECTION_METRIC])}" in line
    assert f"test MSE h5 {describe.number(m['test_mse_filled_h5'])}" in line
    client = mlflow.MlflowClient()
    mv = client.get_model_version("lv-forecaster", run.data.tags["registered_version"])
    assert {k for k in mv.tags if not k.startswith("promotion.")} == {
        "phase", "preset", "base_spec", "base_kind", "lora_rank", "context_length",
        SELECTION_METRIC,
    }  # fmt: skip
    assert (mv.tags["phase"], mv.tags["preset"], mv.tags["lora_rank"]) == ("final", "micro", "2")
    assert float(mv.tags[SELECTION_METRIC]) == m[SELECTION_METRIC]
    (data,) = run.inputs.dataset_inputs
    assert f"digest `{data.dataset.digest}`" in mv.description
    assert f"| MSE | {describe.number(m['val_mse_h5'], 4)} | " in mv.description
    assert f"- FLOPs spent: {describe.sci(m['flops_total'])}" in mv.description
    assert f"- source run: `{run.info.run_id}`" in mv.description


def test_search_trials_carry_their_state_and_the_parent_its_best(
    tracking_uri: str, micro_args: list[str], tmp_path
) -> None:
    import optuna

    from lvtrack.search import TAG_TRIAL, TAG_TRIAL_STATE
    from projects import search as search_entry

    args = [*micro_args, "--budget", "2e12", "--share", "0.25", "--rungs", "2", "--trials", "3"]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = CliRunner().invoke(search_entry.main, [*args, "--storage", storage, "--study", "s"])
    assert result.exit_code == 0, result.output
    runs = _runs()
    (parent,) = [r for r in runs if r.data.tags.get("lv.search_worker") == "true"]
    trials = [r for r in runs if TAG_TRIAL in r.data.tags]
    assert len(trials) >= 2
    for run in trials:
        p, tags = run.data.params, run.data.tags
        line = _note(run)
        assert line.startswith(
            f"search trial {tags[TAG_TRIAL]} · lr {describe.sci(float(p['lr']), 2)} · "
            f"rank {p['rank']} · context {p['context_length']} · {tags[TAG_TRIAL_STATE]} · "
        )
        last = mlflow.MlflowClient().get_metric_history(run.info.run_id, "rung_val_mse_filled_h5")
        assert f"val MSE h5 {describe.number(last[-1].value)}" in line  # its last rung's score
        assert line.endswith(" of budget")
    study = optuna.load_study(study_name="s", storage=storage)  # trials refused by the budget
    states = [t.state for t in study.trials]  # before their run started count too
    completed = [r for r in trials if r.data.tags[TAG_TRIAL_STATE] == "completed"]
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(completed)
    note = _note(parent)
    assert note.startswith(
        f"search · {len(states)} trials · {len(completed)} completed, "
        f"{states.count(optuna.trial.TrialState.PRUNED)} pruned, "
    )
    if completed:
        best = min(completed, key=lambda r: r.data.metrics[SELECTION_METRIC])
        assert note.endswith(f"val MSE h5 {describe.number(best.data.metrics[SELECTION_METRIC])}")


def test_reference_runs_and_their_parent_are_described(tracking_uri: str, small_data_file) -> None:
    from projects import reference as reference_entry

    args = ["--preset", "micro", "--data-file", str(small_data_file), "--only", "persistence,var"]
    result = CliRunner().invoke(reference_entry.main, args)
    assert result.exit_code == 0, result.output
    runs = _runs()
    parent = next(r for r in runs if r.data.tags.get("lv.parent") == "true")
    children = {r.data.tags["forecaster"]: r for r in runs if r is not parent}
    assert set(children) == {"persistence", "var"}
    for name, run in children.items():
        m = run.data.metrics
        assert _note(run) == (
            f"reference · {name} · val MSE h5 {describe.number(m[SELECTION_METRIC])} · "
            f"test MSE h5 {describe.number(m['test_mse_filled_h5'])}"
        )
    best = min(children, key=lambda n: children[n].data.metrics["val_mse_h5"])
    value = children[best].data.metrics["val_mse_h5"]
    assert _note(parent) == (
        f"reference · 2 forecasters · best {best} · val MSE h5 {describe.number(value)}"
    )


def test_a_sweep_parent_names_its_runs_and_the_best(tracking_uri: str, micro_args: list[str]):
    from projects import sweep as sweep_entry

    args = [*micro_args, "--lrs", "0.001", "--ranks", "2,4", "--steps", "1"]
    result = CliRunner().invoke(sweep_entry.main, args)
    assert result.exit_code == 0, result.output
    runs = _runs()
    parent = next(r for r in runs if r.data.tags.get("lv.parent") == "true")
    cells = [r for r in runs if r is not parent]
    assert sorted(_note(r).split(" · val")[0] for r in cells) == [
        "sweep · lr 1e-3 · rank 2 · context 128 · 1 step",
        "sweep · lr 1e-3 · rank 4 · context 128 · 1 step",
    ]
    # the best the sweep itself chose and logged (ties go to the first cell)
    best_rank = parent.data.params["best_rank"]
    value = parent.data.metrics[f"best_{SELECTION_METRIC}"]
    assert value == min(r.data.metrics[SELECTION_METRIC] for r in cells)
    assert _note(parent) == (
        f"sweep · 2 runs · best lr 1e-3 rank {best_rank} · val MSE h5 {describe.number(value)}"
    )
