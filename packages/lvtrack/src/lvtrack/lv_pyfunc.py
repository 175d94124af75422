"""The registered forecaster as an MLflow pyfunc "model from code" (`mlflow.models.set_model`).

`lvtrack.registry.log_forecaster` logs this file with four artifacts:

- `adapter`: the LoRA adapter folder written by `lvmodel.lora.save_adapter`;
- `codec`: the LLMTime codec as JSON (`LLMTimeCodec.to_dict`);
- `base`: either a folder with the base model and tokenizer (safetensors; the `tiny` base, a few
  MB, so that a fresh clone's model loads anywhere, and an in-memory base logged with
  `base_model=`), or `base_ref.json`, which pins a base without copying it
  (`lvmodel.base.pin_base`; plus a human-readable `note`):
  - `{"kind": "hub", "spec": "Qwen/Qwen2.5-0.5B-Instruct", "revision": "<commit hash>"}`: that
    snapshot must be (completely) in the loading machine's Hugging Face cache, or downloadable;
  - `{"kind": "local", "spec": "/abs/model-folder", "digest": "sha256:...", "files": {name:
    {"size", "sha256"}}}`: the folder must exist at that path with the same config, tokenizer
    and weight files;
  - `{"kind": "gguf", "spec": "/abs/path/model.gguf", "size": ..., "sha256": "..."}`: the file
    must exist at that path, unchanged.
  Loading refuses a missing or changed folder or file, or an unavailable revision, with a
  `BaseModelError` naming it, what changed and what to do (`lvmodel.base.load_pinned`);
- `settings`: `settings.json` (context_length, decimals, lora_rank, lora_targets, lm_head_bias,
  horizon, num_samples, batch_size, ...).

`predict` takes a DataFrame with columns `prey` and `predator`, one history per row as lists of
floats in original units, and params `horizon`, `num_samples`, `temperature`, `top_p` and
`quantiles`; it returns a DataFrame with the same two columns holding the forecast lists (length
`horizon`, NaN where the model's output was invalid; with `num_samples > 1` the median of the
samples). With `quantiles` (levels in (0, 1), e.g. `[0.1, 0.5, 0.9]`; needs `num_samples >= 2`)
it adds `prey_quantiles` and `predator_quantiles` (per row, `horizon` lists of one value per
level; invalid samples replaced by the history's last value first) and `quantiles` (the levels).
Bad input raises `MlflowException(..., INVALID_PARAMETER_VALUE)`, which the scoring
server answers with HTTP 400; every message names the row and the field.

This file is executed by MLflow in a fresh process: it imports only lvdata/lvmodel (shipped with
the model as `code_paths`), never `projects`. Heavy imports happen in `load_context`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel

COLUMNS = ("prey", "predator")
MIN_HISTORY_STEPS = 2
MAX_HORIZON = 1000
MAX_NUM_SAMPLES = 64
MAX_QUANTILES = 99


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def check_count(value: Any, field: str, upper: int) -> int:
    """A positive integer parameter (`horizon`, `num_samples`) in 1..upper, else a clear error."""
    if isinstance(value, bool) or value is None:
        raise _bad(f"parameter {field!r} must be an integer >= 1, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _bad(f"parameter {field!r} must be an integer >= 1, got {value!r}") from None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(f"parameter {field!r} must be an integer >= 1, got {value!r}") from None
    if not math.isfinite(number) or not number.is_integer():
        raise _bad(f"parameter {field!r} must be an integer >= 1, got {value!r}")
    if not 1 <= number <= upper:
        raise _bad(f"parameter {field!r} must be between 1 and {upper}, got {int(number)}")
    return int(number)


def check_sampling(temperature: Any, top_p: Any) -> tuple[float, float]:
    """The sampling parameters: `temperature` > 0 and `top_p` in (0, 1], else a clear error."""
    t, p = _number(temperature, "temperature"), _number(top_p, "top_p")
    if not t > 0:
        raise _bad(f"parameter 'temperature' must be > 0, got {temperature!r}")
    if not 0 < p <= 1:
        raise _bad(f"parameter 'top_p' must be in (0, 1], got {top_p!r}")
    return t, p


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or value is None:
        raise _bad(f"parameter {field!r} must be a number, got {value!r}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _bad(f"parameter {field!r} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise _bad(f"parameter {field!r} must be a finite number, got {value!r}")
    return number


def check_quantiles(value: Any) -> list[float]:
    """The `quantiles` parameter: a list of distinct levels strictly between 0 and 1 (empty or
    None: none), sorted; else a clear error naming the bad entry."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or np.isscalar(value):
        raise _bad(f"parameter 'quantiles' must be a list of numbers in (0, 1), got {value!r}")
    try:
        items = list(value)
    except TypeError:
        raise _bad(
            f"parameter 'quantiles' must be a list of numbers in (0, 1), got {value!r}"
        ) from None
    if len(items) > MAX_QUANTILES:
        raise _bad(f"parameter 'quantiles' takes at most {MAX_QUANTILES} levels, got {len(items)}")
    levels = []
    for i, item in enumerate(items):
        try:
            q = _number(item, "quantiles")
        except MlflowException:
            raise _bad(
                f"parameter 'quantiles': entry {i} ({item!r}) is not a number; give levels "
                "in (0, 1), e.g. [0.1, 0.5, 0.9]"
            ) from None
        if not 0 < q < 1:
            raise _bad(
                f"parameter 'quantiles': entry {i} ({item!r}) is outside (0, 1); give levels "
                "strictly between 0 and 1, e.g. [0.1, 0.5, 0.9]"
            )
        levels.append(q)
    if len(set(levels)) != len(levels):
        raise _bad(f"parameter 'quantiles' repeats a level: {items!r}")
    return sorted(levels)


