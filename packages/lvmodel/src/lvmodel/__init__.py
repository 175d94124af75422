"""lvmodel: LoRA fine-tuning of Qwen2 models for LLMTime forecasting, with analytic FLOPs.

Load a base (a hub id, a local folder, a GGUF file or the CPU-sized ``"tiny"``), wrap it with
LoRA (PEFT), train it, forecast with it, score it against the reference forecasters, and plan
what each step costs, before it runs, under the coursework's FLOPs rules. No MLflow here: results
leave through return values and callbacks.

```python
model, tokenizer = load_base("tiny")
model = apply_lora(model, LoraSettings(rank=4))
fit(model, tokenizer, codec, train_series, val_series, TrainConfig(steps=100), LoraSettings(rank=4))
result = evaluate_llm(model, tokenizer, codec, test_series, 50, 5, 256, LoraSettings(rank=4))
```

The names below load their module on first use, so ``import lvmodel`` itself is cheap (no
torch): the MLflow layer imports the package just to find its source folder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_API = {
    # base models
    "load_base": "lvmodel.base",
    "base_shape": "lvmodel.base",
    "BaseModelError": "lvmodel.base",
    "DEFAULT_BASE": "lvmodel.base",
    # LoRA
    "LoraSettings": "lvmodel.lora",
    "apply_lora": "lvmodel.lora",
    "save_adapter": "lvmodel.lora",
    "load_adapter": "lvmodel.lora",
    # training
    "TrainConfig": "lvmodel.config",
    "FitResult": "lvmodel.train",
    "fit": "lvmodel.train",
    # forecasting and evaluation
    "Forecast": "lvmodel.forecast",
    "forecast": "lvmodel.forecast",
    "Evaluation": "lvmodel.evaluate",
    "evaluate_llm": "lvmodel.evaluate",
    # metrics
    "forecast_metrics": "lvmodel.metrics",
    "score": "lvmodel.metrics",
    "protocol_split": "lvmodel.metrics",
    "last_values": "lvmodel.metrics",
    "baseline_forecasts": "lvmodel.metrics",
    # probabilistic scores
    "QUANTILES": "lvmodel.probabilistic",
    "crps": "lvmodel.probabilistic",
    "interval_coverage": "lvmodel.probabilistic",
    # reference forecasters (their scoring helper stays `lvmodel.reference.evaluate`: a top-level
    # `evaluate` would be replaced by the submodule `lvmodel.evaluate` once that is imported)
    "REFERENCE_FORECASTERS": "lvmodel.reference",
    "make_reference": "lvmodel.reference",
    "select_on_validation": "lvmodel.reference",
    # FLOPs plans
    "RunPlan": "lvmodel.run_plan",
    "plan_run": "lvmodel.run_plan",
    "affordable_steps": "lvmodel.run_plan",
    "forecast_bound": "lvmodel.run_plan",
    "model_shape": "lvmodel.run_plan",
}

__all__ = [
    "DEFAULT_BASE",
    "QUANTILES",
    "REFERENCE_FORECASTERS",
    "BaseModelError",
    "Evaluation",
    "FitResult",
    "Forecast",
    "LoraSettings",
    "RunPlan",
    "TrainConfig",
    "affordable_steps",
    "apply_lora",
    "base_shape",
    "baseline_forecasts",
    "crps",
    "evaluate_llm",
    "fit",
    "forecast",
    "forecast_bound",
    "forecast_metrics",
    "interval_coverage",
    "last_values",
    "load_adapter",
    "load_base",
    "make_reference",
    "model_shape",
    "plan_run",
    "protocol_split",
    "save_adapter",
    "score",
    "select_on_validation",
]

if TYPE_CHECKING:
    from lvmodel.base import DEFAULT_BASE, BaseModelError, base_shape, load_base
    from lvmodel.config import TrainConfig
    from lvmodel.evaluate import Evaluation, evaluate_llm
    from lvmodel.forecast import Forecast, forecast
    from lvmodel.lora import LoraSettings, apply_lora, load_adapter, save_adapter
    from lvmodel.metrics import (
        baseline_forecasts,
        forecast_metrics,
        last_values,
        protocol_split,
        score,
    )
    from lvmodel.probabilistic import QUANTILES, crps, interval_coverage
    from lvmodel.reference import REFERENCE_FORECASTERS, make_reference, select_on_validation
    from lvmodel.run_plan import RunPlan, affordable_steps, forecast_bound, model_shape, plan_run
    from lvmodel.train import FitResult, fit


def __getattr__(name: str) -> Any:
    """Import the defining module of a public name on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'lvmodel' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
