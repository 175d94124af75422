"""fit: loss goes down, FLOPs are metered exactly, the cap holds, and resume is exact on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvflops import ModelShape, forward_flops, train_step_flops
from lvmodel.checkpoint import latest_checkpoint, list_checkpoints
from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import plan_run
from lvmodel.tiny_tokenizer import build_tiny_tokenizer
from lvmodel.train import fit, make_scheduler
from tests.lvmodel._toy import toy_model

LORA = LoraSettings(rank=2, lm_head_bias=True)


def _model() -> torch.nn.Module:
    return toy_model(LORA)


def _config(**kw) -> TrainConfig:
    base = dict(
        steps=6,
        lr=5e-3,
        batch_size=2,
        context_length=64,
        eval_every=3,
        eval_windows=4,
        forecast_series=0,
        seed=3,
    )
    return TrainConfig(**{**base, **kw})


def test_fit_lowers_loss_and_meters_flops(toy_data):
    train, val, codec = toy_data
    model = _model()
    ran: list[tuple[bool, tuple[int, int]]] = []  # (training?, input shape) of every forward

    def spy(module, args, kwargs):
        ran.append((module.training, tuple(kwargs["input_ids"].shape)))

    model.get_base_model().model.register_forward_pre_hook(spy, with_kwargs=True)  # the decoder
    seen: list[tuple[int, dict]] = []
    result = fit(
        model,
        build_tiny_tokenizer(),
        codec,
        train,
        val,
        _config(steps=12),
        LORA,
        on_metrics=seen.extend,
        progress=False,
    )
    losses = [m["train_loss"] for _, m in seen]
    assert result.steps == 12 and result.stopped == "completed"
    assert [s for s, _ in seen] == list(range(1, 13))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert {"val_loss", "lr", "tokens_per_s", "flops_cumulative"} <= set(seen[-1][1])
    # The meter charges exactly the shapes that ran: 3 x (forward + loss) for training, 1 x
    # (forward + loss) for the validation loss.
    shape = ModelShape.from_hf_config(model.get_base_model().config.to_dict())
    kw = {"lora_rank": 2, "lm_head_bias": True}
    train_shapes = [s for training, s in ran if training]
    eval_shapes = [s for training, s in ran if not training]
    assert len(train_shapes) == 12 and len(eval_shapes) == 4 * 2  # val at 3, 6, 9, 12; 2 batches
    assert max(length for _, length in train_shapes) == 64

    def with_loss(b: int, n: int) -> int:
        # the cross-entropy of every one of the b*n logit rows over the 128-token vocabulary
        # (max 127, subtract 128, exp 1280, sum 127, log 10, subtract 1, negate 1 = 1674) and
        # the mean over the b*n rows (b*n - 1 adds, 1 divide)
        return forward_flops(shape, n, b, **kw).total + b * n * 1674 + b * n

    assert result.train_flops == sum(3 * with_loss(b, n) for b, n in train_shapes)
    assert result.eval_flops == sum(with_loss(b, n) for b, n in eval_shapes)
    assert seen[-1][1]["flops_cumulative"] == result.total_flops


def test_flops_cap_stops_before_crossing(toy_data):
    train, val, codec = toy_data
    model = _model()
    shape = ModelShape.from_hf_config(model.get_base_model().config.to_dict())
    step = train_step_flops(shape, 64, 2, lora_rank=2, lm_head_bias=True).total
    cap = 4.5 * step  # batches are at most (2, 64): at least 4 steps fit, and not 10
    result = fit(
        model,
        build_tiny_tokenizer(),
        codec,
        train,
        val,
        _config(steps=10, eval_every=0, flops_cap=cap),
        LORA,
        progress=False,
    )
    assert result.stopped == "flops_cap"
    assert 4 <= result.steps < 10
    assert result.total_flops <= cap


@pytest.mark.parametrize(("name", "last"), [("constant", 1.0), ("cosine", None), ("wsd", None)])
def test_schedules_warm_up_then_hold_or_decay(name, last):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(
        opt,
        TrainConfig(steps=10, warmup_steps=2, schedule=name, min_lr_ratio=0.1, decay_fraction=0.3),
    )
    lrs = []
    for _ in range(11):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)  # linear warmup
    if last is not None:
        assert lrs[-1] == pytest.approx(last)
    else:
        assert lrs[-1] == pytest.approx(0.1)  # decays to min_lr_ratio
    if name == "wsd":
        assert lrs[2:8] == pytest.approx([1.0] * 6)  # stable until the last 30%
        assert lrs[8] < 1.0


class _Killed(Exception):
    pass


def test_resume_reproduces_uninterrupted_run(toy_data, tmp_path):
    train, val, codec = toy_data
    cfg = _config(steps=8, checkpoint_every=2, eval_every=4, log_every=1)
    tok = build_tiny_tokenizer()
    full = fit(_model(), tok, codec, train, val, cfg, LORA, progress=False)

    def die(rows):
        if any(step == 5 for step, _ in rows):
            raise _Killed

    with pytest.raises(_Killed):
        fit(
            _model(),
            tok,
            codec,
            train,
            val,
            cfg,
            LORA,
            on_metrics=die,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    assert latest_checkpoint(tmp_path).name == "step-000004"
    assert len(list_checkpoints(tmp_path)) == 2  # keeps the newest two
    resumed = fit(
        _model(),
        tok,
        codec,
        train,
        val,
        cfg,
        LORA,
        checkpoint_dir=tmp_path,
        resume_from=tmp_path,
        progress=False,
    )
    assert resumed.steps == 8
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert resumed.final["val_loss"] == full.final["val_loss"]
    assert resumed.total_flops == full.total_flops
    assert latest_checkpoint(tmp_path).name == "step-000008"


def test_forecast_metric_is_reported_and_charged(toy_data):
    train, val, codec = toy_data
    cfg = _config(
        steps=4,
        eval_every=0,
        forecast_every=2,
        forecast_series=2,
        forecast_history=10,
        forecast_horizon=2,
    )
    seen: dict[int, dict] = {}
    result = fit(
        _model(),
        build_tiny_tokenizer(),
        codec,
        train,
        val,
        cfg,
        LORA,
        on_metrics=lambda rows: seen.update(rows),
        progress=False,
    )
    assert "val_mse" not in seen[1] and "val_mse" in seen[2] and "val_mse" in seen[4]
    assert {"val_mse_step1", "val_mse_step2", "val_invalid_rate", "val_mse_filled"} <= set(seen[4])
    assert seen[4]["val_invalid_rate"] == 0.0  # the grammar keeps output well-formed
    val_loss_only = fit(
        _model(),
        build_tiny_tokenizer(),
        codec,
        train,
        val,
        _config(steps=4, eval_every=0),
        LORA,
        progress=False,
    )
    assert result.train_flops == val_loss_only.train_flops
    assert result.eval_flops > val_loss_only.eval_flops  # two forecasts charged on top
    # The plan made before a run bounds what the run charges (it reserves the budget).
    shape = ModelShape.from_hf_config(_model().get_base_model().config.to_dict())
    for run, config in ((result, cfg), (val_loss_only, _config(steps=4, eval_every=0))):
        plan = plan_run(shape, config, LORA, codec.decimals, {}, config.forecast_horizon).total
        assert run.total_flops <= plan < 3 * run.total_flops
