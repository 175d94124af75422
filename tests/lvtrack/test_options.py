"""Entry-point parameters: left out or "" is None (the preset's), a value is checked once by click."""

from __future__ import annotations

import ast

import click
import pytest
from click.testing import CliRunner

from lvtrack.options import (
    BUDGET,
    CONTEXTS,
    OrPreset,
    StepsOrBudget,
    budget_option,
    preset_value,
    run_options,
    steps_option,
)
from lvtrack.presets import get_preset


@click.command()
@run_options
@steps_option("initial_steps")
@budget_option
@preset_value("contexts", CONTEXTS, "--contexts", "Context lengths")
@preset_value("final_steps", OrPreset(StepsOrBudget()), "--final", "Final steps")
def _cmd(**given: object) -> None:
    click.echo(repr(sorted(given.items())))


def _given(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(_cmd, list(args))
    assert result.exit_code == 0, result.output
    return dict(ast.literal_eval(result.output))


def test_left_out_and_empty_are_none():
    """`mlflow run` passes "" for a parameter the user left out; the shell leaves it out."""
    for args in ([], ["--steps", "", "--budget", "", "--contexts", "", "--base-model", ""]):
        given = _given(*args)
        assert given["steps"] is None and given["budget"] is None
        assert given["contexts"] is None and given["base_model"] is None
        assert given["eval_series"] is None and given["final"] is None


def test_values_are_typed():
    given = _given("--steps", "7", "--budget", "2e13", "--contexts", "64, 128", "--final", "budget")
    assert given["steps"] == 7 and given["budget"] == 2e13
    assert given["contexts"] == (64, 128) and given["final"] == BUDGET
    assert _given("--final", "12")["final"] == 12


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--steps", "0"], ["--steps", "0 is not in the range x>=1", "leave it out"]),
        (["--budget", "-3"], ["--budget", "-3.0 is not in the range x>0"]),
        (["--eval-series", "many"], ["--eval-series", "'many' is not a valid integer"]),
        (["--contexts", "64,8"], ["--contexts", "'64,8'", "x>=24", "two time steps"]),
        (["--final", "0"], ["--final", "0 is not in the range x>=1"]),
    ],
)
def test_bad_values_are_refused_naming_the_option(args, fragments):
    result = CliRunner().invoke(_cmd, args)
    assert result.exit_code == 2
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_get_preset_fills_only_what_was_given():
    tiny = get_preset("tiny")
    assert get_preset("tiny", lr=None, rank=None, eval_series=None) == tiny
    cut = get_preset("tiny", rank=4, eval_series=5)
    assert (cut.rank, cut.eval_series, cut.forecast_series, cut.eval_windows) == (4, 5, 5, 5)
    assert tiny.final_steps is None and tiny.eval_series is None  # the budget's / all series
