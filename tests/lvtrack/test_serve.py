"""`mlflow models serve` on the promoted forecaster: REST predictions and HTTP 400 on bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from tests.reliability._registry_fixture import register_tiny_champion
from tests.serving import post, serving


@pytest.fixture
def champion(tracking_uri: str, tmp_path: Path) -> Iterator[str]:
    """A random tiny forecaster registered and promoted to @champion in the temporary store."""
    mlflow.set_tracking_uri(tracking_uri)
    register_tiny_champion(tmp_path, "serve-tests")
    yield tracking_uri
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_serve_champion_over_rest(champion: str, tmp_path: Path) -> None:
    champion_uri = "models:/lv-forecaster@champion"
    with serving(champion_uri, champion, tmp_path, host="127.0.0.1") as (url, _):
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
        status, body = post(f"{url}/invocations", good)
        assert status == 200, body
        rows = body["predictions"]
        assert len(rows) == 2
        assert all(len(row["prey"]) == 2 and len(row["predator"]) == 2 for row in rows)

        negative = {
            "dataframe_split": {"columns": columns, "data": [[[1.0, -0.9, 0.8], [0.5, 0.6, 0.7]]]},
            "params": {"horizon": 2},
        }
        status, body = post(f"{url}/invocations", negative)
        assert status == 400
        assert "row 0, field 'prey': value at step 1 is -0.9" in body["message"]

        missing = {"dataframe_split": {"columns": ["prey"], "data": [[[1.0, 0.9, 0.8]]]}}
        status, body = post(f"{url}/invocations", missing)
        assert status == 400
        assert "missing inputs ['predator']" in body["message"]

        bad_horizon = {**good, "params": {"horizon": 0}}
        status, body = post(f"{url}/invocations", bad_horizon)
        assert status == 400
        assert "parameter 'horizon' must be between 1" in body["message"]

        # Quantiles: the median and the requested levels, from 6 samples per series.
        quantile_request = {
            **good,
            "params": {"horizon": 2, "num_samples": 6, "quantiles": [0.1, 0.5, 0.9]},
        }
        status, body = post(f"{url}/invocations", quantile_request)
        assert status == 200, body
        rows = body["predictions"]
        for row in rows:
            assert row["quantiles"] == [0.1, 0.5, 0.9]
            for name in columns:
                bands = row[f"{name}_quantiles"]
                assert len(bands) == 2 and all(len(levels) == 3 for levels in bands)
                assert all(lo <= mid <= hi for lo, mid, hi in bands)
                assert [mid for _, mid, _ in bands] == row[name]  # the median is the forecast
        for bad, named in (
            ([0.1, 1.5], "entry 1 (1.5) is outside (0, 1)"),
            ([0.0, 0.5], "entry 0 (0.0) is outside (0, 1)"),
            (["abc"], "quantiles"),
            ("0.5", "quantiles"),
        ):
            request = {**good, "params": {"horizon": 2, "num_samples": 4, "quantiles": bad}}
            status, body = post(f"{url}/invocations", request)
            assert status == 400, (bad, body)
            assert named in body["message"], (bad, body["message"])
        greedy = {**good, "params": {"horizon": 2, "quantiles": [0.5]}}
        status, body = post(f"{url}/invocations", greedy)
        assert status == 400 and "num_samples >= 2" in body["message"]
