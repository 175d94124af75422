"""The `plan` entry point: each phase's plan, the same numbers the runs then reserve."""

from __future__ import annotations

import mlflow
import pytest
from click.testing import CliRunner

from lvflops import ModelShape, eval_flops, generate_flops, train_step_flops
from lvmodel.base import base_shape
from lvtrack.ledger import TAG_PLANNED
from projects import initial as initial_entry
from projects import plan as plan_entry


def _row(output: str, phase: str) -> list[str]:
    line = next(ln for ln in output.splitlines() if ln.startswith(f"| {phase} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _micro_initial_by_hand(shape: ModelShape, n_val: int) -> int:
    """micro's initial run assembled from lvflops' costs by hand: 4 steps of batch 4 x 128 tokens,
    one validation-loss pass at the end over micro's 64 windows (eval_every 0), no
    in-run forecasts (forecast_every None), the final forecasts of the validation series: prompts
    of 128 tokens, 60 new tokens at most (5 steps x (2 x "dd.dd" + 2 separators) = 5 x 12), a
    static cache of 128 + 60 - 1 slots. LoRA rank 2 on q_proj and v_proj, and the trainable
    lm_head bias (the coursework's reference code)."""
    lora = {"lora_rank": 2, "lora_targets": ("q_proj", "v_proj"), "lm_head_bias": True}
    train = 4 * train_step_flops(shape, 128, 4, **lora).total
    loss = eval_flops(shape, 128, 64, **lora).total
    gen = generate_flops(
        shape, 128, 60, batch=n_val, kv_cache=True, cache_len=187, logits_len=1, **lora
    ).total
    return train + loss + gen


def test_plan_prints_every_phase_and_the_runs_reserve_it(tracking_uri, micro_args, random_tiny_dir):
    result = CliRunner().invoke(
        plan_entry.main,
        ["--preset", "micro", "--base-model", str(random_tiny_dir), "--n-series", "60"],
    )
    assert result.exit_code == 0, result.output
    shape = base_shape(str(random_tiny_dir))
    n_val = 6  # 60 series split 48/6/6; micro scores at most 8
    initial = _row(result.output, "initial")
    assert initial[1] == "1"
    assert float(initial[2]) == float(f"{_micro_initial_by_hand(shape, n_val):.3e}")
    phases = ("baseline", "initial", "sweep", "context", "final", "report")
    rows = {p: _row(result.output, p) for p in phases}
    assert rows["sweep"][1] == "4" and rows["context"][1] == "2" and rows["baseline"][1] == "2"
    total = _row(result.output, "**total**")
    assert abs(float(total[2]) - sum(float(r[2]) for r in rows.values())) <= 5e-3 * float(total[2])
    assert "before `final` and `report`" in result.output
    # The report's cells on the 6 test series: the untrained base and the initial model at
    # micro's contexts 64 and 128 greedily, the final model at 64 (it scores 128) with 3 samples.
    lora = {"lora_rank": 2, "lora_targets": ("q_proj", "v_proj"), "lm_head_bias": True}

    def cell(ctx: int, samples: int = 1, **kw) -> int:
        return generate_flops(
            shape,
            ctx,
            60,
            batch=6,
            num_samples=samples,
            kv_cache=True,
            cache_len=ctx + 59,
            logits_len=1,
            **kw,
        ).total

    by_hand = cell(64) + cell(128) + cell(64, **lora) + cell(128, **lora) + cell(64, 3, **lora)
    assert float(rows["report"][2]) == float(f"{by_hand:.3e}")

    # The initial run reserves exactly that plan in the ledger.
    ran = CliRunner().invoke(initial_entry.main, micro_args)
    assert ran.exit_code == 0, ran.output
    (run,) = mlflow.search_runs(experiment_names=["lv-forecast"], output_format="list")
    assert int(float(run.data.tags[TAG_PLANNED])) == _micro_initial_by_hand(shape, n_val)


def test_plan_of_the_coursework_model_needs_no_hub(monkeypatch):
    """Offline with no cached config, the default base's shape is lvflops' Qwen2.5-0.5B."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(plan_entry.main, ["--preset", "qwen"])
    assert result.exit_code == 0, result.output
    assert "QWEN2_5_0_5B" in result.output
    total = float(_row(result.output, "**total**")[2])
    # `final` takes what the other phases leave: the plan spends (to its printed precision) the
    # whole 1e17, and no more than one final step is left over (a step is ~6.8e12 FLOPs).
    assert 0.97e17 <= total <= 1e17
    final = _row(result.output, "final")
    assert "steps: what the budget has left" in final[4]
    unspent = float(result.output.split("the plan leaves ")[1].split()[0])
    assert 0 <= unspent < 6.8e12


def test_plan_of_the_search_pipeline_gives_final_what_the_search_leaves(random_tiny_dir):
    result = CliRunner().invoke(
        plan_entry.main,
        [
            "--preset", "micro", "--base-model", str(random_tiny_dir), "--n-series", "60",
            "--method", "search", "--share", "0.02", "--trials", "5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    search = _row(result.output, "search")
    assert search[1] == "5"
    assert float(search[2]) == 0.02 * 5e13  # micro's budget: the search's share, all of it
    assert "5 trials, 3 rungs of" in search[4]
    assert not any(ln.startswith(("| sweep |", "| context |")) for ln in result.output.splitlines())
    before = sum(float(_row(result.output, ph)[2]) for ph in ("baseline", "initial", "search"))
    left = float(result.output.split("before `final` and `report`, ")[1].split()[0])
    assert left == pytest.approx(5e13 - before, rel=1e-3)  # what final and report may take
    bad = CliRunner().invoke(plan_entry.main, ["--preset", "micro", "--space", "lr=2:1"])
    assert bad.exit_code != 0 and "LOW < HIGH" in bad.output


def test_plan_shares_final_between_its_seeds(random_tiny_dir):
    """With three seeds, `final` is three runs on a third each of what the budget has left: as
    many steps as one run would take on a third, and three times that run's plan."""
    from dataclasses import replace

    from lvtrack.experiment_plan import budget_steps, experiment_plan, request_plan
    from lvtrack.presets import get_preset
    from lvtrack.request import TrainRequest

    shape = base_shape(str(random_tiny_dir))
    preset = replace(get_preset("micro"), final_steps=None)
    one = {p.phase: p for p in experiment_plan(preset, shape, 2, 6, 6)}
    three = {p.phase: p for p in experiment_plan(replace(preset, final_seeds=3), shape, 2, 6, 6)}
    left = preset.budget - sum(
        p.flops for k, p in one.items() if k not in ("final", "report")
    ) - one["report"].flops  # fmt: skip
    req = TrainRequest(preset, "final", "final", None, evaluate_test=True)
    steps = budget_steps(req, shape, 2, 6, 6, left // 3)
    assert one["final"].runs == 1 and three["final"].runs == 3
    assert three["final"].steps == steps < one["final"].steps
    per_run = request_plan(replace(req, steps=steps), shape, 2, 6, 6).total
    assert three["final"].flops == 3 * per_run <= left
    assert "3 seeds of" in three["final"].note
