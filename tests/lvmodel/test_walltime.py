"""Wall-time plans: rates through JSON, interpolation, a run's seconds by hand, a measurement."""

from __future__ import annotations

import json

import pytest

import lvdata
from lvmodel.base import load_base
from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvmodel.walltime import (
    Rates,
    forecast_seconds,
    interpolate,
    measure_rates,
    run_seconds,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _rates() -> Rates:
    return Rates(
        device="test",
        base="toy",
        batch_size=4,
        train_positions_per_s={128: 1000.0, 512: 500.0},
        val_positions_per_s={128: 4000.0, 512: 2000.0},
        forecast_series_per_s={"128x1": 10.0, "512x1": 5.0, "128x10": 2.0, "512x10": 1.0},
        forecast_call_s={"128x1": 0.5, "512x1": 1.0, "128x10": 2.0, "512x10": 4.0},
        load_base_s=3.0,
        windows_s=1.5,
        fit_fixed_s=1.0,
        process_start_s=5.0,
        run_fixed_s=2.0,
        eval_log_s=0.5,
        register_s=7.0,
        steps_s={"data": 4.0},
        measured={"note": "by hand"},
    )


def test_rates_round_trip_through_json(tmp_path):
    rates = _rates()
    path = tmp_path / "rates.json"
    rates.to_json(path)
    assert Rates.from_json(path) == rates
    # a gpu_check summary holds them under "rates", beside its other figures
    summary = {"device": "cuda", "train_mfu": 0.4, "rates": json.loads(path.read_text())}
    assert Rates.from_dict(summary) == rates
    with pytest.raises(ValueError, match="without training"):
        Rates.from_dict({"device": "cuda", "rates": {"device": "x", "base": "b", "batch_size": 1,
                         "train_positions_per_s": {}, "val_positions_per_s": {},
                         "forecast_series_per_s": {}, "forecast_call_s": {}}})  # fmt: skip


def test_interpolation_is_linear_inside_flat_below_and_grows_above():
    points = {128: 1.0, 512: 2.0}
    assert interpolate(points, 128) == 1.0
    assert interpolate(points, 320) == pytest.approx(1.5)
    assert interpolate(points, 64) == 1.0  # below the smallest: its value
    assert interpolate(points, 768) == pytest.approx(2.0 + 256 / 384)  # the last segment's line
    assert interpolate({128: 2.0, 512: 1.0}, 768) == 1.0  # a falling line is not extended
    assert interpolate({256: 3.0}, 1024) == 3.0
    rates = _rates()
    # seconds per position: 1/1000 at 128, 1/500 at 512
    assert rates.seconds_per_train_position(320) == pytest.approx(1.5e-3)
    assert rates.seconds_per_val_position(128) == pytest.approx(2.5e-4)
    # seconds per series in the context, then in the sample count
    assert rates.seconds_per_series(320, 1) == pytest.approx(0.15)
    at_5 = 0.1 + (0.5 - 0.1) * 4 / 9  # context 128, between 1 and 10 samples
    assert rates.seconds_per_series(128, 5) == pytest.approx(at_5)
    assert rates.call_seconds(512, 10) == 4.0
    assert forecast_seconds(rates, 128, 1, 20, calls=2) == pytest.approx(2 * (0.5 + 20 * 0.1))
    assert forecast_seconds(rates, 128, 1, 20, calls=0) == 0.0


def test_run_seconds_by_hand():
    rates = _rates()
    config = TrainConfig(
        steps=100, batch_size=4, context_length=128, eval_every=50, eval_windows=8,
        forecast_every=100, forecast_series=4,
    )  # fmt: skip
    got = run_seconds(config, {"val": 10, "test": 20}, rates, final_samples=10, register=True)
    assert got.train == pytest.approx(100 * 4 * 128 / 1000)  # 51.2
    assert got.val_loss == pytest.approx(2 * 8 * 128 / 4000)  # due at 50 and 100 (the end)
    assert got.val_forecast == pytest.approx(0.5 + 4 * 0.1)  # due at 100 only
    assert got.final_eval == pytest.approx({"val": 2.0 + 10 * 0.5, "test": 2.0 + 20 * 0.5})
    # base 3, windows 1.5, fit 1, run 2, two logged evaluations, registering 7
    assert got.fixed == pytest.approx(3.0 + 1.5 + 1.0 + 2.0 + 2 * 0.5 + 7.0)
    total = 51.2 + 0.512 + 0.9 + (7.0 + 12.0) + 15.5
    assert got.total == pytest.approx(total)
    assert sum(got.parts().values()) == pytest.approx(total)
    # no in-run forecasts, no evaluation at the end: the due step's loss only
    quiet = TrainConfig(steps=30, batch_size=4, context_length=512, eval_every=20,
                        eval_windows=8, forecast_series=0, evaluate_at_end=False)  # fmt: skip
    got = run_seconds(quiet, {}, rates)
    assert got.val_loss == pytest.approx(8 * 512 / 2000)
    assert got.val_forecast == 0.0 and got.final_eval == {}


@pytest.mark.slow
def test_measure_rates_times_the_real_code_paths(random_tiny_dir):
    traj = lvdata.simulate(n_systems=14, n_steps=60, seed=2)
    codec = lvdata.LLMTimeCodec.fit(traj.values[:8])
    rates = measure_rates(
        lambda: load_base(str(random_tiny_dir), device="cpu"),
        codec,
        traj.values[:8],
        traj.values[8:],
        contexts=(64, 128),
        samples=(1, 2),
        batch_size=2,
        lora=LoraSettings(rank=2),
        eval_windows=4,
        forecast_sizes=(2, 5),
        history_steps=20,
        horizon=2,
        train_steps=2,
        warmup_steps=1,
    )
    assert set(rates.train_positions_per_s) == {64, 128}
    assert all(r > 0 for r in rates.train_positions_per_s.values())
    assert all(r > 0 for r in rates.val_positions_per_s.values())
    assert set(rates.forecast_series_per_s) == {"64x1", "64x2", "128x1", "128x2"}
    assert all(c >= 0 for c in rates.forecast_call_s.values())
    assert rates.load_base_s > 0 and rates.windows_s > 0 and rates.fit_fixed_s >= 0
    assert len(rates.measured["windows_s"]) == 2  # once per context, outside the timed fit
    assert Rates.from_dict(json.loads(rates.to_json())) == rates
