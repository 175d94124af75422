"""What a reader sees first in the MLflow UI: a run's one-line description and a registered
version's model card.

- :func:`run_description`, :func:`parent_description` (and the lines of the search, promote,
  budget and pipeline runs) write the line MLflow shows as the run's description (the tag
  `mlflow.note.content`, set by :func:`describe_run`): phase, settings, headline metric,
  e.g. ``final · lr 3e-3 · rank 16 · context 256 · 2,324 steps · val MSE h5 0.0123 · test MSE h5
  0.015 · 99.1% of budget``.
- :func:`model_card` writes a registered version's description (markdown): base model and its
  pin, LoRA, data digest, codec, metrics, FLOPs, git commit, source run and how to load and serve
  it. `lvtrack.registry` fetches the source run and calls it at registration.

Everything but :func:`describe_run` is a pure function of plain dicts and numbers, so that each
figure is testable without a tracking store.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from lvtrack.tracking import set_run_tags

SEP = " · "
#: MLflow keeps a version's description in a VARCHAR(5000) (PostgreSQL enforces it).
MAX_CARD_CHARS = 5000
_METRIC = re.compile(r"^(val|test)_(mse|mae|crps|coverage80)(_filled)?_h(\d+)$")
_NAMES = {"mse": "MSE", "mae": "MAE", "crps": "CRPS", "coverage80": "coverage80"}
#: The example history of the card's predict example (original units, one series).
EXAMPLE_HISTORY = {"prey": [[1.0, 0.95, 0.91, 0.88]], "predator": [[1.0, 1.03, 1.05, 1.06]]}


# -- numbers ----------------------------------------------------------------------------------


def finite(value: Any) -> float | None:
    """`value` as a finite float, else None (a missing, non-numeric or non-finite metric)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def number(value: Any, digits: int = 3) -> str:
    """`digits` significant digits, short exponents: 0.0123 -> "0.0123", 1.2e-05 -> "1.2e-5"."""
    x = finite(value)
    if x is None:
        return "n/a"
    text = f"{x:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def sci(value: Any, digits: int = 3) -> str:
    """Scientific notation without padding: 0.003 -> "3e-3", 9.91e16 -> "9.91e16"."""
    x = finite(value)
    if x is None:
        return "n/a"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def percent(share: Any) -> str:
    """A share of 1 as a percentage: 0.991 -> "99.1%", 0.00004 -> "0.004%"."""
    x = finite(share)
    if x is None:
        return "n/a"
    pct = 100 * x
    return f"{pct:.1f}%" if pct == 0 or abs(pct) >= 0.1 else f"{number(pct, 1)}%"


def metric_label(key: str) -> str:
    """`val_mse_filled_h5` -> "val MSE h5" (filled: invalid values count as persistence)."""
    m = _METRIC.match(key)
    if not m:
        return key
    split, name, _, horizon = m.groups()
    return f"{split} {_NAMES[name]} h{horizon}"


def _headline_key(metrics: Mapping[str, Any], split: str) -> str | None:
    """The split's MSE at the horizon: the filled one (what selection uses), else the plain."""
    found: dict[bool, str] = {}
    for key in sorted(metrics):
        m = _METRIC.match(key)
        if m and m.group(1) == split and m.group(2) == "mse" and finite(metrics[key]) is not None:
            found.setdefault(bool(m.group(3)), key)
    return found.get(True, found.get(False))


# -- run descriptions ------------------------------------------------------------------------


def describe_run(text: str, run_id: str | None = None) -> None:
    """Set a run's description (the tag `mlflow.note.content`, which the MLflow UI shows as the
    run's description): the active run's, or `run_id`'s (which other processes may be writing:
    a search's parent)."""
    set_run_tags(run_id, {MLFLOW_RUN_NOTE: text})


def _settings(params: Mapping[str, Any]) -> list[str]:
    """What names a run's settings: forecaster, lr, rank, context (those given and meaningful)."""
    out = []
    if params.get("forecaster"):
        out.append(str(params["forecaster"]))
    lr = finite(params.get("lr"))
    if lr:  # a baseline logs lr 0 and rank 0: nothing trained
        out.append(f"lr {sci(lr, 2)}")
    rank = finite(params.get("rank"))
    if rank:
        out.append(f"rank {int(rank)}")
    ctx = finite(params.get("context_length"))
    if ctx:
        out.append(f"context {int(ctx)}")
    return out


def _split_headline(metrics: Mapping[str, Any], split: str) -> str | None:
    key = _headline_key(metrics, split)
    if key is None:
        return None
    text = f"{metric_label(key)} {number(metrics[key])}"
    invalid = finite(metrics.get(f"{split}_invalid_rate"))
    if invalid:
        text += f" ({percent(invalid)} invalid)"
    return text


