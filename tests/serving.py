"""Helpers for tests that start `mlflow models serve` and talk to it over REST."""

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
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, payload: dict | bytes) -> tuple[int, dict]:
    """POST JSON (a dict, or raw bytes sent as they are); (HTTP status, decoded body)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_until_up(
    url: str,
    proc: subprocess.Popen,
    log: Path,
    path: str = "/ping",
    timeout: float = STARTUP_TIMEOUT_S,
) -> None:
    """Poll `url + path` until it answers 200; fail the test if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused, reset, timed out, HTTP errors while it starts
            pass
        time.sleep(0.5)
    pytest.fail(f"server not up after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a server started in its own process group, with its workers: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@contextmanager
def serving(
    model_uri: str, tracking_uri: str, workdir: Path, host: str | None = None
) -> Iterator[tuple[str, Path]]:
    """`mlflow models serve -m MODEL_URI --env-manager local` on a free port (with `--host` only
    when `host` is given); yields (base URL on 127.0.0.1, its log) and stops it afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_HOST")}
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        OMP_NUM_THREADS="1",
        # `mlflow models serve` starts `uvicorn` by name: it must be on PATH (the venv's bin)
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    command += ["--env-manager", "local", "--port", str(port)]
    command += ["--host", host] if host else []
    log = workdir / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc, log)
        yield url, log
    finally:
        stop(proc)
