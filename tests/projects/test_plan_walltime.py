"""The `plan` entry point with rates: each pipeline step's predicted wall time beside its FLOPs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lvflops import train_step_flops
from lvmodel.base import base_shape
from lvmodel.lora import LoraSettings
from lvmodel.walltime import Rates
from lvtrack.presets import get_preset
from lvtrack.search_settings import first_rung_flops, search_settings
from lvtrack.wall_plan import search_wall
from projects import plan as plan_entry


def _rates() -> Rates:
    return Rates(
        device="a test machine",
        base="random tiny",
        batch_size=4,
        train_positions_per_s={64: 2000.0, 128: 1000.0},
        val_positions_per_s={64: 8000.0, 128: 4000.0},
        forecast_series_per_s={"64x1": 20.0, "128x1": 10.0, "64x3": 4.0, "128x3": 2.0},
        forecast_call_s={"64x1": 0.5, "128x1": 0.5, "64x3": 1.0, "128x3": 1.0},
        load_base_s=3.0,
        windows_s=1.5,
        fit_fixed_s=1.0,
        process_start_s=5.0,
        run_fixed_s=2.0,
        eval_log_s=0.5,
        register_s=7.0,
        steps_s={"data": 4.0, "reference": 10.0, "promote": 0.5, "budget": 0.5},
    )


def _row(output: str, phase: str) -> list[str]:
    line = next(ln for ln in output.splitlines() if ln.startswith(f"| {phase} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _args(random_tiny_dir, *more: str) -> list[str]:
    return ["--preset", "micro", "--base-model", str(random_tiny_dir), "--n-series", "60",
            "--method", "search", "--share", "0.02", "--trials", "5", *more]  # fmt: skip


def test_plan_with_rates_prints_each_steps_predicted_wall_time(tmp_path, random_tiny_dir):
    path = tmp_path / "rates.json"
    _rates().to_json(path)
    result = CliRunner().invoke(plan_entry.main, _args(random_tiny_dir, "--rates", str(path)))
    assert result.exit_code == 0, result.output
    assert "| phase | runs | planned FLOPs | share of budget | predicted wall | note |" in (
        result.output
    )
    steps = ("data", "reference", "baseline", "initial", "search", "final", "report")
    rows = {s: _row(result.output, s) for s in (*steps, "budget", "pipeline")}
    # micro's initial run by hand: 4 steps of 4 x 128 at 1000 positions/s; one validation-loss
    # pass at the end over 64 windows of 128 at 4000/s; the 6 validation series forecast
    # greedily (0.5 s a call + 0.1 s a series); fixed: base 3, windows 1.5, fit 1, run 2, one
    # logged evaluation 0.5; the entry point's process start 5.
    initial = 5 + 4 * 4 * 128 / 1000 + 64 * 128 / 4000 + (0.5 + 6 * 0.1) + 3 + 1.5 + 1 + 2 + 0.5
    assert rows["initial"][4] == f"{initial:.0f} s"  # 19 s
    assert rows["initial"][2] != ""  # the FLOPs stay beside it
    assert rows["data"][4] == "9 s" and rows["data"][2] == ""  # process 5 + 4; not budgeted
    assert "not budgeted" in rows["reference"][5]
    assert rows["budget"][4] == "6 s"
    # the baseline: the base loaded once, 6 series at contexts 64 and 128, a run and a logged
    # evaluation each
    baseline = 5 + 3 + (0.5 + 6 * 0.05) + (0.5 + 6 * 0.1) + 2 * (2 + 0.5)
    assert rows["baseline"][4] == f"{baseline:.0f} s"
    assert "Predicted wall time of the pipeline" in result.output
    assert "on a test machine" in result.output
    assert "Target" not in result.output  # micro has none; qwen's is 10 minutes on one H100


def test_plan_without_rates_keeps_its_table_and_bad_rates_are_named(tmp_path, random_tiny_dir):
    result = CliRunner().invoke(plan_entry.main, _args(random_tiny_dir))
    assert result.exit_code == 0, result.output
    assert "| predicted wall |" not in result.output
    assert "--measure-rates" in result.output  # how to get the column (on stderr)
    bad = tmp_path / "bad.json"
    bad.write_text('{"device": "x"}')
    result = CliRunner().invoke(plan_entry.main, _args(random_tiny_dir, "--rates", str(bad)))
    assert result.exit_code != 0 and "--rates" in result.output


def test_search_wall_by_hand(random_tiny_dir):
    """One context and one rank: the search's training FLOPs (rung sizes of successive halving)
    at that context's seconds per training FLOP, plus its rungs' evaluations and fixed costs."""
    rates = _rates()
    preset = get_preset(
        "micro", search_space="lr=1e-3:1e-2;rank=2", search_trials=5, search_share=0.02
    )
    settings = search_settings(preset)
    shape = base_shape(str(random_tiny_dir))
    wall = search_wall(preset, shape, 2, settings, rates)
    counts = [5, 5 / 3, 1]  # max(1, 5 / 3**k) trials at rung k
    stable = 5 * 1 + 5 / 3 * (3 - 1) + 1 * (9 - 3)
    branches = 0.2 * (5 + 5 + 9)
    flops = first_rung_flops(shape, preset, settings, 2) * (stable + branches)
    step = train_step_flops(shape, 128, 4, **LoraSettings(rank=2).flops_kwargs()).total
    assert wall.parts["training"] == pytest.approx(flops * (4 * 128 / 1000) / step)
    # each rung scored: validation loss over micro's 64 windows, 4 series forecast greedily
    evaluation = 64 * 128 / 4000 + (0.5 + 4 * 0.1)
    assert wall.parts["rung evaluations"] == pytest.approx(sum(counts) * evaluation)
    # the worker loads the base once and tokenizes the one context's windows once; each trial
    # opens a run; each rung is two fits (stable, decay branch)
    fixed = 3 + 1.5 + 5 * 2 + 2 * sum(counts) * 1
    assert wall.parts["fixed costs"] == pytest.approx(fixed)
    assert wall.seconds == pytest.approx(sum(wall.parts.values()))


@pytest.mark.slow
def test_the_tracking_probe_measures_in_a_throwaway_store(
    tracking_uri, random_tiny_dir, small_data_file
):
    """The MLflow layer's fixed costs come from the project's own functions against a store of
    their own: the user's store and environment are as they were."""
    import os

    import mlflow

    from lvmodel.base import load_base
    from lvtrack.datafile import prepare_data
    from lvtrack.rates_probe import measure_tracking

    preset = get_preset("micro")
    prep = prepare_data(small_data_file)
    model, tok = load_base(str(random_tiny_dir))
    got = measure_tracking(
        prep, preset, model, tok, str(random_tiny_dir), LoraSettings(rank=2), n_systems=20
    )
    assert got["run_fixed_s"] > 0 and got["eval_log_s"] > 0 and got["register_s"] > 0
    steps = got["steps_s"]
    assert set(steps) >= {"data", "reference", "promote", "budget", "report", "search"}
    assert steps["reference"] >= sum(got["measured_reference_s"].values())
    assert os.environ["MLFLOW_TRACKING_URI"] == tracking_uri == mlflow.get_tracking_uri()
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
