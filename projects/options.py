"""Click options shared by the entry points."""

from __future__ import annotations

import click

from projects.presets import PRESETS

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
seed_option = click.option("--seed", default=0, show_default=True, type=int)


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
    return values
