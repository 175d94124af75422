"""MLproject: every declared parameter reaches its command, and every command parses."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import click
import pytest
from mlflow.projects._project_spec import load_project

REPO = Path(__file__).resolve().parents[2]
PROJECT = load_project(str(REPO))


@pytest.mark.parametrize("name", sorted(PROJECT._entry_points))
def test_entry_point_uses_each_parameter_and_its_command_parses(name):
    entry = PROJECT.get_entry_point(name)
    placeholders = set(re.findall(r"\{(\w+)\}", entry.command))
    assert placeholders == set(entry.parameters), f"{name}: declared vs used differ"
    argv = shlex.split(entry.compute_command({}, storage_dir=None))
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("projects.")
    command = importlib.import_module(argv[2]).main
    assert isinstance(command, click.Command)
    # Parsing the defaults (without running) checks option names and value types: click raises a
    # UsageError for an unknown option or a value of the wrong type.
    with command.make_context(argv[2], argv[3:]) as ctx:
        given = {a.split("=")[0] for a in argv[3:] if a.startswith("--")}
        known = {o for p in command.params for o in getattr(p, "opts", [])}
        assert given <= known
        assert len(ctx.params) >= len(given)


def test_release_parameters_reach_the_budget_command():
    argv = shlex.split(
        PROJECT.get_entry_point("budget").compute_command(
            {"release_run_id": "abc", "force": 1}, storage_dir=None
        )
    )
    command = importlib.import_module(argv[2]).main
    with command.make_context(argv[2], argv[3:]) as ctx:
        assert ctx.params["release"] == "abc" and ctx.params["force"] is True
