"""Click options shared by the entry points, and the checks of their values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from lvtrack.presets import PRESETS

preset_option = click.option(
    "--preset",
    default="tiny",
    show_default=True,
    type=click.Choice(sorted(PRESETS)),
    help="Experiment scale: tiny (CPU-sized) or qwen (coursework scale).",
)
base_option = click.option(
    "--base-model", default="", help="Hub id, local folder or .gguf file (default: the preset's)."
)
data_option = click.option(
    "--data-file",
    default="data/lotka_volterra_data.h5",
    show_default=True,
    help="Data file; generated when missing.",
)
seed_option = click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the LoRA init and batches."
)
eval_series_option = click.option(
    "--eval-series",
    default=-1,
    type=int,
    help="Score at most N validation/test series; also caps the in-training forecast series and "
    "validation-loss windows (-1: the preset's; for quick runs of a large model).",
)


def steps_option(what: str) -> Callable[[Any], Any]:
    """`--steps` (-1: `what`, the preset's value it replaces)."""
    return click.option("--steps", default=-1, type=int, help=f"Optimizer steps (-1: {what}).")


def run_options(command: Any) -> Any:
    """The options every training entry point takes: preset, base model, data file, seed and
    the evaluation cut (`--eval-series`), before the entry point's own."""
    # Click lists options in the reverse of the order they are applied: the last applied first.
    for option in (eval_series_option, seed_option, data_option, base_option, preset_option):
        command = option(command)
    return command


# The shortest useful training/forecasting context: two time steps of two 2-decimal values
# ("12.34,5.67;" is up to 12 tokens). Shorter windows cannot hold one step and the next.
MIN_CONTEXT_TOKENS = 24
# Lower bounds of numeric entry-point parameters (-1 always means "the preset's value").
MINIMUMS: dict[str, float] = {
    "--lr": 0.0,
    "--rank": 1,
    "--context-length": MIN_CONTEXT_TOKENS,
    "--contexts": MIN_CONTEXT_TOKENS,
    "--steps": 1,
    "--eval-series": 1,
    "--batch-size": 1,
    "--warmup-steps": 0,
    "--checkpoint-every": 0,
    "--budget": 0.0,
    "--seeds": 1,
}
# Bounds that are exclusive (the value must be strictly above them).
_EXCLUSIVE = {"--lr", "--budget"}


def check_value(value: float, param: str) -> None:
    """Raise `click.BadParameter` naming `param` when `value` is below its minimum (not -1)."""
    if value == -1 or param not in MINIMUMS:
        return
    low = MINIMUMS[param]
    if param in _EXCLUSIVE and not value > low:
        raise click.BadParameter(
            f"must be positive (or -1 for the preset), got {value:g}", param_hint=param
        )
    if value < low:
        unit = " tokens (two time steps)" if "context" in param else ""
        raise click.BadParameter(
            f"must be at least {low:g}{unit} (or -1 for the preset), got {value:g}",
            param_hint=param,
        )


def check_train_values(**values: float) -> None:
    """Check numeric entry-point parameters given as python names (`context_length=...`)."""
    for name, value in values.items():
        check_value(value, "--" + name.replace("_", "-"))


def parse_list(text: str, kind: type, param: str) -> tuple:
    """A comma-separated parameter (`"1e-4,5e-5"`) as a tuple; empty means "the preset's"."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = tuple(kind(t) for t in items)
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated {kind.__name__} values, got {text!r}", param_hint=param
        ) from None
    if any(v <= 0 for v in values):
        raise click.BadParameter(f"values must be positive, got {text!r}", param_hint=param)
    low = MINIMUMS.get(param)
    if low is not None and any(v < low for v in values):
        raise click.BadParameter(
            f"values must be at least {low:g}, got {text!r}"
            + (" (a context must hold two time steps)" if "context" in param else ""),
            param_hint=param,
        )
    return values


def search_options(command: Any) -> Any:
    """The options that shape a search (`search`, and `plan --method search`): its space,
    sampler, trials and rungs, and its share of the budget (checked in `lvtrack.search`)."""
    options = (
        click.option(
            "--space",
            default="",
            help="Search space, e.g. 'lr=1e-4:1e-2;rank=4,8;context=256' (default: the preset's).",
        ),
        click.option(
            "--sampler", default="tpe", show_default=True, type=click.Choice(["tpe", "grid"])
        ),
        click.option("--trials", default=-1, type=int, help="Trials in all (-1: the preset's)."),
        click.option("--rungs", default=3, show_default=True, type=click.IntRange(min=1)),
        click.option("--eta", default=3, show_default=True, type=click.IntRange(min=2)),
        click.option(
            "--share", default=-1.0, help="The search's share of the budget (-1: the preset's)."
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