def _series(cell: Any, row: Any, field: str) -> np.ndarray:
    if cell is None or isinstance(cell, (str, bytes, dict)) or np.isscalar(cell):
        raise _bad(f"row {row}, field {field!r}: expected a list of numbers, got {cell!r}")
    try:
        values = np.asarray(cell, dtype=np.float64)
    except (TypeError, ValueError):
        raise _bad(f"row {row}, field {field!r}: expected a list of numbers") from None
    if values.ndim != 1:
        raise _bad(f"row {row}, field {field!r}: expected a flat list, got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise _bad(
            f"row {row}, field {field!r}: value at step {bad[0]} is {values[bad[0]]} "
            f"({bad.size} non-finite values); NaN and infinity are not allowed"
        )
    neg = np.flatnonzero(values < 0)
    if neg.size:
        raise _bad(
            f"row {row}, field {field!r}: value at step {neg[0]} is {values[neg[0]]:g} "
            f"({neg.size} negative values); populations must be >= 0"
        )
    return values


def parse_histories(model_input: Any) -> list[np.ndarray]:
    """Validate the input table and return one (T, 2) float64 array per row (prey, predator)."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise _bad(
            f"input must be a table with columns {list(COLUMNS)}, got {type(model_input).__name__}"
        )
    missing = [c for c in COLUMNS if c not in model_input.columns]
    if missing:
        raise _bad(
            f"input is missing column(s) {missing}: need {list(COLUMNS)}, one history per row "
            f"(got columns {[str(c) for c in model_input.columns]})"
        )
    if len(model_input) == 0:
        raise _bad(f"input is empty: give at least one row with {list(COLUMNS)} histories")
    histories = []
    for pos, (prey_cell, pred_cell) in enumerate(
        zip(model_input["prey"], model_input["predator"], strict=True)
    ):
        prey = _series(prey_cell, pos, "prey")
        predator = _series(pred_cell, pos, "predator")
        if len(prey) != len(predator):
            raise _bad(
                f"row {pos}, fields 'prey' and 'predator': lengths differ "
                f"({len(prey)} vs {len(predator)}); give both series over the same steps"
            )
        if len(prey) < MIN_HISTORY_STEPS:
            raise _bad(
                f"row {pos}, fields 'prey' and 'predator': history has {len(prey)} step(s); "
                f"at least {MIN_HISTORY_STEPS} are needed"
            )
        histories.append(np.stack([prey, predator], axis=1))
    return histories


class LVForecaster(PythonModel):
    """A LoRA-adapted causal LM forecasting predator-prey series through LLMTime text."""

    def load_context(self, context: Any) -> None:
        from lvdata import LLMTimeCodec
        from lvmodel.base import load_base, load_pinned
        from lvmodel.lora import adapter_settings, load_adapter

        artifacts = context.artifacts
        self.settings: dict[str, Any] = json.loads(Path(artifacts["settings"]).read_text())
        self.codec = LLMTimeCodec.from_dict(json.loads(Path(artifacts["codec"]).read_text()))
        base = Path(artifacts["base"])
        device = self.settings.get("device")
        if base.is_dir():
            model, self.tokenizer = load_base(str(base), device=device)
        else:
            ref = json.loads(base.read_text())
            origin = f"this model's {base.name} ({base})"
            model, self.tokenizer = load_pinned(ref, device=device, origin=origin)
        self.model = load_adapter(model, artifacts["adapter"])
        self.lora = adapter_settings(artifacts["adapter"])  # what the FLOPs count includes
        self.model.eval()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from lvmodel.forecast import forecast

        params = params or {}
        horizon = check_count(
            params.get("horizon", self.settings.get("horizon", 5)), "horizon", MAX_HORIZON
        )
        num_samples = check_count(
            params.get("num_samples", self.settings.get("num_samples", 1)),
            "num_samples",
            MAX_NUM_SAMPLES,
        )
        temperature, top_p = check_sampling(
            params.get("temperature", self.settings.get("temperature", 1.0)),
            params.get("top_p", self.settings.get("top_p", 1.0)),
        )
        levels = check_quantiles(params.get("quantiles"))
        if levels and num_samples < 2:
            raise _bad(
                f"parameter 'quantiles' needs samples to take quantiles of: num_samples is "
                f"{num_samples}; ask for num_samples >= 2 (e.g. 20) with quantiles"
            )
        histories = parse_histories(model_input)
        result = forecast(
            self.model,
            self.tokenizer,
            self.codec,
            histories,
            horizon,
            context_length=self.settings.get("context_length"),
            num_samples=num_samples,
            temperature=temperature,
            top_p=top_p,
            batch_size=int(self.settings.get("batch_size", 16)),
            lora=self.lora,
        )
        values = np.asarray(result.values, dtype=np.float64)
        out = {name: [row[:, j].tolist() for row in values] for j, name in enumerate(COLUMNS)}
        if levels:
            from lvmodel.metrics import last_values

            q = result.quantiles(levels, last_values(histories))  # (B, H, V, L)
            for j, name in enumerate(COLUMNS):
                out[f"{name}_quantiles"] = [row[:, j, :].tolist() for row in q]
            out["quantiles"] = [list(levels) for _ in histories]
        return pd.DataFrame(out)


mlflow.models.set_model(LVForecaster())
