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
    # It ends by saying how to look at the runs: the store and the training-runs address.
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"final: look at the runs: mlflow ui --backend-store-uri {tracking_uri}")
    assert f"/#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning" in last
    assert {"val_mse_filled_h5", "test_mse_h5"} <= set(run.data.metrics)
    # Scored by sampling (micro: 3 samples): CRPS and coverage beside MSE, per step too, and a
    # fan chart of each split.
    for split in ("val", "test"):
        assert {f"{split}_crps_h5", f"{split}_coverage80_h5", f"{split}_crps_step5"} <= set(
            run.data.metrics
        )
        assert 0.0 <= run.data.metrics[f"{split}_coverage80_h5"] <= 1.0
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert {"plots/fan_val.png", "plots/fan_test.png"} <= plots
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("lv-forecaster", "champion")
    assert champion.run_id == run.info.run_id
    assert champion.tags["promotion.champion.metric"] == "val_mse_filled_h5"
    # Scale-free and joint scores beside MSE, each headline metric with its 95% interval.
    m = run.data.metrics
    for split in ("val", "test"):
        for name in ("mse_filled", "mase", "crps", "wql", "energy"):
            key = f"{split}_{name.replace('_filled', '')}{'_filled' * ('filled' in name)}_h5"
            assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"], key
    series = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/scores/test_series.json")
    assert len(series["mse_filled"]["num"]) == len(series["wql"]["den"]) > 1
    # The logged model is named for what it is and carries its scores (model-linked metrics).
    (model,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert model.name == "lv-forecaster" and model.source_run_id == run.info.run_id
    linked = {x.key: x.value for x in model.metrics or []}
    assert linked["val_mse_filled_h5"] == m["val_mse_filled_h5"]
    assert linked["test_wql_h5_hi"] == m["test_wql_h5_hi"]


def _micro_costs(shape, n_val: int, n_test: int) -> tuple[int, int, int]:
    """micro's final run assembled from lvflops' costs by hand: (one training step, every
    evaluation). Batch 4 x 128 tokens; one validation-loss pass at the end over micro's 64
    windows (eval_every 0); no in-run forecasts (forecast_every None); the final forecasts of the
    validation and test series, 3 samples each (micro's eval_samples: each prompt prefilled
    once, then 3 rows per series; 128-token prompts, at most 60 new tokens, a static cache of
    187 slots). LoRA rank 2 on q_proj and v_proj with the trainable lm_head bias."""
    from lvflops import eval_flops, generate_flops, train_step_flops

    lora = {"lora_rank": 2, "lora_targets": ("q_proj", "v_proj"), "lm_head_bias": True}
    step = train_step_flops(shape, 128, 4, **lora).total
    loss = eval_flops(shape, 128, 64, **lora).total

    def gen(n: int) -> int:
        return generate_flops(
            shape,
            128,
            60,
            batch=n,
            num_samples=3,
            kv_cache=True,
            cache_len=187,
            logits_len=1,
            **lora,
        ).total

    def report_cell(ctx: int, samples: int = 1, **lora_kw) -> int:  # the test series at ctx
        return generate_flops(
            shape,
            ctx,
            60,
            batch=n_test,
            num_samples=samples,
            kv_cache=True,
            cache_len=ctx + 59,
            logits_len=1,
            **lora_kw,
        ).total

    # What the report will fill (micro's contexts 64 and 128; no initial run to score): the
    # untrained base at both, greedily, and the final model with 3 samples at the context it is
    # not scored at (64).
    report = report_cell(64) + report_cell(128) + report_cell(64, 3, **lora)
    return step, loss + gen(n_val) + gen(n_test), report


def test_final_without_steps_trains_what_the_budget_has_left(
    tracking_uri, micro_args, random_tiny_dir
):
    from lvmodel.base import base_shape
    from lvtrack.ledger import TAG_PLANNED

    step, evals, report = _micro_costs(base_shape(str(random_tiny_dir)), 6, 6)  # 48/6/6 series
    budget = evals + report + 9.5 * step  # 9 steps fit, 10 do not
    args = [*micro_args, "--steps", "budget", "--budget", f"{budget:.6e}"]
    result = CliRunner().invoke(final_entry.main, args)
    assert result.exit_code == 0, result.output
    assert "9 steps, what the" in result.output
    assert f"{report:.3e} kept for the report's other cells" in result.output
    (run,) = mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")
    assert run.data.params["steps"] == "9"
    assert run.data.metrics["steps_run"] == 9
    assert run.data.tags["lv.steps_from"] == "budget"
    assert int(run.data.tags[TAG_PLANNED]) == 9 * step + evals
    # The plan bounds what the run spends; on micro the final forecasts stop well short of
    # their bound, so the share spent is not a figure here (see the plan benchmark for qwen).
    assert run.data.metrics["flops_total"] <= 9 * step + evals

    # Nothing left: a clear refusal before anything trains.
    again = CliRunner().invoke(final_entry.main, args)
    assert again.exit_code != 0
    assert "not enough for one training step" in again.output
    assert "Traceback" not in again.output


def test_final_with_seeds_shares_the_budget_and_promotes_the_best(
    tracking_uri, micro_args, random_tiny_dir
):
    """Three seeds on a budget that one run would spend to 30 steps: the first seed takes a
    third of it (9 steps), the others the same steps; the parent holds the spread across them,
    and the champion is the seed best on validation."""
    import numpy as np

    from lvmodel.base import base_shape

    step, evals, report = _micro_costs(base_shape(str(random_tiny_dir)), 6, 6)
    budget = report + 3 * (evals + 9.5 * step)  # a third: 9 steps fit, 10 do not
    args = [*micro_args, "--steps", "budget", "--budget", f"{budget:.6e}", "--seeds", "3"]
    result = CliRunner().invoke(final_entry.main, args)
    assert result.exit_code == 0, result.output
    assert "9 steps, what 1/3 of the" in result.output
    runs = mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")
    (parent,) = [r for r in runs if r.data.tags.get("lv.parent") == "true"]
    seeds = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
        key=lambda r: int(r.data.params["seed"]),
    )
    assert [r.data.params["seed"] for r in seeds] == ["0", "1", "2"]
    assert {r.data.params["steps"] for r in seeds} == {"9"}
    assert all(r.info.status == "FINISHED" for r in seeds)
    val = np.array([r.data.metrics["val_mse_filled_h5"] for r in seeds])
    assert len(set(val.round(12))) > 1  # the seeds differ
    m = parent.data.metrics
    assert np.isclose(m["seeds_val_mse_filled_h5_mean"], val.sum() / 3, rtol=1e-12)
    assert np.isclose(m["seeds_val_mse_filled_h5_sd"], np.sqrt(((val - val.mean()) ** 2).sum() / 2))
    assert m["seeds_val_mse_filled_h5_min"] == val.min()
    assert m["seeds_val_mse_filled_h5_max"] == val.max()
    spent = sum(r.data.metrics["flops_total"] for r in seeds)
    assert spent <= budget - report
    champion = mlflow.MlflowClient().get_model_version_by_alias("lv-forecaster", "champion")
    assert champion.run_id == seeds[int(np.argmin(val))].info.run_id


