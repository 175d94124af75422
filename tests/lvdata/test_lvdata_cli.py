"""The lvdata command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvdata import LLMTimeCodec, load_trajectories, split
from lvdata.cli import main


def test_simulate_then_inspect(tmp_path: Path) -> None:
    out = tmp_path / "sim.h5"
    runner = CliRunner()
    res = runner.invoke(main, ["simulate", "--out", str(out), "--n-systems", "12", "--seed", "4"])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output and "(12, 100, 2)" in res.output
    assert load_trajectories(out).n_series == 12
    again = runner.invoke(main, ["simulate", "--out", str(out), "--n-systems", "12"])
    assert again.exit_code == 1 and "--force" in again.output
    res = runner.invoke(main, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    assert "(12, 100, 2)" in res.output and "p99" in res.output and "float32" in res.output


def test_inspect_bad_file_is_clean(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    for path in (bad, tmp_path / "missing.h5"):
        res = CliRunner().invoke(main, ["inspect", str(path)])
        assert res.exit_code == 1
        assert "Traceback" not in res.output
        assert str(path) in res.output and "Error:" in res.output


def test_encode_prints_text(tmp_path: Path) -> None:
    out = tmp_path / "sim.h5"
    CliRunner().invoke(main, ["simulate", "--out", str(out), "--n-systems", "10"])
    res = CliRunner().invoke(main, ["encode", str(out), "--index", "3", "--steps", "5"])
    assert res.exit_code == 0, res.output
    traj = load_trajectories(out)
    codec = LLMTimeCodec.fit(traj.values[split(10, seed=0).train])
    assert codec.encode(traj.values[3, :5]) in res.stdout.splitlines()
    bad = CliRunner().invoke(main, ["encode", str(out), "--index", "10"])
    assert bad.exit_code == 1 and "out of range" in bad.output


def test_encode_tokenizer_without_transformers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sim.h5"
    CliRunner().invoke(main, ["simulate", "--out", str(out), "--n-systems", "10"])
    monkeypatch.setitem(sys.modules, "transformers", None)
    res = CliRunner().invoke(main, ["encode", str(out), "--index", "0", "--tokenizer", "x"])
    assert res.exit_code == 1
    assert "transformers" in res.output and "Traceback" not in res.output


def test_no_heavy_imports() -> None:
    import subprocess

    code = (
        "import sys, lvdata, lvdata.cli; "
        "print([m for m in ('torch', 'transformers', 'mlflow') if m in sys.modules])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