def run_description(
    phase: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    label: str | None = None,
    state: str | None = None,
) -> str:
    """One line for a run: phase (or `label`), settings, steps, `state`, validation and test MSE
    at the horizon (with the share of invalid values when any), share of the budget spent.

    `params` may hold forecaster, lr, rank, context_length, steps; `metrics` the run's metrics
    (`steps_run` wins over the `steps` param; `budget_share` is the share of the budget).
    """
    parts = [label or phase, *_settings(params)]
    steps = finite(metrics.get("steps_run", params.get("steps")))
    if steps is not None and steps > 0:
        parts.append(f"{int(steps):,} step" + ("s" if int(steps) != 1 else ""))
    if state:
        parts.append(state)
    parts += [h for split in ("val", "test") if (h := _split_headline(metrics, split))]
    share = finite(metrics.get("budget_share"))
    if share is not None:
        parts.append(f"{percent(share)} of budget")
    return SEP.join(parts)


def parent_description(
    phase: str,
    count: int,
    noun: str,
    children: Iterable[tuple[Mapping[str, Any], Any]] = (),
    *,
    metric: str = "val_mse_filled_h5",
    fixed: Mapping[str, Any] | None = None,
    detail: str = "",
) -> str:
    """One line for a parent run: what it holds and its best child (lowest finite `metric`
    among `children`, pairs of settings and value), e.g. ``sweep · 9 runs · best lr 1e-3 rank 4
    · val MSE h5 0.0123``; `fixed` are the settings every child shares (``at lr 1e-3 rank 4``),
    `detail` any other fact (``4 completed, 8 pruned``)."""
    parts = [phase, f"{count} {noun}"]
    if detail:
        parts.append(detail)
    if fixed and (shared := _settings(fixed)):
        parts.append("at " + " ".join(shared))
    scored = [(s, v) for s, v in children if finite(v) is not None]
    if scored:
        settings, value = min(scored, key=lambda sv: float(sv[1]))
        if chosen := _settings(settings):
            parts.append("best " + " ".join(chosen))
        parts.append(f"{metric_label(metric)} {number(value)}")
    return SEP.join(parts)


def search_description(summary: Mapping[str, Any], budget: float) -> str:
    """The search parent's line from its summary (`lvtrack.search.Search.log_study`): trials,
    how many completed and were pruned, the share of the budget they hold, the best trial."""
    detail = f"{summary.get('completed', 0)} completed, {summary.get('pruned', 0)} pruned"
    if budget and finite(summary.get("search_flops")) is not None:
        detail += f", {percent(float(summary['search_flops']) / budget)} of budget"
    best = {
        "lr": summary.get("lr"),
        "rank": summary.get("rank"),
        "context_length": summary.get("context"),
    }
    children = [(best, summary["best_value"])] if "best_value" in summary else []
    return parent_description(
        "search", int(summary.get("trials", 0)), "trials", children, detail=detail
    )


def promote_description(
    version: str | int, alias: str, metric: str, value: float, previous: str | None
) -> str:
    """The promote run's line: which version holds the alias now, on what, and who held it."""
    if previous is None:
        before = "no previous holder"
    elif str(previous) == str(version):
        before = "unchanged"
    else:
        before = f"replaces version {previous}"
    return SEP.join(
        [
            "promote",
            f"version {version} @{alias}",
            f"{metric_label(metric)} {number(value)}",
            before,
        ]
    )


def budget_description(spent: float, budget: float, remaining: float) -> str:
    """The budget report's line: ``budget · 3.2e16 of 1e17 FLOPs spent (32.0%) · 6.8e16 left``."""
    share = percent(spent / budget) if budget else "n/a"
    return SEP.join(
        ["budget", f"{sci(spent)} of {sci(budget)} FLOPs spent ({share})", f"{sci(remaining)} left"]
    )


def pipeline_description(method: str, steps: Sequence[str], reused: Sequence[str]) -> str:
    """The pipeline run's line: its method and steps, how many ran and how many were reused."""
    ran = len(steps) - len(reused)
    return SEP.join(
        [
            "pipeline",
            f"method {method}",
            f"{len(steps)} steps: {ran} run, {len(reused)} reused",
            " > ".join(steps),
        ]
    )


# -- the model card --------------------------------------------------------------------------

