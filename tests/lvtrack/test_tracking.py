"""lvtrack.tracking: which experiment runs go to, that it is marked as model training (so that
MLflow's UI shows its runs), and dataset inputs surviving the concurrent-insert race of MLflow's
SQL store."""

from __future__ import annotations

import sys
import textwrap
import threading

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lvtrack import tracking

KIND = "mlflow.experimentKind"

DUPLICATE = (
    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"'
)


def _flaky_log_input(monkeypatch, errors):
    """Make mlflow.log_input raise each of `errors` once, then behave normally; returns call log."""
    real = mlflow.log_input
    calls = []

    def log_input(*args, **kwargs):
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", log_input)
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    return calls


def test_dataset_lost_to_a_concurrent_insert_is_linked_on_retry(
    tracking_uri, tmp_path, monkeypatch
):
    values = np.ones((3, 4, 2), dtype=np.float32)
    calls = _flaky_log_input(monkeypatch, [MlflowException(DUPLICATE)] * 2)
    with mlflow.start_run() as run:
        digest = tracking.log_dataset(values, tmp_path / "lv.h5", name="lv", context="training")
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert len(calls) == 3
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("lv", digest)]


def test_other_errors_are_not_retried(tracking_uri, tmp_path, monkeypatch):
    calls = _flaky_log_input(monkeypatch, [MlflowException("RESOURCE_DOES_NOT_EXIST: no run")])
    with mlflow.start_run(), pytest.raises(MlflowException, match="no run"):
        tracking.log_dataset(np.ones((1, 2, 2)), tmp_path / "x.h5", name="lv", context="training")
    assert len(calls) == 1


def test_a_race_that_never_clears_still_raises(tracking_uri, tmp_path, monkeypatch):
    calls = _flaky_log_input(monkeypatch, [MlflowException(DUPLICATE)] * 10)
    with mlflow.start_run(), pytest.raises(MlflowException, match="dataset_pk"):
        tracking.log_dataset(np.ones((1, 2, 2)), tmp_path / "x.h5", name="lv", context="training")
    assert len(calls) == 4


# -- which experiment, and its kind -------------------------------------------------------------


@pytest.fixture
def fresh_note(monkeypatch):
    """The "runs go to Default" note is said once per process: let this test see it again."""
    monkeypatch.setattr(tracking, "_noted_default", False)


def _experiment(experiment_id: str):
    return MlflowClient().get_experiment(experiment_id)


def test_runs_go_to_lv_forecast_marked_as_model_training(tracking_uri, fresh_note, capsys):
    experiment_id = tracking.setup_tracking()
    exp = _experiment(experiment_id)
    assert exp.name == "lv-forecast"
    assert exp.tags[KIND] == "custom_model_development"
    assert "Default" not in capsys.readouterr().err
    assert tracking.setup_tracking() == experiment_id  # the same experiment, not a second one


def test_tracking_is_set_up_once_per_process(tracking_uri, monkeypatch):
    """A later call with the same store and experiment asks the store nothing again; another
    experiment is set up on its own."""
    asked: list[str | None] = []
    chosen = tracking._chosen_experiment
    monkeypatch.setattr(tracking, "_chosen_experiment", lambda e: asked.append(e) or chosen(e))
    first = tracking.setup_tracking()
    assert tracking.setup_tracking() == tracking.setup_tracking() == first
    assert asked == [None]
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")  # as a new process would choose again
    other = tracking.setup_tracking("another")
    assert other != first and asked == [None, "another"]


def test_the_mlflow_run_parent_is_named_apart_from_the_work_run(tracking_uri, monkeypatch):
    """Under `mlflow run` the run it made becomes the work run's parent, named
    `<name> (mlflow run)` so that the runs list tells it from the run that trained."""
    from lvtrack.runs import entry_parent

    client = MlflowClient()
    made = client.create_run(tracking.setup_tracking(), run_name="whatever").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", made)
    with entry_parent("final", "micro", "final") as parent:
        assert parent is not None and parent.info.run_id == made
    assert client.get_run(made).info.run_name == "final (mlflow run)"
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)  # MLflow drops it when the run ends
    with entry_parent("final", "micro", "final") as parent:
        assert parent is None  # run by hand: no parent


