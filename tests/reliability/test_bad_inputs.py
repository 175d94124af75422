"""Bad inputs fail fast and cleanly: a non-zero exit (or HTTP 400, or a clear exception), a message
that names what was wrong and what to do, no traceback, and no FLOPs charged to the budget.

Four doors: the entry points (click commands run in-process with `CliRunner`, plus one real
`python -m` process), the data file, the base-model spec, and the registered model (in-process
`predict`, and `mlflow models serve` over REST, marked slow). The catalogue of cases, with the
message each gives, is docs/bad-inputs.md.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import h5py
import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import lvdata
from lvdata.cli import main as lvdata_cli
from lvtrack.ledger import METRIC_FLOPS, TAG_PLANNED, read_ledger
from lvtrack.tracking import DEFAULT_EXPERIMENT
from projects import baseline, final, promote, reference, sweep, train
from projects import data as data_entry
from tests.reliability._registry_fixture import register_tiny_champion
from tests.serving import post, serving
from tests.stores import using_store

REPO = Path(__file__).resolve().parents[2]
SEEDED_FLOPS = 123_456_789

COMMANDS: dict[str, click.Command] = {
    "train": train.main,
    "data": data_entry.main,
    "baseline": baseline.main,
    "reference": reference.main,
    "sweep": sweep.main,
    "final": final.main,
    "promote": promote.main,
    "lvdata": lvdata_cli,
}

# -- the tracking store: one per module, with one charged run so the ledger is not empty --------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store holding the experiment with one finished, charged run."""
    root = tmp_path_factory.mktemp("bad-inputs-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(DEFAULT_EXPERIMENT, artifact_location=(root / "mlruns").as_uri())
    run = client.create_run(exp, run_name="already spent", tags={"phase": "train"})
    client.set_tag(run.info.run_id, TAG_PLANNED, str(SEEDED_FLOPS))
    client.log_metric(run.info.run_id, METRIC_FLOPS, float(SEEDED_FLOPS))
    client.set_terminated(run.info.run_id, "FINISHED")
    return uri


@pytest.fixture
def in_store(store: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The module's store as $MLFLOW_TRACKING_URI and MLflow's current URI for one test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no machine here reaches the hub: never wait on it
    with using_store(monkeypatch, store):
        yield store


@dataclass(frozen=True)
class Spending:
    """What the store charges: the ledger totals, the charged runs, runs still RUNNING."""

    spent: int
    reserved: int
    charged: frozenset[tuple[str, int]]
    with_flops: frozenset[str]
    running: frozenset[str]


def spending(uri: str) -> Spending:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    assert exp is not None
    ledger = read_ledger(client, exp.experiment_id, budget=0)
    all_exps = [e.experiment_id for e in client.search_experiments()]
    flops = client.search_runs(all_exps, f"metrics.{METRIC_FLOPS} > 0", max_results=1000)
    running = client.search_runs(all_exps, "attributes.status = 'RUNNING'", max_results=1000)
    return Spending(
        spent=ledger.spent,
        reserved=ledger.reserved,
        charged=frozenset((e.run_id, e.charge) for e in ledger.entries if e.charge),
        with_flops=frozenset(r.info.run_id for r in flops),
        running=frozenset(r.info.run_id for r in running),
    )


def test_store_starts_with_one_charged_run(store: str) -> None:
    """The guard below compares against a ledger that really holds something."""
    now = spending(store)
    assert now.spent == SEEDED_FLOPS and now.reserved == 0 and len(now.with_flops) == 1


# -- bad things on disk --------------------------------------------------------------------------


@functools.cache
def _valid() -> lvdata.Trajectories:
    return lvdata.simulate(10, seed=1)


def _h5(path: Path, **datasets: Any) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value
    return path


def _with(change: Callable[[np.ndarray], None]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        values = _valid().values.copy()
        change(values)
        return _h5(tmp / "bad.h5", trajectories=values, time=_valid().time)

    return make


def _set(index: tuple[int, int, int], value: float) -> Callable[[np.ndarray], None]:
    def change(values: np.ndarray) -> None:
        values[index] = value

    return change


def _text_file(tmp: Path) -> Path:
    path = tmp / "notes.h5"
    path.write_text("prey,predator\n1.0,0.5\n")
    return path


def _folder(tmp: Path) -> Path:
    path = tmp / "folder"
    path.mkdir()
    return path


def _inside_a_file(tmp: Path) -> Path:
    (tmp / "plain.txt").write_text("a file, not a folder")
    return tmp / "plain.txt" / "lv.h5"


def _folder_with_config_only(tmp: Path) -> Path:
    path = _folder(tmp)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return path


def _fake_gguf(tmp: Path) -> Path:
    path = tmp / "qwen2.5-0.5b.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip, not GGUF" * 10)
    return path


DATA_MAKERS: dict[str, Callable[[Path], Path]] = {
    "folder": _folder,
    "text": _text_file,
    "no-trajectories": lambda tmp: _h5(tmp / "bad.h5", time=_valid().time),
    "wrong-shape": lambda tmp: _h5(
        tmp / "bad.h5", trajectories=_valid().values[..., :1], time=_valid().time
    ),
    "nan": _with(_set((3, 7, 1), np.nan)),
    "negative": _with(_set((2, 4, 0), -0.5)),
    "time-length": lambda tmp: _h5(
        tmp / "bad.h5", trajectories=_valid().values, time=_valid().time[:50]
    ),
    "few-series": lambda tmp: _h5(
        tmp / "bad.h5", trajectories=_valid().values[:5], time=_valid().time
    ),
    "short-series": lambda tmp: _h5(
        tmp / "bad.h5", trajectories=_valid().values[:, :30], time=_valid().time[:30]
    ),
    "inside-a-file": _inside_a_file,
    "missing": lambda tmp: tmp / "missing.h5",
    "empty-folder": _folder,
    "config-only": _folder_with_config_only,
    "fake-gguf": _fake_gguf,
    "missing-gguf": lambda tmp: tmp / "nowhere" / "model.gguf",
    "missing-folder": lambda tmp: tmp / "no-such-model",
}

# -- entry points ---------------------------------------------------------------------------------

MICRO = ["--preset", "micro", "--base-model", "{tiny}", "--data-file", "{data}"]


def case(
    case_id: str,
    command: str,
    args: list[str],
    fragments: list[str],
    exit_code: int = 1,
    bad: str | None = None,
) -> Any:
    return pytest.param(command, args, fragments, exit_code, bad, id=case_id)


CLI_CASES = [
    # entry-point parameters: click refuses them (exit 2) before anything opens
    case(
        "train-negative-lr",
        "train",
        [*MICRO, "--lr", "-3"],
        ["--lr", "-3.0 is not in the range x>0", "for the preset's value"],
        2,
    ),
    case(
        "train-rank-0",
        "train",
        [*MICRO, "--rank", "0"],
        ["--rank", "0 is not in the range x>=1", "leave it out"],
        2,
    ),
    case(
        "train-steps-0",
        "train",
        [*MICRO, "--steps", "0"],
        ["--steps", "0 is not in the range x>=1"],
        2,
    ),
    case(
        "train-lr-not-a-number",
        "train",
        [*MICRO, "--lr", "fast"],
        ["'fast' is not a valid number"],
        2,
    ),
    case(
        "train-unknown-preset",
        "train",
        ["--preset", "huge"],
        ["--preset", "'huge' is not one of", "'micro', 'qwen', 'tiny'"],
        2,
    ),
    case(
        "train-unknown-schedule",
        "train",
        [*MICRO, "--schedule", "linear"],
        ["--schedule", "'linear' is not one of", "'cosine'"],
        2,
    ),
    case(
        "train-context-shorter-than-one-step",
        "train",
        [*MICRO, "--context-length", "5"],
        ["--context-length", "5 is not in the range x>=24", "two time steps"],
        2,
    ),
    case(
        "train-negative-warmup",
        "train",
        [*MICRO, "--warmup-steps", "-5"],
        ["--warmup-steps", "-5 is not in the range x>=0"],
        2,
    ),
    case(
        "final-steps-negative",  # ("budget" is valid for final: what the budget has left)
        "final",
        [*MICRO, "--steps", "-3"],
        ["--steps", "-3 is not in the range x>=1", "'budget'"],
        2,
    ),
    case(
        "train-plan-over-budget",
        "train",
        [*MICRO, "--batch-size", "100000"],
        ["refused", "planned", "remaining", "Lower steps, batch or context length"],
    ),
    case(
        "data-seed-not-a-number",
        "data",
        ["--data-file", "{data}", "--seed", "abc"],
        ["--seed", "'abc' is not a valid integer"],
        2,
    ),
    case(
        "data-n-systems-too-few",
        "data",
        ["--data-file", "{bad}", "--n-systems", "5"],
        ["--n-systems", "5 is not in the range x>=8"],
        2,
        bad="missing",
    ),
    case(
        "baseline-contexts-not-integers",
        "baseline",
        [*MICRO, "--contexts", "64,big"],
        ["--contexts", "comma-separated integer values", "'64,big'"],
        2,
    ),
    case(
        "baseline-context-shorter-than-one-step",
        "baseline",
        [*MICRO, "--contexts", "64,8"],
        ["--contexts", "x>=24", "'64,8'", "two time steps"],
        2,
    ),
    case(
        "sweep-rank-0",
        "sweep",
        [*MICRO, "--ranks", "2,0"],
        ["--ranks", "0 is not in the range x>=1", "'2,0'"],
        2,
    ),
    case(
        "reference-unknown-forecaster",
        "reference",
        ["--preset", "micro", "--data-file", "{data}", "--only", "magic"],
        ["--only", "unknown ['magic']", "known: ['knn'"],
        2,
    ),
    case(
        "promote-on-a-loss",
        "promote",
        ["--metric", "val_loss"],
        ["'val_loss' looks like a loss", "val_mse_h5", "--allow-loss"],
    ),
    # data files
    case(
        "data-file-missing",
        "lvdata",
        ["inspect", "{bad}"],
        ["missing.h5: no such file", "lvdata simulate --out FILE"],
        bad="missing",
    ),
    case(
        "data-file-is-a-folder",
        "baseline",
        [*MICRO[:4], "--data-file", "{bad}"],
        ["{bad}: is a directory; expected an HDF5 file", "Pass the path of the file itself"],
        bad="folder",
    ),
    case(
        "data-file-not-hdf5",
        "train",
        [*MICRO[:4], "--data-file", "{bad}"],
        ["{bad}: not an HDF5 file", "'trajectories' (N, T, 2)", "lvdata simulate"],
        bad="text",
    ),
    case(
        "data-file-without-trajectories",
        "train",
        [*MICRO[:4], "--data-file", "{bad}"],
        ["{bad}: no dataset 'trajectories' (found: ['time'])", "float32 (N, T, 2)"],
        bad="no-trajectories",
    ),
    case(
        "data-file-wrong-shape",
        "train",
        [*MICRO[:4], "--data-file", "{bad}"],
        ["{bad}: 'trajectories' has shape (10, 100, 1)", "(n_series, n_steps, 2)"],
        bad="wrong-shape",
    ),
    case(
        "data-file-nan",
        "data",
        ["--data-file", "{bad}"],
        ["{bad}: 'trajectories' holds 1 non-finite", "index (3, 7, 1)", "Remove or repair"],
        bad="nan",
    ),
    case(
        "data-file-negative",
        "reference",
        ["--preset", "micro", "--data-file", "{bad}"],
        ["{bad}: 'trajectories' holds 1 negative", "-0.5 at index (2, 4, 0)", "must be >= 0"],
        bad="negative",
    ),
    case(
        "data-file-time-length",
        "train",
        [*MICRO[:4], "--data-file", "{bad}"],
        ["{bad}: 'time' has 50 entries but 'trajectories' has 100 steps", "must match"],
        bad="time-length",
    ),
    case(
        "data-file-too-few-series",
        "train",
        [*MICRO[:4], "--data-file", "{bad}"],
        ["{bad}: 5 series give an empty part", "at least 8 series", "lvdata simulate"],
        bad="few-series",
    ),
    case(
        "data-file-series-too-short",
        "train",
        [*MICRO[:4], "--data-file", "{bad}"],
        ["{bad}: series have 30 time steps", "needs at least 55", "longer series"],
        bad="short-series",
    ),
    case(
        "data-file-inside-a-file",
        "data",
        ["--data-file", "{bad}"],
        ["plain.txt is a file, not a folder", "Pass a --data-file path inside a folder"],
        bad="inside-a-file",
    ),
    # base-model specs
    case(
        "base-missing-folder",
        "train",
        ["--preset", "micro", "--base-model", "{bad}", "--data-file", "{data}"],
        ["no model folder or file at {bad}", "Use instead: a local Hugging Face model folder"],
        bad="missing-folder",
    ),
    case(
        "base-folder-without-a-model",
        "train",
        ["--preset", "micro", "--base-model", "{bad}", "--data-file", "{data}"],
        ["{bad} is not a Hugging Face model folder: no config.json", "Use instead"],
        bad="empty-folder",
    ),
    case(
        "base-folder-without-weights",
        "baseline",
        ["--preset", "micro", "--base-model", "{bad}", "--data-file", "{data}"],
        ["{bad} has a config.json but no weights", "Use instead"],
        bad="config-only",
    ),
    case(
        "base-gguf-not-gguf",
        "train",
        ["--preset", "micro", "--base-model", "{bad}", "--data-file", "{data}"],
        ["could not read the header of GGUF file {bad}", "not a GGUF file", "qwen-gguf"],
        bad="fake-gguf",
    ),
    case(
        "base-gguf-missing",
        "train",
        ["--preset", "micro", "--base-model", "{bad}", "--data-file", "{data}"],
        ["GGUF file not found: {bad}", "qwen-gguf"],
        bad="missing-gguf",
    ),
    case(
        "base-hub-id-not-cached",
        "train",
        ["--preset", "micro", "--base-model", "lv-forecast/no-such-model", "--data-file", "{data}"],
        ["'lv-forecast/no-such-model' is not in the local Hugging Face cache", "Use instead"],
    ),
]


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize(("command", "args", "fragments", "exit_code", "bad"), CLI_CASES)
def test_entry_point_refuses_bad_input(
    in_store: str,
    random_tiny_dir: Path,
    small_data_file: Path,
    tmp_path: Path,
    command: str,
    args: list[str],
    fragments: list[str],
    exit_code: int,
    bad: str | None,
) -> None:
    values = {"tiny": str(random_tiny_dir), "data": str(small_data_file)}
    if bad is not None:
        values["bad"] = str(DATA_MAKERS[bad](tmp_path))
    before = spending(in_store)
    result: Result = CliRunner().invoke(COMMANDS[command], [_fill(a, values) for a in args])

    # handled by click (a real process prints no traceback), with the expected exit code
    assert isinstance(result.exception, SystemExit), (result.exception, result.output[-2000:])
    assert result.exit_code == exit_code, result.output[-2000:]
    assert "Traceback" not in result.output
    assert "Error:" in result.output
    for fragment in fragments:
        assert _fill(fragment, values) in result.output, result.output[-2000:]
    # refused before anything ran: nothing charged, no run left RUNNING (the hub is probed once
    # with a short timeout and never retried: tests/lvmodel/test_base.py)
    assert spending(in_store) == before


def test_entry_point_process_exits_cleanly(
    in_store: str, random_tiny_dir: Path, tmp_path: Path
) -> None:
    """The real `python -m projects.train` process: exit 1, the message on stderr, no traceback."""
    bad = DATA_MAKERS["negative"](tmp_path)
    before = spending(in_store)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_RUN_ID")}
    env.update(MLFLOW_TRACKING_URI=in_store, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "projects.train", "--preset", "micro"]
    command += ["--base-model", str(random_tiny_dir), "--data-file", str(bad)]
    proc = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"Error: {bad}: 'trajectories' holds 1 negative population(s)" in proc.stderr
    assert spending(in_store) == before


# -- the registered model: in-process predict ----------------------------------------------------


@pytest.fixture(scope="module")
def champion(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny forecaster registered and promoted to @champion in the module's store."""
    mlflow.set_tracking_uri(store)
    try:
        yield register_tiny_champion(tmp_path_factory.mktemp("champion"))
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def loaded(champion: str, store: str) -> mlflow.pyfunc.PyFuncModel:
    mlflow.set_tracking_uri(store)
    try:
        return mlflow.pyfunc.load_model(champion)
    finally:
        mlflow.set_tracking_uri(None)


def _frame(prey: list, predator: list) -> pd.DataFrame:
    return pd.DataFrame({"prey": prey, "predator": predator})


GOOD = _frame([[1.0, 0.9, 0.8]], [[0.5, 0.6, 0.7]])
PREDICT_CASES = [
    pytest.param(
        pd.DataFrame({"prey": [[1.0, 0.9]]}),
        {},
        ["missing inputs ['predator']"],
        id="missing-column",
    ),
    pytest.param(
        _frame([[1.0, 0.9, 0.8]], [[0.5, 0.6]]),
        {},
        ["row 0, fields 'prey' and 'predator': lengths differ (3 vs 2)", "same steps"],
        id="unequal-lengths",
    ),
    pytest.param(
        _frame([[1.0, 0.9], [1.0]], [[0.5, 0.6], [0.5]]),
        {},
        ["row 1, fields 'prey' and 'predator': history has 1 step(s)", "at least 2"],
        id="history-shorter-than-2",
    ),
    pytest.param(
        _frame([[1.0, float("nan")]], [[0.5, 0.6]]),
        {},
        ["row 0, field 'prey': value at step 1 is nan", "NaN and infinity are not allowed"],
        id="nan",
    ),
    pytest.param(
        _frame([[1.0, 0.5], [1.5, 2.5]], [[0.5, 0.4], [1.0, -2.0]]),
        {},
        ["row 1, field 'predator': value at step 1 is -2", "populations must be >= 0"],
        id="negative",
    ),
    pytest.param(_frame([], []), {}, ["input is empty", "at least one row"], id="no-rows"),
    pytest.param(
        GOOD,
        {"horizon": 0},
        ["parameter 'horizon' must be between 1 and 1000, got 0"],
        id="horizon-0",
    ),
    pytest.param(GOOD, {"horizon": -3}, ["'horizon'", "got -3"], id="horizon-negative"),
    pytest.param(GOOD, {"horizon": 2.5}, ["horizon", "2.5"], id="horizon-not-an-int"),
    pytest.param(GOOD, {"horizon": "three"}, ["horizon", "three"], id="horizon-a-word"),
    pytest.param(
        GOOD,
        {"num_samples": 0},
        ["parameter 'num_samples' must be between 1 and 64, got 0"],
        id="num-samples-0",
    ),
]


@pytest.mark.parametrize(("frame", "params", "fragments"), PREDICT_CASES)
def test_predict_refuses_bad_input(
    loaded: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame, params: dict, fragments: list[str]
) -> None:
    with pytest.raises(MlflowException) as err:
        loaded.predict(frame, params=params)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert err.value.get_http_status_code() == 400
    for fragment in fragments:
        assert fragment in err.value.message


# -- the registered model over REST (`mlflow models serve`, slow: one server per module) ----------


@pytest.fixture(scope="module")
def served(champion: str, store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow models serve` of the champion, started without --host (its default must be local)."""
    workdir = tmp_path_factory.mktemp("serve")
    with serving(champion, store, workdir) as (url, log):
        assert "--host 127.0.0.1 --port" in log.read_text()  # bound to loopback only
        yield url


def _split(data: list, columns: tuple[str, ...] = ("prey", "predator"), **params: Any) -> dict:
    body: dict[str, Any] = {"dataframe_split": {"columns": list(columns), "data": data}}
    if params:
        body["params"] = params
    return body


OK_ROW = [[1.0, 0.9, 0.8], [0.5, 0.6, 0.7]]
REST_CASES = [
    pytest.param(
        _split([[[1.0, 0.9, 0.8], [0.5, 0.6]]]),
        ["row 0, fields 'prey' and 'predator': lengths differ (3 vs 2)"],
        id="unequal-lengths",
    ),
    pytest.param(
        _split([[[1.0], [0.5]]]), ["history has 1 step(s); at least 2 are needed"], id="too-short"
    ),
    pytest.param(
        b'{"dataframe_split": {"columns": ["prey", "predator"], "data": [[[1.0, NaN], [0.5, 0.6]]]}}',
        ["row 0, field 'prey': value at step 1 is nan", "NaN and infinity are not allowed"],
        id="nan",
    ),
    pytest.param(
        _split([[[1.0, 0.9], [0.5, -0.6]]]),
        ["row 0, field 'predator': value at step 1 is -0.6", "populations must be >= 0"],
        id="negative",
    ),
    pytest.param(
        _split([OK_ROW], columns=("prey", "predators")),
        ["missing inputs ['predator']"],
        id="misspelt-column",
    ),
    pytest.param(
        _split([OK_ROW], horizon=-1),
        ["parameter 'horizon' must be between 1 and 1000, got -1"],
        id="horizon-negative",
    ),
    pytest.param(
        _split([OK_ROW], horizon=2.5), ["'horizon'", "long", "2.5"], id="horizon-not-an-int"
    ),
    pytest.param(
        _split([["1.0, 0.9", [0.5, 0.6]]]),
        ["column prey", "Array(double)", "got str"],
        id="cell-not-a-list",
    ),
    pytest.param(b'{"dataframe_split": [', ["valid JSON"], id="malformed-json"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("payload", "fragments"), REST_CASES)
def test_server_answers_400(served: str, payload: dict | bytes, fragments: list[str]) -> None:
    status, body = post(f"{served}/invocations", payload)
    assert status == 400, body
    assert "Traceback" not in json.dumps(body) and "stack_trace" not in body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


@pytest.mark.slow
def test_server_still_answers_after_bad_requests(served: str) -> None:
    status, body = post(f"{served}/invocations", _split([OK_ROW], horizon=2))
    assert status == 200, body
    (row,) = body["predictions"]
    assert len(row["prey"]) == 2 and len(row["predator"]) == 2
