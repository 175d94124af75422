"""Test, lint and benchmark sessions. `nox` alone runs tests and lint; `nox -s NAME -- ARGS` passes ARGS on."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
PACKAGES = ["packages/lvdata", "packages/lvflops", "packages/lvmodel", "packages/lvtrack"]
IMPORT_LINTER = "import-linter==2.17"
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false"}


def _install_project(session: nox.Session) -> None:
    session.install("-r", "requirements-dev.txt")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (no GPU, no model hub). Extra args go to pytest, e.g. `-- -k codec`."""
    _install_project(session)
    default = ["-q", "--ignore=tests/reliability", "--ignore=tests/realmodel"]
    session.run("pytest", *(session.posargs or default), env=ENV)


@nox.session(python=PYTHON)
def reliability(session: nox.Session) -> None:
    """Crash safety, the budget under concurrency (SQLite and PostgreSQL), bad inputs, security."""
    _install_project(session)
    session.run("pytest", *(session.posargs or ["-q", "tests/reliability"]), env=ENV)


@nox.session(python=PYTHON, name="qwen-pipeline")
def qwen_pipeline(session: nox.Session) -> None:
    """The whole `qwen` pipeline on the real Qwen2.5 0.5B on this CPU, cut to about 30 minutes
    (opt-in, never in CI). Uses $LV_QWEN_GGUF, else assembles the GGUF with
    ../shared/tools/qwen-gguf; $LV_QWEN_CUTS overrides the cuts ("steps=2 lrs=0.0001 ...")."""
    _install_project(session)
    gguf = os.environ.get("LV_QWEN_GGUF")
    if not gguf:
        tool = os.path.join(os.path.dirname(__file__), "..", "shared", "tools", "qwen-gguf")
        if not os.path.exists(tool):
            session.error("set LV_QWEN_GGUF to a Qwen2.5 GGUF file (no ../shared/tools/qwen-gguf)")
        gguf = session.run(tool, silent=True, external=True).strip().splitlines()[-1]
    args = session.posargs or ["-q", "-s", "-m", "qwen_pipeline", "tests/realmodel"]
    session.run("pytest", *args, env={**ENV, "LV_QWEN_GGUF": gguf})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Run the pre-commit hooks (ruff check, ruff format) on every file, and the import
    contracts (`lint-imports`, [tool.importlinter] in pyproject.toml: which package may import
    which; only lvtrack imports mlflow; nothing imports the entry points)."""
    session.install("pre-commit==4.7.0", IMPORT_LINTER)
    # The contracts read the source, not the installed dependencies: no torch needed here.
    session.install("--no-deps", *(arg for p in PACKAGES for arg in ("-e", p)))
    session.run("pre-commit", "run", "--all-files", "--show-diff-on-failure", *session.posargs)
    session.run("lint-imports")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the libraries and the MLflow layer with mypy."""
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


@nox.session(python=PYTHON)
def ui(session: nox.Session) -> None:
    """Screenshots of `mlflow ui` on fresh `micro` stores (the README's main job; the pipeline),
    every page checked for content: the landing page, the run list, the final run's metrics, the
    report (`benchmarks/ui_screenshots.py`; opt-in, never in CI; needs Debian's `chromium`). Args
    go to the script: `-- OUT_DIR` (default /tmp/lv-ui-screenshots), `--work DIR` (keep and reuse
    the stores), `--only landing|pipeline`, `--store URI` (only the newest report of an existing
    store, e.g. the tiny pipeline's)."""
    if shutil.which("chromium") is None:
        session.error("`chromium` not found: apt-get update && apt-get install -y chromium")
    _install_project(session)
    session.run("python", "benchmarks/ui_screenshots.py", *session.posargs, env=ENV)


@nox.session(python=PYTHON, name="gpu-check")
def gpu_check(session: nox.Session) -> None:
    """LoRA step MFU, batched vs naive forecasting, memory and NVML on the Qwen2.5-0.5B shape
    (`benchmarks/gpu_check.py`; CUDA if present, else CPU). Args go to the script, e.g.
    `-- --layers 2 --batch 1 --seq-len 128 --steps 2 --warmup 1 --series 8 --naive-series 2`."""
    _install_project(session)
    session.run("python", "benchmarks/gpu_check.py", *session.posargs, env={**ENV, **os.environ})
