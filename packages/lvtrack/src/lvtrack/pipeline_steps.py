"""The pipeline's steps: their order, the parameters each takes, and which already finished.

A step that already finished in this experiment (same phase and preset) is reused, not rerun, as
in MLflow's multistep-workflow example; so a pipeline that died half-way resumes where it stopped.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from lvtrack.ledger import TAG_PHASE

#: Every step is an MLproject entry point; all but `report` and `budget` are also run phases
#: (their runs' `phase` tag), which is how a finished one is found; those two run every time (they
#: read the store as it is now; a `report` reuses the cells it measured before). The settings are
#: chosen by the coursework's grid (`sweep`, then `context`) or by the budget-aware `search`.
#: `final` points the champion alias at the best version itself (`lvtrack.registry.promote`, the
#: one place that moves it): the `promote` entry point is for moving it by hand.
_CHOSEN_BY = {"grid": ("sweep", "context"), "search": ("search",)}
_BEFORE = ("data", "reference", "baseline", "initial")
_AFTER = ("final", "report", "budget")
STEPS = {method: (*_BEFORE, *chosen_by, *_AFTER) for method, chosen_by in _CHOSEN_BY.items()}
ALWAYS_RUN = frozenset({"report", "budget"})
PHASES = frozenset(s for steps in STEPS.values() for s in steps) - ALWAYS_RUN
#: The cuts each step takes (`pipeline --steps/--lrs/--ranks/--eval-series`).
CUTS = {
    "baseline": ("eval_series",),
    "initial": ("steps", "eval_series"),
    "sweep": ("steps", "lrs", "ranks", "eval_series"),
    "context": ("steps", "eval_series"),
    "final": ("steps", "eval_series"),
    "search": ("eval_series",),
    "report": ("eval_series",),
}


def already_ran(experiment_id: str, phase: str, preset: str) -> str | None:
    """Run id of a FINISHED run of this step (and preset, where it has one), or None."""
    preset_filter = "" if phase == "data" else f" and tags.preset = '{preset}'"
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_PHASE}` = '{phase}' and attributes.status = 'FINISHED'"
        + preset_filter,
        max_results=200,
    )
    # The step's own run, not a child of it (sweep children share the phase tag).
    ids = {r.info.run_id for r in runs}
    top = [r for r in runs if r.data.tags.get("mlflow.parentRunId") not in ids]
    return top[0].info.run_id if top else None


def step_params(
    step: str,
    preset: str,
    base_model: str | None,
    data_file: str,
    cuts: dict[str, str] | None = None,
) -> dict[str, str]:
    """The MLproject parameters of one step. `cuts` (`steps`, `lrs`, `ranks`, `eval_series`; only
    those given) go to the steps that take them (:data:`CUTS`), for a quick pass of a large
    model."""
    if step == "budget":
        return {"preset": preset}
    params = {"data_file": data_file}
    if step == "data":
        return params
    params["preset"] = preset
    if step not in ("reference", "report") and base_model:  # report: the runs' own base
        params["base_model"] = base_model
    given = cuts or {}
    return {**params, **{n: given[n] for n in CUTS.get(step, ()) if n in given}}