_BASE_NOTES = {
    "hub": "loads exactly this revision, from the Hugging Face cache or the hub",
    "local": "referenced, not copied: the folder must be at this path, with this digest, where "
    "the model is loaded",
    "gguf": "referenced, not copied: the file must be at this path, with this sha256, where the "
    "model is loaded",
    "tiny": "bundled in the model's artifacts",
    "bundled": "bundled in the model's artifacts",
}
_CARD_ROWS = (  # (row label, metric stem, with `_filled`)
    ("MSE", "mse", False),
    ("MAE", "mae", False),
    ("MSE filled (invalid values as persistence)", "mse", True),
    ("MAE filled", "mae", True),
    ("CRPS", "crps", False),
    ("coverage of the 80% interval", "coverage80", False),
)


def _code(value: Any) -> str:
    return f"`{value}`"


def _sep_text(sep: Any) -> str:
    return _code(sep) if sep else "nothing"


def _metrics_table(metrics: Mapping[str, Any], horizon: int) -> list[str]:
    """A row per metric that either split has (validation and test columns)."""
    rows = []
    for label, stem, filled in _CARD_ROWS:
        cells = []
        for split in ("val", "test"):
            key = f"{split}_{stem}{'_filled' if filled else ''}_h{horizon}"
            cells.append(number(metrics[key], 4) if finite(metrics.get(key)) is not None else "-")
        if cells != ["-", "-"]:
            rows.append(f"| {label} | {cells[0]} | {cells[1]} |")
    rates = [finite(metrics.get(f"{split}_invalid_rate")) for split in ("val", "test")]
    if any(r is not None for r in rates):
        cells = ["-" if r is None else percent(r) for r in rates]
        rows.append(f"| invalid values | {cells[0]} | {cells[1]} |")
    if not rows:
        return ["No validation or test metrics were logged by the source run."]
    return ["| metric | validation | test |", "|---|---|---|", *rows]


def _training_line(params: Mapping[str, Any]) -> str | None:
    keys = (
        ("lr", "lr", lambda v: sci(v, 2)),
        ("steps", "steps", lambda v: f"{int(float(v)):,}"),
        ("batch_size", "batch", str),
        ("schedule", "schedule", str),
        ("seed", "seed", str),
    )
    parts = [f"{name} {fmt(params[k])}" for k, name, fmt in keys if params.get(k) not in (None, "")]
    return ", ".join(parts) if parts else None


def _rest_body(params: Mapping[str, Any]) -> dict[str, Any]:
    """The scoring server's request for the example history with `params`."""
    columns = list(EXAMPLE_HISTORY)
    row = [EXAMPLE_HISTORY[c][0] for c in columns]
    return {"dataframe_split": {"columns": columns, "data": [row]}, "params": dict(params)}


def _python_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def model_card(
    name: str,
    version: str | int,
    settings: Mapping[str, Any],
    codec: Mapping[str, Any],
    *,
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
    git_commit: str = "unknown",
    predict_params: Mapping[str, Any] | None = None,
) -> str:
    """The markdown description of version `version` of registered model `name`.

    Args:
        settings: the forecaster's settings (`settings.json`: base_spec, base_kind,
            base_revision or base_digest, lora_rank, lora_alpha, lora_targets, lm_head_bias,
            context_length, horizon, ...).
        codec: `LLMTimeCodec.to_dict()`.
        run_id, params, metrics, tags: the source run's (phase and preset from its tags).
        data: the source run's data set: name, digest, source.
        git_commit: the code's commit ("unknown" when not known).
        predict_params: the params of the card's predict example (default: the horizon).
    """
    params, metrics, tags, data = params or {}, metrics or {}, tags or {}, data or {}
    horizon = int(settings.get("horizon") or 5)
    spec = settings.get("base_spec", "unknown")
    rank = settings.get("lora_rank", params.get("rank", "?"))
    source = f"Trained in run {_code(run_id)}" if run_id else "No source run recorded"
    context = [f"{k} {tags[k]}" for k in ("phase", "preset") if tags.get(k)]
    lines = [
        f"**{name} version {version}**: {_code(spec)} with a LoRA adapter of rank {rank}, "
        "forecasting Lotka-Volterra predator-prey series written as LLMTime text. "
        f"{source}" + (f" ({', '.join(context)})" if context else "") + ".",
        *_base_lines(settings),
        *_lora_lines(settings, params, rank),
        *_data_lines(data, codec),
        "",
        f"### Metrics (horizon {horizon}, original units)",
        *_metrics_table(metrics, horizon),
        *_compute_lines(metrics, params),
        "",
        "### Provenance",
        f"- source run: {_code(run_id) if run_id else 'none'}",
        f"- git commit: {_code(git_commit)}",
        *_use_lines(name, version, {"horizon": horizon, **(predict_params or {})}),
    ]
    card = "\n".join(lines) + "\n"
    if len(card) > MAX_CARD_CHARS:  # a very long path; keep the registry's limit
        card = card[: MAX_CARD_CHARS - 20] + "\n... (truncated)\n"
    return card


