"""Test, lint and benchmark sessions. `nox` alone runs tests and lint; `nox -s NAME -- ARGS` passes ARGS on."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
PACKAGES = ["packages/lvdata", "packages/lvflops", "packages/lvmodel"]
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false"}


def _install_project(session: nox.Session) -> None:
    session.install("-r", "requirements-dev.txt")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (no GPU, no model hub). Extra args go to pytest, e.g. `-- -k codec`."""
    _install_project(session)
    session.run("pytest", *(session.posargs or ["-q", "--ignore=tests/reliability"]), env=ENV)


@nox.session(python=PYTHON)
def reliability(session: nox.Session) -> None:
    """Crash safety, the budget under concurrency (SQLite and PostgreSQL), bad inputs, security."""
    _install_project(session)
    session.run("pytest", *(session.posargs or ["-q", "tests/reliability"]), env=ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Run the pre-commit hooks (ruff check, ruff format) on every file."""
    session.install("pre-commit==4.7.0")
    session.run("pre-commit", "run", "--all-files", "--show-diff-on-failure", *session.posargs)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the three libraries with mypy."""
    _install_project(session)
    paths = [f"{p}/src" for p in PACKAGES]
    session.run("mypy", *(session.posargs or paths))


@nox.session(python=PYTHON, name="lvflops-alone")
def lvflops_alone(session: nox.Session) -> None:
    """Install lvflops alone in a fresh venv and show it imports without torch or numpy."""
    session.install("packages/lvflops")
    session.run(
        "python",
        "-c",
        "import sys, lvflops; bad = {'torch', 'numpy'} & set(sys.modules); "
        "assert not bad, bad; print('lvflops', lvflops.__version__, 'imports without torch/numpy')",
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Print forecasting and training throughput figures (not part of CI). Args go to the script."""
    _install_project(session)
    session.run("python", "benchmarks/bench.py", *session.posargs, env={**ENV, **os.environ})