def test_a_named_experiment_beats_the_environment_and_both_beat_the_default(
    tracking_uri, monkeypatch
):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-lv")
    from_env = tracking.setup_tracking()
    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID (for subprocesses): in one process the
    # first choice stays. A new process:
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
    named = tracking.setup_tracking("my-study")
    assert _experiment(from_env).name == "team-lv"
    assert _experiment(named).name == "my-study"
    assert {_experiment(i).tags[KIND] for i in (from_env, named)} == {"custom_model_development"}
    assert MlflowClient().get_experiment_by_name("lv-forecast") is None


def test_the_experiment_mlflow_run_chose_is_used_and_marked(tracking_uri, monkeypatch):
    client = MlflowClient()
    chosen = client.create_experiment("chosen-by-mlflow-run")
    other = client.create_experiment("holds-the-run")
    run_id = client.create_run(other).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    assert tracking.setup_tracking("ignored") == other  # the run's experiment
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", chosen)
    assert tracking.setup_tracking("ignored") == chosen  # the id beats the run
    assert _experiment(chosen).tags[KIND] == _experiment(other).tags[KIND]
    assert _experiment(chosen).tags[KIND] == "custom_model_development"
    assert client.get_experiment_by_name("ignored") is None


def test_an_existing_experiment_without_a_kind_gets_one_and_a_chosen_kind_stays(tracking_uri):
    client = MlflowClient()
    plain = client.create_experiment("lv-forecast", tags={"team": "a"})  # made before the tag
    chosen = client.create_experiment("tuned", tags={KIND: "finetuning"})
    assert tracking.setup_tracking() == plain
    assert _experiment(plain).tags == {"team": "a", KIND: "custom_model_development"}
    tracking.setup_tracking("tuned")
    assert _experiment(chosen).tags[KIND] == "finetuning"


def test_default_because_nobody_named_one_is_marked_and_says_how_to_name_one_once(
    tracking_uri, monkeypatch, fresh_note, capsys
):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "0")  # what `mlflow run` sets without a name
    assert tracking.setup_tracking() == "0"
    assert tracking.setup_tracking() == "0"
    err = capsys.readouterr().err
    assert err.count("`Default` experiment") == 1
    assert "--experiment-name lv-forecast" in err
    assert _experiment("0").tags[KIND] == "custom_model_development"


def test_mlflow_run_without_an_experiment_name_lands_in_default_with_the_note(
    tracking_uri, tmp_path, fresh_note, capfd
):
    """The issue's case end to end: `mlflow run` makes its run in Default before our code runs;
    with `--experiment-name` the runs go to the named experiment and nothing is said."""
    project = tmp_path / "project"
    project.mkdir()
    command = f"{sys.executable} -c 'from lvtrack.tracking import setup_tracking; setup_tracking()'"
    (project / "MLproject").write_text(
        textwrap.dedent(f"""\
            name: probe
            entry_points:
              main:
                command: "{command}"
            """)
    )
    unnamed = mlflow.projects.run(str(project), env_manager="local", synchronous=True)
    unnamed_err = capfd.readouterr().err
    named = mlflow.projects.run(
        str(project), env_manager="local", experiment_name="lv-forecast", synchronous=True
    )
    named_err = capfd.readouterr().err
    client = MlflowClient()
    assert client.get_run(unnamed.run_id).info.experiment_id == "0"
    assert "`Default` experiment" in unnamed_err and "--experiment-name" in unnamed_err
    assert _experiment("0").tags[KIND] == "custom_model_development"
    lv = client.get_experiment_by_name("lv-forecast")
    assert client.get_run(named.run_id).info.experiment_id == lv.experiment_id
    assert lv.tags[KIND] == "custom_model_development"
    assert "`Default` experiment" not in named_err


