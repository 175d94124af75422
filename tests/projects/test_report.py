"""`report`: the results table from the tracking store; the cells no run measured are evaluated
in budgeted child runs (phase `report`), reused by a later report, and what they will cost is
what `report_reserve` asks the final run to leave (micro preset, random tiny base)."""

from __future__ import annotations

import mlflow
from click.testing import CliRunner

from lvmodel.base import base_shape
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import forecast_bound
from lvtrack.budget_table import budget_table
from lvtrack.datafile import prepare_data
from lvtrack.experiment_plan import report_reserve
from lvtrack.ledger import TAG_PLANNED, TAG_REFUSED, read_ledger
from lvtrack.presets import get_preset
from lvtrack.report import TAG_CONTEXT, TAG_MODEL, TAG_SOURCE
from lvtrack.report_render import DASH, differences_table, number, reference_table
from lvtrack.report_run import run_report
from lvtrack.selection import finished_runs
from projects import final as final_entry
from projects import initial as initial_entry
from projects import report as report_entry

SERIES = 3  # test series scored (the eval_series cut)


def _train(entry, micro_args) -> None:
    args = [*micro_args, "--steps", "1", "--eval-series", str(SERIES)]
    result = CliRunner().invoke(entry.main, args)
    assert result.exit_code == 0, result.output


def _report(data_file) -> str:
    args = ["--preset", "micro", "--data-file", str(data_file), "--eval-series", str(SERIES)]
    result = CliRunner().invoke(report_entry.main, args)
    assert result.exit_code == 0, result.output
    return result.output


def _experiment() -> str:
    return mlflow.get_experiment_by_name("lv-forecast").experiment_id


def _fills(exp_id: str, status: str = "FINISHED") -> list:
    return mlflow.search_runs(
        [exp_id],
        filter_string=f"tags.`{TAG_SOURCE}` != '' and attributes.status = '{status}'",
        output_format="list",
    )


def _report_runs(exp_id: str) -> list:
    runs = mlflow.search_runs(
        [exp_id],
        filter_string="tags.phase = 'report' and tags.`lv.parent` = 'true'",
        order_by=["attributes.start_time ASC"],
        output_format="list",
    )
    return list(runs)


def _no_budget_left(exp_id: str):
    """micro with a budget the runs so far have spent but for one FLOP."""
    spent = read_ledger(mlflow.MlflowClient(), exp_id, 0).spent
    return get_preset("micro", eval_series=SERIES, budget=float(spent + 1)), spent


def _check_empty_cells_are_explained(exp_id: str, data_file) -> None:
    """Final run only: no initial run to fill from, and no budget left for the others."""
    p, spent = _no_budget_left(exp_id)
    report = run_report(p, str(data_file))
    why = {(c.column, c.context): c.reason for c in report.cells}
    assert why[("final", 128)] == ""  # its own run's score
    for ctx in p.contexts:
        assert why[("initial", ctx)] == "no finished initial run of preset micro in this experiment"
        assert why[("untrained", ctx)].startswith("budget refused: FLOPs budget refused")
    assert why[("final", 64)].startswith("budget refused:")
    assert report.filled == []
    assert "initial, context 64: not filled: no finished initial run" in report.markdown
    assert "untrained, context 128: not filled: budget refused" in report.markdown
    # The refused fills are FAILED runs marked refused, charged nothing.
    refused = _fills(exp_id, "FAILED")
    assert len(refused) == 3
    assert all(r.data.tags[TAG_REFUSED] == "true" for r in refused)
    client = mlflow.MlflowClient()
    assert "report" not in read_ledger(client, exp_id, int(p.budget)).by_phase()
    assert report.budget_metrics["flops_spent"] == spent


def _check_a_missing_adapter_is_explained(exp_id: str, base: str, data_file) -> None:
    """An initial run that logged no adapter (here: made by hand) cannot be evaluated."""
    with mlflow.start_run(run_name="initial (no adapter)") as run:
        mlflow.set_tags({"phase": "initial", "preset": "micro"})
        mlflow.log_params(
            {"rank": 2, "lora_targets": "q_proj,v_proj", "context_length": 128, "base_model": base}
        )
    p, _ = _no_budget_left(exp_id)
    report = run_report(p, str(data_file))
    for c in report.cells:
        if c.column == "initial":
            assert c.reason == f"run {run.info.run_id} logged no adapter/ artifact"
    assert _fills(exp_id) == []


