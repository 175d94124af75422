"""`mlflow models serve` on the promoted forecaster: REST predictions and HTTP 400 on bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from tests.reliability._registry_fixture import register_tiny_champion

STARTUP_TIMEOUT_S = 90.0


@pytest.fixture
def champion(tracking_uri: str, tmp_path: Path) -> Iterator[str]:
    """A random tiny forecaster registered and promoted to @champion in the temporary store."""
    mlflow.set_tracking_uri(tracking_uri)
    register_tiny_champion(tmp_path, "serve-tests")
    yield tracking_uri
    mlflow.set_tracking_uri(None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"server not up after {STARTUP_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its uvicorn worker (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.mark.slow
def test_serve_champion_over_rest(champion: str, tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        MLFLOW_TRACKING_URI=champion,
        OMP_NUM_THREADS="1",
        # `mlflow models serve` starts `uvicorn` by name: it must be on PATH (the venv's bin)
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    command = [sys.executable, "-m", "mlflow", "models", "serve"]
    command += ["-m", "models:/lv-forecaster@champion", "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_up(url, proc, log)
        columns = ["prey", "predator"]
        good = {
            "dataframe_split": {
                "columns": columns,
                "data": [
                    [[1.0, 0.93, 0.87, 0.8], [0.5, 0.52, 0.56, 0.61]],
                    [[2.5, 2.1, 1.8], [1.2, 1.3, 1.35]],
                ],
            },
            "params": {"horizon": 2},
        }
        status, body = _post(f"{url}/invocations", good)
        assert status == 200, body
        rows = body["predictions"]
        assert len(rows) == 2
        assert all(len(row["prey"]) == 2 and len(row["predator"]) == 2 for row in rows)

        negative = {
            "dataframe_split": {"columns": columns, "data": [[[1.0, -0.9, 0.8], [0.5, 0.6, 0.7]]]},
            "params": {"horizon": 2},
        }
        status, body = _post(f"{url}/invocations", negative)
        assert status == 400
        assert "row 0, field 'prey': value at step 1 is -0.9" in body["message"]

        missing = {"dataframe_split": {"columns": ["prey"], "data": [[[1.0, 0.9, 0.8]]]}}
        status, body = _post(f"{url}/invocations", missing)
        assert status == 400
        assert "missing inputs ['predator']" in body["message"]

        bad_horizon = {**good, "params": {"horizon": 0}}
        status, body = _post(f"{url}/invocations", bad_horizon)
        assert status == 400
        assert "parameter 'horizon' must be between 1" in body["message"]
    finally:
        _stop(proc)
