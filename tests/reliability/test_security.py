"""Security properties of the code base, checked on its source and on what a real run writes.

1. No source under packages/ and projects/ deserializes with pickle: no pickle-family imports, no
   `torch.load`/`torch.save`, no `allow_pickle=True`, no `weights_only=False` (AST scan).
2. Checkpoints and adapters written by a run are safetensors + JSON only; the registered model
   holds no pickle-format file.
3. Servers bind 127.0.0.1 by default: MLflow 3.17's `server`/`ui`/`models serve` default to it,
   every such command in the docs and MLproject keeps it, no project file says 0.0.0.0.
4. Nothing secret is logged: a training run with tokens in its environment logs none of them
   (parameters, tags, artifacts), and no code passes `os.environ` to an MLflow logging call.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from projects import train as train_entry
from tests.reliability._registry_fixture import register_tiny_champion
from tests.stores import using_store

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("packages", "projects")
SKIP_PARTS = {".venv", "build", "dist", "__pycache__", ".nox", ".eggs"}

# -- 1. no pickle ---------------------------------------------------------------------------------

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve"}
# (module alias, function): calls that read or write pickle streams.
PICKLE_CALLS = {
    ("torch", "load"),
    ("torch", "save"),
    ("pickle", "load"),
    ("pickle", "loads"),
    ("joblib", "load"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
}
PICKLE_METHODS = {"read_pickle", "to_pickle"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def python_sources() -> list[Path]:
    files = []
    for root in SOURCE_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            if not SKIP_PARTS & set(path.relative_to(REPO).parts):
                files.append(path)
    return files


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def pickle_findings(source: str, path: str) -> list[Finding]:
    """Every pickle-family import or call, `allow_pickle=True` and `weights_only=False`."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    found.append(Finding(path, node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in PICKLE_MODULES:
                found.append(Finding(path, node.lineno, f"from {node.module} import ..."))
            for alias in node.names:
                if module == "torch" and alias.name in {"load", "save"}:
                    found.append(Finding(path, node.lineno, f"from torch import {alias.name}"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            parts = name.split(".")
            pair = tuple(parts[-2:])
            if pair in PICKLE_CALLS or parts[-1] in PICKLE_METHODS:
                found.append(Finding(path, node.lineno, f"{name}(...)"))
            for kw in node.keywords:
                value = kw.value
                if not isinstance(value, ast.Constant):
                    continue
                if kw.arg == "allow_pickle" and value.value is not False:
                    found.append(Finding(path, node.lineno, "allow_pickle=True"))
                if kw.arg == "weights_only" and value.value is not True:
                    found.append(Finding(path, node.lineno, f"weights_only={value.value!r}"))
    return found


def test_scan_covers_the_source_tree() -> None:
    files = {p.relative_to(REPO).as_posix() for p in python_sources()}
    for expected in (
        "packages/lvmodel/src/lvmodel/checkpoint.py",
        "packages/lvmodel/src/lvmodel/lora.py",
        "packages/lvtrack/src/lvtrack/registry.py",
        "packages/lvtrack/src/lvtrack/lv_pyfunc.py",
    ):
        assert expected in files


def test_pickle_scan_flags_every_pattern() -> None:
    """The scanner itself: each forbidden form is reported with its line."""
    sample = "\n".join(
        [
            "import pickle",
            "import joblib, numpy as np",
            "from cloudpickle import loads",
            "import torch",
            "state = torch.load('x.pt')",
            "torch.save(state, 'x.pt')",
            "np.load('a.npy', allow_pickle=True)",
            "other.load('m', weights_only=False)",
            "frame = pd.read_pickle('f.pkl')",
            "from torch import load",
            "np.load('a.npy')",  # fine
            "torch.load('x.pt', weights_only=True)",  # still a torch.load: flagged once
        ]
    )
    lines = sorted(f.line for f in pickle_findings(sample, "sample.py"))
    assert lines == [1, 2, 3, 5, 6, 7, 8, 9, 10, 12]


def test_no_pickle_in_source() -> None:
    findings = [
        f
        for path in python_sources()
        for f in pickle_findings(path.read_text(), path.relative_to(REPO).as_posix())
    ]
    assert not findings, "pickle-based (de)serialization found:\n" + "\n".join(map(str, findings))


# -- 2. what runs write: safetensors + JSON ------------------------------------------------------

PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".ckpt", ".npy", ".npz"}
SECRETS = {
    "HF_TOKEN": "secret-abc-hf-123",
    "HUGGING_FACE_HUB_TOKEN": "secret-abc-hub-456",
    "MLFLOW_TRACKING_TOKEN": "secret-abc-mlflow-789",
    "MLFLOW_TRACKING_PASSWORD": "secret-abc-password",
    "AWS_SECRET_ACCESS_KEY": "secret-abc-aws",
}
MARKER = "secret-abc"


@dataclass(frozen=True)
class MicroRun:
    uri: str
    run: mlflow.entities.Run
    workdir: Path
    checkpoint_files: list[Path]
    artifact_dir: Path


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory, micro_args: list[str]) -> MicroRun:
    """One `train` run (micro preset, 2 steps) with secrets in its environment, in a temp folder."""
    workdir = tmp_path_factory.mktemp("micro-run")
    threads = torch.get_num_threads()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp, using_store(mp, uri):
        mp.chdir(workdir)  # checkpoints/ and mlruns/ land here
        mp.setenv("LV_CHECKPOINT_DIR", str(workdir / "ckpt"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        for key, value in SECRETS.items():
            mp.setenv(key, value)
        torch.set_num_threads(1)  # a tiny model runs faster on one thread, above all on 2 cores
        try:
            args = [*micro_args, "--steps", "2", "--run-name", "secret"]
            result = CliRunner().invoke(train_entry.main, args)
            assert result.exit_code == 0, result.output[-3000:]
        finally:
            torch.set_num_threads(threads)
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, "metrics.flops_total > 0")
    checkpoints = [
        p
        for folder in (workdir / "ckpt", workdir / "checkpoints")
        if folder.is_dir()
        for p in folder.rglob("*")
        if p.is_file()
    ]
    artifacts = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(workdir / "artifacts"), tracking_uri=uri
        )
    )
    return MicroRun(uri, run, workdir, checkpoints, artifacts)


