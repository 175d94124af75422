"""A registered, promoted forecaster for reliability tests (random tiny base, untrained LoRA).

The same steps as `tests/lvtrack/test_serve.py`'s `champion` fixture, as a plain function so that
module-scoped fixtures can call it once against their own tracking store.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from lvdata import LLMTimeCodec
from lvmodel.lora import LoraSettings, apply_lora, save_adapter
from lvmodel.tiny import random_tiny
from lvtrack import registry

CHAMPION_URI = f"models:/{registry.REGISTERED_MODEL}@champion"


def register_tiny_champion(workdir: Path, experiment: str = "reliability-registry") -> str:
    """Log, register and promote a tiny forecaster in MLflow's current tracking store.

    The caller sets the tracking URI. A new experiment keeps its artifacts under `workdir`
    (not `./mlruns` of the working directory). Returns the `models:/...@champion` URI.
    """
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(workdir / "mlruns").as_uri())
    mlflow.set_experiment(experiment)
    model, tok = random_tiny(0)
    registry.save_base(model, tok, workdir / "base")
    settings = LoraSettings(rank=2)
    save_adapter(apply_lora(model, settings), workdir / "adapter", settings)
    with mlflow.start_run(run_name="tiny forecaster"):
        mlflow.log_metric("val_mse_h5", 0.01)
        registry.log_forecaster(
            adapter_dir=workdir / "adapter",
            codec=LLMTimeCodec(alpha=0.6),
            base_spec=str(workdir / "base"),
            registered_model_name=registry.REGISTERED_MODEL,
            validate=False,
        )
    registry.promote(registry.REGISTERED_MODEL, "val_mse_h5")
    return CHAMPION_URI