def test_a_kind_tag_another_process_inserted_first_is_not_an_error(tracking_uri, monkeypatch):
    def lost_race(self, experiment_id, key, value):
        raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: experiment_tags")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", lost_race)
    experiment_id = tracking.setup_tracking()
    assert _experiment(experiment_id).name == "lv-forecast"


def test_other_failures_to_tag_the_experiment_raise(tracking_uri, monkeypatch):
    def refused(self, experiment_id, key, value):
        raise MlflowException("PERMISSION_DENIED: read-only user")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", refused)
    with pytest.raises(MlflowException, match="read-only"):
        tracking.setup_tracking()


def test_ui_url_opens_the_runs_flat_best_first_in_the_model_training_view():
    url = tracking.ui_url("3", "http://127.0.0.1:5001/")
    base, query = url.split("?")
    assert base == "http://127.0.0.1:5001/#/experiments/3/runs"
    assert dict(p.split("=") for p in query.split("&")) == {
        "workflowType": "machine_learning",
        "orderByKey": "metrics.%60val_mse_filled_h5%60",
        "orderByAsc": "true",
    }
    assert tracking.ui_url("1").startswith("http://127.0.0.1:5000/#/experiments/1/runs?")


def test_ui_hint_names_the_store_and_the_training_runs_address(tracking_uri, monkeypatch):
    hint = tracking.ui_hint("4")
    assert f"mlflow ui --backend-store-uri {tracking_uri}," in hint
    assert "http://127.0.0.1:5000/#/experiments/4/runs?workflowType=machine_learning" in hint
    # Against a tracking server, that server's own address (no `mlflow ui` to start).
    monkeypatch.setattr(tracking.mlflow, "get_tracking_uri", lambda: "https://mlflow.lab:8443")
    hint = tracking.ui_hint("4")
    assert "mlflow ui" not in hint
    assert "open https://mlflow.lab:8443/#/experiments/4/runs?workflowType=machine_learning" in hint


def _race(tracking_uri, write, rounds=6, writers=4, until_error=False):
    """`writers` threads set the same new tag on one run at once, `rounds` times (with
    `until_error`, until one of them fails, at most `rounds` times); returns the errors raised
    and the run's tags."""
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("race")).info.run_id
    errors: list[BaseException] = []

    def one(barrier, key, value):
        barrier.wait()
        try:
            write(run_id, key, value)
        except Exception as exc:
            errors.append(exc)

    for r in range(rounds):
        if until_error and errors:
            break
        barrier = threading.Barrier(writers)
        threads = [
            threading.Thread(target=one, args=(barrier, f"best_{r}", f"w{w}"))
            for w in range(writers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return errors, client.get_run(run_id).data.tags


def test_a_tag_several_processes_write_at_once_is_set_by_all_of_them(tracking_uri):
    """Four search workers write the shared parent's best_* tags as each ends; MLflow's one-tag
    path fails on the tags' unique key when two insert the same new key at once."""
    errors, tags = _race(tracking_uri, lambda run, k, v: tracking.set_run_tags(run, {k: v}))
    assert errors == []
    assert {k: v for k, v in tags.items() if k.startswith("best_")}.keys() == {
        f"best_{r}" for r in range(6)
    }
    assert all(tags[f"best_{r}"] in {"w0", "w1", "w2", "w3"} for r in range(6))


def test_the_race_is_real_on_mlflows_one_tag_path(tracking_uri):
    """What set_run_tags avoids: the same race through MlflowClient.set_tag loses writes. A race
    needs two inserts to meet: on a loaded machine a round can pass without one, so the rounds
    go on until one fails (a few rounds on an idle machine; 200 at the most)."""
    errors, _ = _race(tracking_uri, MlflowClient().set_tag, rounds=200, until_error=True)
    assert errors, "MLflow's set_tag no longer races; set_run_tags' reason is gone"
    assert any("UNIQUE constraint" in str(e) for e in errors)


def test_set_run_tags_without_a_run_refuses(tracking_uri):
    with pytest.raises(RuntimeError, match="no active run"):
        tracking.set_run_tags(None, {"a": "b"})
