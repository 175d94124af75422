"""FLOPs plans: each part of a run's plan, against lvflops' costs assembled here by hand."""

from __future__ import annotations

from lvflops import eval_flops, forward_flops, generate_flops, train_step_flops
from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import RunPlan, forecast_bound, plan_run
from tests.lvmodel._toy import TOY_SHAPE

SHAPE = TOY_SHAPE
LORA = LoraSettings(rank=2, lm_head_bias=True)
KW = {"lora_rank": 2, "lora_targets": ("q_proj", "v_proj"), "lm_head_bias": True}


def _gen(n_rows: int, ctx: int, new: int, **kw) -> int:
    return generate_flops(
        SHAPE, ctx, new, batch=n_rows, kv_cache=True, cache_len=ctx + new - 1, logits_len=1, **kw
    ).total


def _sampled_by_hand(n_series: int, samples: int, ctx: int, new: int, **kw) -> int:
    """Each prompt prefilled once (`n_series` rows), then `new - 1` 1-token steps over every
    sample's row, every pass over `ctx + new - 1` cache slots and the last logits only."""
    slots = ctx + new - 1
    prefill = forward_flops(SHAPE, ctx, n_series, kv_len=slots, logits_len=1, **kw).total
    step = forward_flops(SHAPE, 1, n_series * samples, kv_len=slots, logits_len=1, **kw).total
    return prefill + (new - 1) * step


def test_forecast_bound_is_every_row_at_the_grammars_longest_continuation():
    # horizon 3, 2 decimals: 3 steps x 2 numbers x ("dd" "." "dd" + separator) = 36 tokens
    assert forecast_bound(SHAPE, 5, 64, 3) == _gen(5, 64, 36)
    sampled = forecast_bound(SHAPE, 5, 64, 3, lora=LORA, num_samples=4)
    assert sampled == _sampled_by_hand(5, 4, 64, 36, **KW)
    # the prompt's prefill is shared by its samples: less than 20 independent rows
    assert sampled < _gen(20, 64, 36, **KW)
    # 0 decimals: "dd" + separator = 3 tokens a number
    assert forecast_bound(SHAPE, 1, 64, 1, decimals=0) == _gen(1, 64, 6)


def test_plan_run_counts_each_part():
    config = TrainConfig(
        steps=10,
        batch_size=4,
        grad_accum=2,
        context_length=64,
        eval_every=4,  # at 4, 8 and the end
        eval_windows=6,
        forecast_every=5,  # at 5 and 10 (the end: evaluated once)
        forecast_series=3,
        forecast_horizon=2,
    )
    plan = plan_run(SHAPE, config, LORA, 2, {"val": 7, "test": 9}, horizon=5)
    assert isinstance(plan, RunPlan)
    assert plan.train == 10 * train_step_flops(SHAPE, 64, 8, **KW).total
    assert plan.val_loss == 3 * eval_flops(SHAPE, 64, 6, **KW).total
    assert plan.val_forecast == 2 * _gen(3, 64, 24, **KW)  # 2 steps x 12 tokens
    assert plan.final_eval == {"val": _gen(7, 64, 60, **KW), "test": _gen(9, 64, 60, **KW)}
    assert plan.total == plan.train + plan.val_loss + plan.val_forecast + sum(
        plan.final_eval.values()
    )
    assert plan.as_dict()["total"] == plan.total


def test_no_forecasts_and_no_lora():
    config = TrainConfig(steps=3, batch_size=2, context_length=32, eval_every=0, forecast_series=0)
    plan = plan_run(SHAPE, config, None, 2, {}, horizon=5)
    assert plan.val_forecast == 0 and plan.final_eval == {}
    assert plan.val_loss == eval_flops(SHAPE, 32, config.eval_windows).total  # the end only
    assert plan.total == 3 * train_step_flops(SHAPE, 32, 2).total + plan.val_loss


def _linear_plan(steps: int) -> RunPlan:
    """A plan of 7 FLOPs a step plus 30 of evaluations, and 5 more every 4 steps."""
    return RunPlan(train=7 * steps, val_loss=5 * (steps // 4), val_forecast=0, final_eval={"v": 30})


def test_affordable_steps_is_the_largest_that_fits():
    from lvmodel.run_plan import affordable_steps

    # 100 steps: 700 + 125 + 30 = 855; 101 steps: 707 + 125 + 30 = 862; 102: 714+125+30 = 869
    assert affordable_steps(861, _linear_plan) == 100
    assert affordable_steps(862, _linear_plan) == 101
    assert affordable_steps(868, _linear_plan) == 101
    assert affordable_steps(37, _linear_plan) == 1  # one step and the evaluations: 7 + 30
    assert affordable_steps(36, _linear_plan) == 0  # not even one
    assert affordable_steps(10**12, _linear_plan, most=50) == 50  # capped