def test_report_explains_fills_and_reuses_cells(
    tracking_uri, micro_args, random_tiny_dir, small_data_file
):
    _train(final_entry, micro_args)  # context 128, test scored and sampled: the champion
    exp_id = _experiment()
    _check_empty_cells_are_explained(exp_id, small_data_file)
    _check_a_missing_adapter_is_explained(exp_id, str(random_tiny_dir), small_data_file)
    _train(initial_entry, micro_args)  # context 128, no test scores; newer than the one above
    client = mlflow.MlflowClient()
    p = get_preset("micro", eval_series=SERIES)
    shape = base_shape(str(random_tiny_dir))
    decimals = prepare_data(small_data_file).codec.decimals
    lora = LoraSettings(rank=p.rank, targets=p.lora_targets)  # initial and final alike

    def bound(ctx: int, with_lora: LoraSettings | None, samples: int = 1) -> int:
        return forecast_bound(
            shape, SERIES, ctx, p.horizon, decimals, with_lora, num_samples=samples
        )

    # Nothing measured but the final's own cell: the base at both contexts and the initial run
    # at both (greedy, as their phases score), and a final run trained now at 128 needs its other
    # context (sampled, as `final` scores).
    reserve = report_reserve(exp_id, p, shape, decimals, SERIES, lora, 128)
    assert reserve == (
        bound(64, None) + bound(128, None) + bound(64, lora) + bound(128, lora)
        + bound(64, lora, p.eval_samples)
    )  # fmt: skip

    output = _report(small_data_file)
    assert "| context | untrained MSE |" in output
    fills = _fills(exp_id)
    first = _report_runs(exp_id)[-1]
    assert {(r.data.tags[TAG_MODEL], int(r.data.tags[TAG_CONTEXT])) for r in fills} == {
        ("untrained", 64),
        ("untrained", 128),
        ("initial", 64),
        ("initial", 128),
        ("final", 64),  # final at 128: its own run's test score
    }
    for r in fills:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == first.info.run_id
        assert 0 < r.data.metrics["flops_total"] <= int(r.data.tags[TAG_PLANNED])
        sampled = r.data.tags[TAG_MODEL] == "final"  # each column keeps its phase's protocol
        assert r.data.params["eval_samples"] == str(p.eval_samples if sampled else 1)
        assert ("test_crps_h5" in r.data.metrics) == sampled

    # Charged to the ledger under phase "report"; the FLOPs column adds up to the total.
    ledger = read_ledger(client, exp_id, int(p.budget))
    charged = sum(int(r.data.metrics["flops_total"]) for r in fills)
    assert ledger.by_phase()["report"] == (5, charged)
    m = first.data.metrics
    assert m["flops_report"] == charged == m["flops_this_report"]
    assert sum(m[f"flops_{phase}"] for phase in ledger.by_phase()) == m["flops_spent"]
    assert m["flops_spent"] == budget_table(exp_id, p.budget)[1]["flops_spent"] == ledger.spent

    # The table: every cell measured; the final's own cell is its run's test score.
    (final_run,) = finished_runs(exp_id, "final", "micro")
    assert m["final_test_mse_ctx128"] == final_run.data.metrics["test_mse_filled_h5"]
    assert m["cells_filled"] == 5 and m["cells_empty"] == 0
    logged = {f.path for f in client.list_artifacts(first.info.run_id)}
    assert {"report.md", "report.html"} <= logged
    plots = {f.path for f in client.list_artifacts(first.info.run_id, "plots")}
    assert plots == {"plots/step_errors_test.png", "plots/fan_test.png", "plots/fan_val.png"}

    md = mlflow.artifacts.load_text(f"runs:/{first.info.run_id}/report.md")
    page = mlflow.artifacts.load_text(f"runs:/{first.info.run_id}/report.html")
    for r in fills:
        assert f"evaluated by this report in run `{r.info.run_id}`, charged" in md
        assert number(r.data.metrics["test_mse_filled_h5"]) in page
    assert "penalised by persistence" in md
    # Every measured MSE with its 95% interval; paired differences of final and initial.
    mse = m["final_test_mse_ctx128"]
    lo, hi = m["final_test_mse_lo_ctx128"], m["final_test_mse_hi_ctx128"]
    assert f"{number(mse)} [{lo:.3g}, {hi:.3g}]" in md
    assert "## Differences (test MSE, paired)" in md
    assert md.count("| final - initial (ctx ") == len(p.contexts)
    # Self-contained: the figures inline, no external source, link or script.
    assert "<table>" in page and page.count('src="data:image/png;base64,') == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "<link" not in page

    # Only the final run's other context is left for a new final run to leave room for.
    assert report_reserve(exp_id, p, shape, decimals, SERIES, lora, 128) == bound(
        64, lora, p.eval_samples
    )

    # A second report evaluates nothing: it reads the cells the first one measured.
    _report(small_data_file)
    assert len(_fills(exp_id)) == 5
    second = _report_runs(exp_id)[-1]
    assert second.data.metrics["cells_filled"] == 0
    assert second.data.metrics["flops_this_report"] == 0
    again = mlflow.artifacts.load_text(f"runs:/{second.info.run_id}/report.md")
    for r in fills:
        assert f"evaluated by an earlier report in run `{r.info.run_id}`" in again
    same = [k for k in m if "_test_" in k and "_ctx" in k]
    # contexts x (untrained and initial: MSE, MAE greedy; final: MSE, MAE, CRPS, coverage),
    # each with the two ends of its 95% interval
    assert len(same) == 2 * (2 + 2 + 4) * 3
    for k in same:
        if k.endswith(tuple(f"_lo_ctx{c}" for c in p.contexts)):
            value = m[k.replace("_lo_ctx", "_ctx")]
            assert m[k] <= value <= m[k.replace("_lo_ctx", "_hi_ctx")], k
    assert {k: second.data.metrics[k] for k in same} == {k: m[k] for k in same}


def test_reference_and_difference_tables_print_intervals_and_say_what_is_resolved() -> None:
    refs = {"persistence": {"mse": 0.349, "mse_lo": 0.3, "mse_hi": 0.41, "mae": 0.4}, "var": {}}
    lines = reference_table(refs, 5)
    assert lines[0] == "| forecaster | test MSE h5 [95%] | test MAE h5 |"
    assert lines[2] == "| persistence | 0.349 [0.3, 0.41] | 0.4 |"
    assert lines[3] == f"| var | {DASH} | {DASH} |"  # nothing logged: no interval either
    rows = differences_table(
        [
            ("final - persistence", -0.2, -0.25, -0.15),
            ("final - initial (ctx 64)", 0.01, -0.02, 0.04),
        ]
    )
    assert rows[2] == "| final - persistence | -0.2 | [-0.25, -0.15] | yes |"
    assert (
        rows[3]
        == "| final - initial (ctx 64) | 0.01 | [-0.02, 0.04] | no: the interval includes 0 |"
    )
