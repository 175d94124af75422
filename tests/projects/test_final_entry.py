"""`final`: trains with the best settings so far, scores val and test, registers, sets the champion."""

from __future__ import annotations

import mlflow
from click.testing import CliRunner

from projects import final as final_entry


def test_final_registers_and_leaves_a_champion(tracking_uri, micro_args):
    result = CliRunner().invoke(final_entry.main, micro_args)
    assert result.exit_code == 0, result.output
    assert "from preset defaults" in result.output  # no sweep or context runs yet
    (run,) = mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")
    assert {"val_mse_filled_h5", "test_mse_h5"} <= set(run.data.metrics)
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("lv-forecaster", "champion")
    assert champion.run_id == run.info.run_id
    assert champion.tags["promotion.champion.metric"] == "val_mse_filled_h5"
