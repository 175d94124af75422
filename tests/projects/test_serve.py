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
