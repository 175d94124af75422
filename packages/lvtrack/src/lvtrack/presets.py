"""Experiment presets: `tiny` (CPU-sized, the default) and `qwen` (the coursework scale).

A preset fixes the base model, the step counts of each phase, the context lengths, the evaluation
protocol and the FLOPs budget. Entry-point parameters override single fields (`get_preset`); a
parameter left out is None and keeps the preset's value. In a preset, None means "none given":
`final_steps` None is no fixed count (what the budget has left), `eval_series` None no cut (every
series), `forecast_every` None no in-run forecasting metric.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

#: The data file every entry point reads (generated there when missing).
DEFAULT_DATA = "data/lotka_volterra_data.h5"


@dataclass(frozen=True)
class Preset:
    """Settings of one experiment scale.

    Attributes:
        base_model: hub id, local directory, .gguf file, or "tiny".
        budget: FLOPs for all budgeted runs of the experiment together.
        lr, rank, batch_size, context_length: the coursework defaults (initial run).
        initial_steps, sweep_steps, context_steps, final_steps: optimizer steps of each phase;
            `final_steps` None: as many as what is left of the budget affords (after the final
            run's evaluations), so that the experiment spends its whole budget.
        final_seeds: `final` trains its settings with this many seeds (seed, seed + 1, ...),
            each on an equal share of what the budget has left; the best on validation becomes
            the champion and the spread across seeds is logged (1: one run).
        sweep_lrs, sweep_ranks: the lr x rank grid.
        contexts: the context-length sweep (tokens); `baseline` evaluates at these too.
        history_steps, horizon: the forecasting protocol (first K steps in, next H out).
        origins: the histories (steps in) at which a run that scores the test split (`final`)
            also scores both splits, beside `history_steps` (the headline): the same model from
            early, middle and late points of each series, logged as `{split}_mse_h5_k{K}` etc.
        eval_series: validation (and test) series scored at the end of a run (None: all).
        eval_windows: validation windows of the in-training validation loss (the first ones).
        eval_every, forecast_every: in-training validation loss / forecasting metric cadence in
            steps (0: at the end of the run only); `forecast_every` None: no forecasting metric
            in training at all.
        forecast_series: validation series of the in-training forecasting metric, and of the
            score of each of a search's rungs.
        schedule, warmup_steps: the LR schedule.
        checkpoint_every, checkpoint_seconds: training checkpoints every N steps and/or every T
            seconds of wall time (0: not by that measure; the end and every in-run forecast
            are always saved), for resuming a run that died (`--resume-run-id`); the newest two
            are kept. By time by default: a GPU step is tens of milliseconds, a CPU one far more.
        log_every, log_seconds: metrics reach MLflow every N steps and/or T seconds (every
            step's values, in one batch write; the training loop reads the device only then).
        compile: `torch.compile` the decoder for training steps on CUDA (ignored on a CPU). Off
            until a GPU measures it (`benchmarks/gpu_check.py --compile both`).
        lora_targets: modules LoRA wraps (the coursework: q_proj and v_proj).
        search_space: what `search` varies (`lvtrack.search_settings` syntax): lr range, ranks,
            contexts.
        search_trials: trials of a search (over all its workers).
        search_share: the search's share of the budget (its rungs are sized from it).
        eval_samples: samples per series of the probabilistic evaluations (the `final` run's
            validation and test scores and the `report`'s cells): the point forecast is their
            median, with quantiles, CRPS and the 80% interval's coverage; 1: greedy.
        temperature, top_p: how those samples are drawn (1.0, 1.0: the model's own distribution,
            which is what CRPS and coverage judge).
    """

    name: str
    base_model: str
    budget: float
    lr: float = 1e-4
    rank: int = 4
    batch_size: int = 4
    context_length: int = 512
    initial_steps: int = 1000
    sweep_steps: int = 500
    context_steps: int = 500
    final_steps: int | None = None
    final_seeds: int = 1
    sweep_lrs: tuple[float, ...] = (1e-5, 5e-5, 1e-4)
    sweep_ranks: tuple[int, ...] = (2, 4, 8)
    contexts: tuple[int, ...] = (128, 512, 768)
    history_steps: int = 50
    horizon: int = 5
    origins: tuple[int, ...] = (20, 50, 76)
    eval_series: int | None = None
    eval_windows: int = 64
    eval_every: int = 100
    forecast_every: int | None = 500
    forecast_series: int = 16
    schedule: str = "cosine"
    warmup_steps: int = 20
    checkpoint_every: int = 0
    checkpoint_seconds: float = 60.0
    log_every: int = 0
    log_seconds: float = 5.0
    compile: bool = False
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    # The coursework grid's lrs (1e-5..1e-4) and beyond, its ranks, its contexts.
    search_space: str = "lr=1e-5:1e-3;rank=2,4,8;context=128,512,768"
    search_trials: int = 12
    search_share: float = 0.25
    eval_samples: int = 10
    temperature: float = 1.0
    top_p: float = 1.0


PRESETS: dict[str, Preset] = {
    # Coursework scale: Qwen2.5-0.5B-Instruct, the reference study's steps, 1e17 FLOPs.
    "qwen": Preset(name="qwen", base_model="Qwen/Qwen2.5-0.5B-Instruct", budget=1e17),
    # CPU-sized: the tiny pretrained Qwen2-shaped base, same phases, far fewer steps and FLOPs.
    # LoRA wraps every linear layer here: the 0.8M-parameter tiny base barely moves with q/v alone
    # (val MSE 0.31 -> 0.30 in 1200 steps), while all seven at rank 16 reach 0.25 in 300 steps at
    # context 256, 0.18 in 600 steps and 0.066 in 1500 steps at context 512 (validation, K=50,
    # H=5). The budget sizes `final` (what is left): about 2,800 steps (5e13 / 1.8e10 a step at
    # context 256) when run alone, about 1,800 after the grid phases: minutes on 2 CPU cores.
    "tiny": Preset(
        name="tiny",
        base_model="tiny",
        budget=5e13,
        lr=3e-3,
        rank=16,
        batch_size=8,
        context_length=256,
        initial_steps=150,
        sweep_steps=60,
        context_steps=60,
        sweep_lrs=(1e-3, 3e-3, 1e-2),
        sweep_ranks=(4, 16, 32),
        contexts=(128, 256, 512),
        eval_every=50,
        forecast_every=100,
        forecast_series=16,
        warmup_steps=10,
        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        search_space="lr=3e-4:3e-2;rank=4,16,32;context=128,256,512",
        # The headline origin only: two more would add about 40 s of forecasting (of 10 and 11 s
        # for val and test at K=50) to the README's main job, already past 10 minutes.
        origins=(50,),
    ),
    # Smoke-test scale: seconds per run on 2 cores, results meaningless. For tests and set-up checks.
    "micro": Preset(
        name="micro",
        base_model="tiny",
        budget=5e13,
        lr=1e-3,
        rank=2,
        batch_size=4,
        context_length=128,
        initial_steps=4,
        sweep_steps=2,
        context_steps=2,
        final_steps=6,
        sweep_lrs=(1e-3, 3e-3),
        sweep_ranks=(2, 4),
        contexts=(64, 128),
        eval_series=8,
        eval_every=0,
        forecast_every=None,  # no in-run forecasting metric (the search's rungs score 4 series)
        forecast_series=4,
        warmup_steps=0,
        checkpoint_every=2,
        log_every=1,  # the reliability tests kill runs at known steps
        search_space="lr=1e-3:1e-2;rank=2,4",
        search_trials=4,
        search_share=0.01,  # 5e11: rungs of ~10 and ~30 steps
        eval_samples=3,
        origins=(50,),  # the headline only: the tests count its FLOPs by hand
    ),
}


def get_preset(name: str, **overrides: Any) -> Preset:
    """The named preset with overrides applied; an override that is None leaves its field as it is.

    `eval_series=N` cuts all evaluation to at most N: the series scored at the end of a run, the
    in-training forecasting metric's series and the validation-loss windows (for quick runs of a
    large model, e.g. the real Qwen2.5 on a CPU).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    kept = {k: v for k, v in overrides.items() if v is not None}
    preset = replace(PRESETS[name], **kept)
    if "eval_series" in kept:
        cut = int(kept["eval_series"])
        preset = replace(
            preset,
            forecast_series=min(preset.forecast_series, cut),
            eval_windows=min(preset.eval_windows, cut),
        )
    return preset