# PEFT's `save_pretrained` adds a model card, README.md: plain text that nothing loads.
TEXT_ALLOWED = {"README.md"}


def _not_safe(files: list[Path], root: Path) -> list[str]:
    """Files that are neither safetensors nor JSON (JSON Lines: the metric history) nor PEFT's
    model card."""
    return [
        p.relative_to(root).as_posix()
        for p in files
        if p.suffix not in {".safetensors", ".json", ".jsonl"} and p.name not in TEXT_ALLOWED
    ]


def test_checkpoints_are_safetensors_and_json(micro_run: MicroRun) -> None:
    files = micro_run.checkpoint_files
    assert any(p.suffix == ".safetensors" for p in files), "the run wrote no checkpoint"
    assert any(p.parent.name == "adapter" for p in files)
    assert not _not_safe(files, micro_run.workdir)
    lines = [ln for p in files if p.suffix == ".jsonl" for ln in p.read_text().splitlines()]
    assert lines and all(isinstance(json.loads(ln), dict) for ln in lines)  # JSON, row by row


def test_logged_adapter_is_safetensors_and_json(micro_run: MicroRun) -> None:
    adapter = [p for p in (micro_run.artifact_dir / "adapter").rglob("*") if p.is_file()]
    assert any(p.name == "adapter_model.safetensors" for p in adapter)
    assert not _not_safe(adapter, micro_run.artifact_dir)
    everything = [p for p in micro_run.artifact_dir.rglob("*") if p.is_file()]
    assert not [p for p in everything if p.suffix in PICKLE_SUFFIXES]


def test_registered_model_holds_no_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_uri: str
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = register_tiny_champion(tmp_path / "work")
    model_dir = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    assert (model_dir / "MLmodel").is_file()
    assert not [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    # models from code: MLflow stores the source file, not a cloudpickled python_model
    assert "python_model.pkl" not in (model_dir / "MLmodel").read_text()
    # A local-folder base is referenced (path + sha256 digest in base_ref.json), not copied: the
    # model holds the adapter's safetensors and JSON, and no weights of its base.
    names = {p.name for p in files}
    assert {"adapter_model.safetensors", "base_ref.json"} <= names
    assert "model.safetensors" not in names


# -- 3. servers bind 127.0.0.1 --------------------------------------------------------------------

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SERVER_COMMAND = re.compile(r"mlflow\s+(?:server|ui|models\s+serve)\b[^`#\n]*")
HOST_FLAG = re.compile(r"(?:^|\s)(?:--host|-h)(?:\s+|=)(\S+)")


def _command_path(*names: str) -> click.Command:
    from mlflow.cli import cli

    ctx = click.Context(cli)
    command: click.Command = cli
    for name in names:
        assert isinstance(command, click.Group)
        found = command.get_command(ctx, name)
        assert found is not None, f"mlflow has no command {' '.join(names)}"
        command = found
    return command


@pytest.mark.parametrize("names", [("server",), ("ui",), ("models", "serve")], ids=" ".join)
def test_mlflow_servers_default_to_loopback(names: tuple[str, ...]) -> None:
    assert mlflow.__version__ == "3.17.2"
    (host,) = [p for p in _command_path(*names).params if p.name == "host"]
    assert host.default == "127.0.0.1"


def doc_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "MLproject"]
    docs = REPO / "docs"
    if docs.is_dir():
        files += sorted(docs.rglob("*.md"))
    return files