def test_final_scores_every_origin_planned_and_charged(
    tracking_uri, micro_args, small_data_file, random_tiny_dir, monkeypatch
):
    """With origins (20, 50), final scores both splits from 20 steps of history as well as from
    the headline 50: each score with its interval, the forecasts planned and charged, and the
    report's table by origin."""
    from dataclasses import replace

    from lvmodel.base import base_shape
    from lvmodel.lora import LoraSettings
    from lvmodel.run_plan import forecast_bound
    from lvtrack.presets import PRESETS
    from projects import report as report_entry

    monkeypatch.setitem(PRESETS, "micro", replace(PRESETS["micro"], origins=(20, 50)))
    args = [*micro_args, "--steps", "2", "--eval-series", "3"]
    result = CliRunner().invoke(final_entry.main, args)
    assert result.exit_code == 0, result.output
    (run,) = mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")
    m = run.data.metrics
    assert run.data.params["origins"] == "20,50"
    for split in ("val", "test"):
        for key in (f"{split}_mse_filled_h5", f"{split}_crps_h5"):
            assert m[f"{key}_k20_lo"] <= m[f"{key}_k20"] <= m[f"{key}_k20_hi"]
            assert m[f"{key}_k20"] != m[key]  # another origin: other windows of the series
    flops = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/flops.json")
    # Planned for both origins of both splits (3 series each, 3 samples, context 128), and
    # spent within it.
    lora = LoraSettings(rank=2)
    one = forecast_bound(base_shape(str(random_tiny_dir)), 3, 128, 5, 2, lora, num_samples=3)
    assert flops["planned"]["final_eval"] == {"val": 2 * one, "test": 2 * one}
    assert flops["eval_final"] <= 4 * one

    report = CliRunner().invoke(
        report_entry.main,
        ["--preset", "micro", "--data-file", str(small_data_file), "--eval-series", "3"],
    )
    assert report.exit_code == 0, report.output
    (rep,) = [
        r
        for r in mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")
        if r.info.run_name == "report"
    ]
    text = mlflow.artifacts.load_text(f"runs:/{rep.info.run_id}/report.md")
    assert "## Test error by forecast origin" in text
    row = next(line for line in text.splitlines() if line.startswith("| 20 |"))
    assert f"{m['test_mse_filled_h5_k20']:.4g}" in row
