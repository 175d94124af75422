"""The search space parameter and the rung sizing of `search`: parsed and checked before anything
runs; rungs sized from the search's share of the budget."""

from __future__ import annotations

import click
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from lvtrack.budget_db import default_storage
from lvtrack.presets import get_preset
from lvtrack.search_settings import ALL_LINEAR, SearchSpaceError, parse_space, rung_flops

TINY = get_preset("tiny")


def test_a_space_varies_what_it_names_and_fixes_the_rest_at_the_preset():
    space = parse_space("lr=1e-4:1e-2; rank=4,16 ;targets=q_proj+v_proj,all", TINY)
    assert space.lr == (1e-4, 1e-2)
    assert space.ranks == (4, 16)
    assert space.contexts == (TINY.context_length,)
    assert space.targets == (("q_proj", "v_proj"), ALL_LINEAR)
    dists = space.distributions()
    assert dists["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["rank"] == CategoricalDistribution((4, 16))
    assert "context" not in dists  # one value: fixed
    assert parse_space("", TINY).distributions() == {}  # the preset's settings, nothing varied
    # The same space written differently has the same fingerprint (workers compare them).
    assert (
        parse_space("rank=4,16;lr=1e-4:1e-2", TINY).fingerprint()
        == parse_space(" lr=1e-4:1e-2;rank=4,16", TINY).fingerprint()
    )


def test_the_grid_takes_the_given_lrs_and_every_choice():
    space = parse_space("lr=1e-5:1e-3;rank=2,4,8", TINY)
    assert space.grid((1e-5, 5e-5, 1e-4)) == {"lr": [1e-5, 5e-5, 1e-4], "rank": [2, 4, 8]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr=", "expected LOW:HIGH"),
        ("lr=1e-2:1e-4", "LOW < HIGH"),
        ("lr=1e-3:1e-3", "LOW < HIGH"),
        ("lr=-1:1", "positive"),
        ("rank=", "'rank' is empty"),
        ("rank=4,x", "expected comma-separated int"),
        ("rank=0,4", "at least 1"),
        ("rank=4,4", "repeats"),
        ("context=8", "at least 24 tokens"),
        ("targets=q_proj+nope", "modules are"),
        ("depth=3", "unknown search space name 'depth'"),
        ("lr", "has no '='"),
        ("rank=4;rank=8", "given twice"),
    ],
)
def test_bad_spaces_name_the_item_and_what_to_write(text, message):
    with pytest.raises(SearchSpaceError, match=message):
        parse_space(text, TINY)


def test_rungs_are_sized_from_the_search_share():
    # 9 trials, 3 rungs, eta 3: 9, 3 and 1 trials; stable 9*1 + 3*2 + 1*6 = 21 r0, branches
    # 0.2 * (9 + 9 + 9) = 5.4 r0, 13 evaluations.
    assert rung_flops(26.4e6 + 13 * 1000, 9, 3, 3, 0.2, evaluation=1000) == 1_000_000
    # 4 trials: at least one trial at every rung (asynchronous halving promotes the first ones):
    # counts 4, 4/3, 1; stable 4 + (4/3)*2 + 1*6 = 12.667 r0; branches 0.2 * (4 + 4 + 9) = 3.4 r0
    assert rung_flops(16.0667e6, 4, 3, 3, 0.2) == pytest.approx(1_000_000, rel=1e-4)
    assert rung_flops(1000, 9, 3, 3, 0.2, evaluation=1000) == 0  # evaluations take it all


def test_the_study_lives_beside_the_tracking_store(tmp_path):
    assert default_storage(f"sqlite:///{tmp_path}/mlflow.db") == f"sqlite:///{tmp_path}/optuna.db"
    assert default_storage("sqlite:///mlflow.db") == "sqlite:///optuna.db"
    assert (
        default_storage("postgresql://lv@127.0.0.1:5432/mlflow")
        == "postgresql://lv@127.0.0.1:5432/mlflow_optuna"
    )
    with pytest.raises(click.ClickException, match="give --storage"):
        default_storage("http://127.0.0.1:5000")
