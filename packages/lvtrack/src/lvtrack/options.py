"""Click options shared by the entry points: one typed value per parameter, checked once by click.

A parameter left out (or given as "", which is what `mlflow run` passes for an MLproject parameter
whose default is "") is None: the preset's value (`lvtrack.presets.get_preset` fills it in). A value
given is checked by its type and range before anything runs (exit 2, naming the option).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from lvtrack.presets import DEFAULT_DATA, PRESETS

# The shortest useful training/forecasting context: two time steps of two 2-decimal values
# ("12.34,5.67;" is up to 12 tokens). Shorter windows cannot hold one step and the next.
MIN_CONTEXT_TOKENS = 24
UNSET_HINT = 'leave it out (MLproject: "") for the preset\'s value'


class OrPreset(click.ParamType):
    """A value of `inner`, or None ("the preset's") when left out or given as ""."""

    def __init__(self, inner: click.ParamType, why: str = "") -> None:
        self.inner, self.why = inner, why
        self.name = inner.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            return self.inner.convert(value, param, ctx)
        except click.BadParameter as err:
            why = f" ({self.why})" if self.why and "range" in err.message else ""
            self.fail(f"{err.message.rstrip('.')}{why}; {UNSET_HINT}", param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        return self.inner.get_metavar(param, ctx)


class ListOf(click.ParamType):
    """Comma-separated values of `inner` ("1e-4,5e-5") as a tuple; None when left out or ""."""

    name = "list"

    def __init__(self, inner: click.ParamType, why: str = "") -> None:
        self.inner, self.why = inner, why

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, tuple):
            return value
        items = [t.strip() for t in str(value).split(",") if t.strip()]
        if not items:
            return None
        try:
            return tuple(self.inner.convert(t, param, ctx) for t in items)
        except click.BadParameter as err:
            why = f" ({self.why})" if self.why and "range" in err.message else ""
            self.fail(
                f"expected comma-separated {self.inner.name} values, got {value!r}: "
                f"{err.message.rstrip('.')}{why}",
                param,
                ctx,
            )


class StepsOrBudget(click.ParamType):
    """A step count (at least 1), or the word "budget": as many as the budget has left."""

    name = "steps"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == BUDGET:
            return BUDGET
        try:
            return _integers(1).convert(value, param, ctx)
        except click.BadParameter as err:
            self.fail(f"{err.message.rstrip('.')} (or '{BUDGET}')", param, ctx)


#: `final --steps budget`: as many steps as what is left of the budget affords.
BUDGET = "budget"


def _integers(low: int) -> click.IntRange:
    kind = click.IntRange(min=low)
    kind.name = "integer"  # click says "'x' is not a valid {name}"
    return kind


def _numbers(low: float, high: float | None = None) -> click.FloatRange:
    kind = click.FloatRange(min=low, max=high, min_open=True)
    kind.name = "number"
    return kind


#: The value types of the entry points' parameters (None: the preset's).
TWO_STEPS = "a context must hold two time steps"
COUNT = OrPreset(_integers(1))
NONNEGATIVE = OrPreset(_integers(0))
POSITIVE = OrPreset(_numbers(0))
SHARE = OrPreset(_numbers(0, 1))
CONTEXT = OrPreset(_integers(MIN_CONTEXT_TOKENS), TWO_STEPS)
TEXT = OrPreset(click.STRING)
LRS = ListOf(_numbers(0))
RANKS = ListOf(_integers(1))
CONTEXTS = ListOf(_integers(MIN_CONTEXT_TOKENS), TWO_STEPS)


def preset_value(
    what: str, type: click.ParamType, name: str, help: str, field: str | None = None
) -> Callable[[Any], Any]:
    """An option that overrides the preset's `what` (None, its default, keeps the preset's),
    passed to the command as `field` when its name is not the option's."""
    names = (name, field) if field else (name,)
    return click.option(
        *names, default=None, type=type, help=f"{help} (default: the preset's {what})."
    )


preset_option = click.option(
    "--preset",
    default="tiny",
    show_default=True,
    type=click.Choice(sorted(PRESETS)),
    help="Experiment scale: tiny (CPU-sized) or qwen (coursework scale).",
)
base_option = preset_value("base_model", TEXT, "--base-model", "Hub id, local folder or .gguf file")
data_option = click.option(
    "--data-file",
    default=DEFAULT_DATA,
    show_default=True,
    help="Data file; generated when missing.",
)
seed_option = click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the LoRA init and batches."
)
eval_series_option = preset_value(
    "eval_series",
    COUNT,
    "--eval-series",
    "Score at most N validation/test series; also caps the in-training forecast series and "
    "validation-loss windows (for quick runs of a large model)",
)
budget_option = preset_value("budget", POSITIVE, "--budget", "Experiment budget in FLOPs")


def steps_option(what: str) -> Callable[[Any], Any]:
    """`--steps`, overriding the preset's `what`."""
    return preset_value(what, COUNT, "--steps", "Optimizer steps")


def run_options(command: Any) -> Any:
    """The options every training entry point takes: preset, base model, data file, seed and
    the evaluation cut (`--eval-series`), before the entry point's own."""
    # Click lists options in the reverse of the order they are applied: the last applied first.
    for option in (eval_series_option, seed_option, data_option, base_option, preset_option):
        command = option(command)
    return command


def search_options(command: Any) -> Any:
    """The options that shape a search (`search`, and `plan --method search`): its space,
    trials and share (the preset's `search_space`, `search_trials`, `search_share`), its
    sampler and rungs (`lvtrack.search_settings.SearchSettings`)."""
    options = (
        preset_value(
            "search_space",
            TEXT,
            "--space",
            "Search space, e.g. 'lr=1e-4:1e-2;rank=4,8;context=256'",
            "search_space",
        ),
        click.option(
            "--sampler", default="tpe", show_default=True, type=click.Choice(["tpe", "grid"])
        ),
        preset_value("search_trials", COUNT, "--trials", "Trials in all", "search_trials"),
        click.option("--rungs", default=3, show_default=True, type=click.IntRange(min=1)),
        click.option("--eta", default=3, show_default=True, type=click.IntRange(min=2)),
        preset_value(
            "search_share", SHARE, "--share", "The search's share of the budget", "search_share"
        ),
        click.option(
            "--rung-score",
            default="forecast",
            show_default=True,
            type=click.Choice(["forecast", "nll"]),
            help="What scores a rung: the forecasting metric (sampled forecasts) or LLMTime's "
            "NLL/D of the true continuation (one forward pass; docs/search.md).",
        ),
        click.option(
            "--decay-fraction",
            default=0.2,
            show_default=True,
            type=click.FloatRange(0, 1, min_open=True),
            help="Each rung's decay branch, as a share of its stable steps.",
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command