def _base_lines(settings: Mapping[str, Any]) -> list[str]:
    spec, kind = settings.get("base_spec", "unknown"), settings.get("base_kind", "unknown")
    lines = [
        "",
        "### Base model",
        f"- spec: {_code(spec)}",
        f"- kind: {kind} ({_BASE_NOTES.get(str(kind), 'see base_ref.json')})",
    ]
    if settings.get("base_revision"):
        lines.append(f"- revision: {_code(settings['base_revision'])}")
    if settings.get("base_digest"):
        lines.append(f"- digest: {_code(settings['base_digest'])}")
    return lines


def _lora_lines(settings: Mapping[str, Any], params: Mapping[str, Any], rank: Any) -> list[str]:
    alpha = settings.get("lora_alpha", params.get("lora_alpha"))
    targets = settings.get("lora_targets", params.get("lora_targets", ()))
    if isinstance(targets, str):
        targets = [t for t in targets.split(",") if t]
    bias = settings.get("lm_head_bias", params.get("lm_head_bias"))
    lora = f"- rank {rank}, alpha {alpha if alpha is not None else rank}"
    if finite(alpha) and finite(rank):
        lora += f" (scaling {number(float(alpha) / float(rank))})"
    lines = ["", "### LoRA", lora, f"- targets: {', '.join(map(str, targets)) or 'unknown'}"]
    if bias is not None:
        trained = str(bias).lower() in ("true", "1")
        lines.append(f"- lm_head bias: {'trained' if trained else 'not trained'}")
    if settings.get("context_length") not in (None, ""):
        lines.append(f"- context: {settings['context_length']} tokens")
    if training := _training_line(params):
        lines.append(f"- training: {training}")
    return lines


def _data_lines(data: Mapping[str, Any], codec: Mapping[str, Any]) -> list[str]:
    lines = ["", "### Data"]
    if data.get("digest"):
        lines.append(
            f"- data set {_code(data.get('name', '?'))}, digest {_code(data['digest'])}"
            + (f", from {_code(data['source'])}" if data.get("source") else "")
        )
    else:
        lines.append("- data set: not recorded by the source run")
    return [
        *lines,
        "",
        "### Codec (LLMTime)",
        f"- alpha {number(codec.get('alpha'), 6)}: values are divided by it before encoding",
        f"- {codec.get('decimals', '?')} decimals; {_sep_text(codec.get('var_sep'))} between "
        f"prey and predator, {_sep_text(codec.get('time_sep'))} between time steps",
    ]


def _compute_lines(metrics: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    flops = finite(metrics.get("flops_total"))
    if flops is None:
        return ["", "### Compute", "- FLOPs spent: not recorded by the source run"]
    share = finite(metrics.get("budget_share"))
    budget = finite(params.get("budget"))
    spent = f"- FLOPs spent: {sci(flops)}"
    if share is not None:
        spent += f" ({percent(share)} of the " + (
            f"{sci(budget)} FLOPs budget)" if budget else "budget)"
        )
    lines = ["", "### Compute", spent]
    parts = [(k, finite(metrics.get(f"flops_{k}"))) for k in ("train", "eval")]
    if any(v is not None for _, v in parts):
        lines.append("- of which " + ", ".join(f"{k} {sci(v)}" for k, v in parts if v is not None))
    return lines


def _use_lines(name: str, version: str | int, example: Mapping[str, Any]) -> list[str]:
    """How to load this version and forecast with it, in Python and over REST."""
    call = ", ".join(f'"{k}": {_python_value(v)}' for k, v in example.items())
    return [
        "",
        "### Use it",
        "```python",
        "import mlflow",
        "import pandas as pd",
        "",
        f'model = mlflow.pyfunc.load_model("models:/{name}/{version}")  # this version',
        f'# model = mlflow.pyfunc.load_model("models:/{name}@champion")  # the champion',
        f"history = pd.DataFrame({json.dumps(EXAMPLE_HISTORY)})",
        f"forecast = model.predict(history, params={{{call}}})",
        "```",
        "`forecast` has a row per history with columns `prey` and `predator`: the next `horizon` "
        "values (the median of the samples)"
        + (
            "; with `quantiles`, also `prey_quantiles` and `predator_quantiles` (horizon x "
            "levels) and `quantiles` (the levels)."
            if "quantiles" in example
            else "."
        ),
        "",
        "Serve it over REST (port 5000), then POST to `/invocations`:",
        "```",
        f"mlflow models serve -m models:/{name}@champion --env-manager local",
        "curl -s localhost:5000/invocations -H 'Content-Type: application/json' -d "
        f"'{json.dumps(_rest_body(example))}'",
        "```",
    ]
