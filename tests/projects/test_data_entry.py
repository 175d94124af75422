"""The `data` entry point: generates or validates the file and logs it to MLflow."""

from __future__ import annotations

import json

import h5py
import mlflow
import numpy as np
from click.testing import CliRunner

import lvdata
from projects import data as data_entry


def _run(args: list[str]):
    return CliRunner().invoke(data_entry.main, args, catch_exceptions=False)


def test_generates_missing_file_and_logs_it(tracking_uri, tmp_path):
    out = tmp_path / "data" / "lv.h5"
    result = _run(["--data-file", str(out), "--n-systems", "20", "--seed", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    traj = lvdata.load_trajectories(out)
    assert traj.values.shape == (20, 100, 2)
    np.testing.assert_array_equal(traj.values, lvdata.simulate(20, seed=3).values)

    run = mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["source"] == "generated"
    assert (params["n_train"], params["n_val"], params["n_test"]) == ("16", "2", "2")
    assert float(params["codec_alpha"]) == summary["alpha"]
    assert 0.99 <= run.data.metrics["train_share_below_10"] <= 1.0
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == [summary["digest"]]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"split.json", "codec.json", "series.png"} <= artifacts


def test_existing_file_is_validated_not_regenerated(tracking_uri, tmp_path):
    out = tmp_path / "lv.h5"
    lvdata.simulate(10, seed=1).save(out)
    result = _run(["--data-file", str(out)])
    assert result.exit_code == 0, result.output
    run = mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")[0]
    assert run.data.params["source"] == "file"
    assert run.data.params["n_series"] == "10"


def test_bad_file_fails_cleanly_before_any_run(tracking_uri, tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["trajectories"] = np.ones((4, 5, 3), dtype=np.float32)
        f["time"] = np.arange(5.0)
    result = CliRunner().invoke(data_entry.main, ["--data-file", str(bad)])
    assert result.exit_code == 1
    assert str(bad) in result.output and "Traceback" not in result.output


def test_logs_the_split_and_codec_training_uses(tracking_uri, tmp_path):
    """What `data` logs is what a training run splits and encodes with: the split of seed 0 and
    the codec fitted on its training part, whatever generator seed made the file."""
    out = tmp_path / "lv.h5"
    lvdata.simulate(30, seed=7).save(out)
    assert _run(["--data-file", str(out), "--seed", "9"]).exit_code == 0
    run = mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")[0]
    logged_split = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/split.json")
    expected = lvdata.split(30, seed=0)  # the experiment's split: seed 0, 80/10/10
    assert logged_split == {k: getattr(expected, k).tolist() for k in ("train", "val", "test")}
    codec = lvdata.LLMTimeCodec.fit(lvdata.load_trajectories(out).values[expected.train])
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/codec.json") == codec.to_dict()
    assert run.data.params["split_seed"] == "0" and run.data.params["seed"] == "9"