def server_commands(text: str) -> list[str]:
    """Every `mlflow server` / `mlflow ui` / `mlflow models serve` command line in `text`."""
    joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    return [m.group(0).strip() for m in SERVER_COMMAND.finditer(joined)]


def test_server_command_parser() -> None:
    text = (
        "mlflow ui --backend-store-uri sqlite:///mlflow.db  # comment\n"
        "`mlflow models serve -m models:/x@champion --env-manager local` (binds 127.0.0.1)\n"
        "mlflow server \\\n   --host 0.0.0.0 --port 5000\n"
    )
    commands = server_commands(text)
    assert len(commands) == 3
    hosts = [HOST_FLAG.findall(c) for c in commands]
    assert hosts == [[], [], ["0.0.0.0"]]


# The shared team server must be reachable from the GPU machines: its documented command binds
# one private interface (never every interface); every other command stays on loopback.
PRIVATE_BIND_DOCS = {"docs/team.md"}
PRIVATE_IP = re.compile(r"^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.)")


def test_documented_server_commands_bind_loopback() -> None:
    offending, seen = [], 0
    for path in doc_files():
        private_ok = str(path.relative_to(REPO)) in PRIVATE_BIND_DOCS
        for command in server_commands(path.read_text()):
            seen += 1
            hosts = [h.strip("'\"") for h in HOST_FLAG.findall(command)]
            allowed = [h for h in hosts if h in LOOPBACK or (private_ok and PRIVATE_IP.match(h))]
            if allowed != hosts:
                offending.append(f"{path.relative_to(REPO)}: {command}")
    assert seen >= 2  # the README shows `mlflow ui` and `mlflow models serve`
    assert not offending, "server commands that bind beyond loopback:\n" + "\n".join(offending)


def test_no_wildcard_bind_in_project_code() -> None:
    files = python_sources() + [REPO / name for name in ("MLproject", "noxfile.py", "conda.yaml")]
    files += sorted((REPO / ".ci").glob("*")) if (REPO / ".ci").is_dir() else []
    files += doc_files()
    hits = [
        f"{p.relative_to(REPO)}:{i}: {line.strip()}"
        for p in files
        if p.is_file()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "0.0.0.0" in line or re.search(r"MLFLOW_HOST\s*=", line)
    ]
    assert not hits, "\n".join(hits)


# -- 4. no secrets logged -------------------------------------------------------------------------


def test_no_secret_in_params_tags_or_artifacts(micro_run: MicroRun) -> None:
    client = MlflowClient(micro_run.uri)
    run = micro_run.run
    assert run.data.params and run.data.tags  # there is something to look at
    for key, value in {**run.data.params, **run.data.tags}.items():
        assert MARKER not in key and MARKER not in value, f"{key} = {value!r}"
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    for other in runs:
        assert not [v for v in other.data.params.values() if MARKER in v]
        assert not [v for v in other.data.tags.values() if MARKER in v]
    for path in micro_run.artifact_dir.rglob("*"):
        if path.is_file():
            assert MARKER.encode() not in path.read_bytes(), path
    for key in SECRETS:
        assert key not in run.data.params


ENV_LOGGERS = {
    "log_param",
    "log_params",
    "set_tag",
    "set_tags",
    "log_dict",
    "log_text",
    "log_metrics",
    "log_table",
    "set_experiment_tag",
    "set_experiment_tags",
    "set_model_version_tag",
    "set_registered_model_tag",
    "log_model",
}


def environ_logging(source: str, path: str) -> list[Finding]:
    """MLflow logging calls whose arguments read `os.environ` (or `environ`, `os.getenv` aside)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func).split(".")[-1]
        if name not in ENV_LOGGERS:
            continue
        inner = [*node.args, *(kw.value for kw in node.keywords)]
        for arg in inner:
            for sub in ast.walk(arg):
                if _dotted(sub) in {"os.environ", "environ"}:
                    found.append(Finding(path, node.lineno, f"{name}(... os.environ ...)"))
    return found


def test_environ_scan_flags_wholesale_logging() -> None:
    sample = "\n".join(
        [
            "mlflow.log_params(dict(os.environ))",
            "mlflow.set_tags({**os.environ, 'a': 1})",
            "client.log_dict(run_id, {'env': environ.copy()}, 'env.json')",
            "mlflow.set_tag('uri', uri)",  # fine
        ]
    )
    assert [f.line for f in environ_logging(sample, "sample.py")] == [1, 2, 3]


def test_environment_is_never_logged_wholesale() -> None:
    findings = [
        f
        for path in python_sources()
        for f in environ_logging(path.read_text(), path.relative_to(REPO).as_posix())
    ]
    assert not findings, "\n".join(map(str, findings))
