"""A training run's request: the preset plus what an entry point overrides; the parameters it logs
(`to_params`) and back from them (`from_params`, for resuming), both driven by the fields' types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvtrack.presets import Preset, get_preset

# Preset fields that shape a training run beyond the request's own: logged as parameters, so that a
# resumed run rebuilds exactly the run that died from its parameters.
PRESET_PARAMS = (
    "budget", "history_steps", "horizon", "lora_targets", "origins", "eval_series",
    "eval_windows", "eval_every", "forecast_every", "forecast_series",
)  # fmt: skip


@dataclass
class TrainRequest:
    """One training run: the preset plus what the entry point overrides."""

    preset: Preset
    phase: str
    run_name: str
    lr: float
    rank: int
    context_length: int
    steps: int
    batch_size: int
    seed: int = 0
    schedule: str = "cosine"
    warmup_steps: int = 0
    data_file: str = "data/lotka_volterra_data.h5"
    evaluate_test: bool = False
    register: bool = False
    base_model: str = ""
    checkpoint_every: int = 0
    eval_samples: int = 1  # samples per series of the end-of-run scores (1: greedy)
    temperature: float = 1.0
    top_p: float = 1.0

    @classmethod
    def from_preset(
        cls, preset: Preset, phase: str, run_name: str, steps: int, **overrides: Any
    ) -> TrainRequest:
        """A request with the preset's lr, rank, context, batch and schedule unless overridden."""
        fields: dict[str, Any] = {
            "lr": preset.lr,
            "rank": preset.rank,
            "context_length": preset.context_length,
            "batch_size": preset.batch_size,
            "schedule": preset.schedule,
            "warmup_steps": preset.warmup_steps,
            "checkpoint_every": preset.checkpoint_every,
        }
        return cls(
            preset=preset, phase=phase, run_name=run_name, steps=steps, **{**fields, **overrides}
        )

    def to_params(self) -> dict[str, Any]:
        """What the run logs as parameters: its own fields, the preset's name and the preset
        fields that shape it (:data:`PRESET_PARAMS`), the base it resolves to and its LoRA
        wrap; tuples as comma-separated text."""
        lora = self.lora()
        own = {k: v for k, v in asdict(self).items() if k != "preset"}
        shaping = {k: getattr(self.preset, k) for k in PRESET_PARAMS}
        params = {
            **own,
            **shaping,
            "preset": self.preset.name,
            "base_model": self.base,
            "lora_alpha": lora.lora_alpha,
            "lm_head_bias": lora.lm_head_bias,
        }
        return {k: ",".join(map(str, v)) if isinstance(v, tuple) else v for k, v in params.items()}

    @classmethod
    def from_params(cls, params: dict[str, str], budget: float = -1) -> TrainRequest:
        """The request a run was started with, rebuilt from its logged parameters (for resuming),
        each parsed by its field's type; a field it did not log takes its default (a run logged
        before `origins` existed is scored at the headline origin only).

        `budget` (-1: the logged one) may differ: it is the experiment's limit, not the run's.
        """
        preset = get_preset(params["preset"])
        shaping = {"origins": str(preset.history_steps), **params}
        preset = replace(preset, **_parsed(Preset, shaping, PRESET_PARAMS))
        if budget not in (-1, -1.0):
            preset = replace(preset, budget=float(budget))
        own = [f.name for f in fields(cls) if f.name != "preset"]
        return cls(preset=preset, **_parsed(cls, params, own))

    @property
    def base(self) -> str:
        return self.base_model or self.preset.base_model

    def origins(self) -> tuple[int, ...]:
        """The histories the run's end-of-run scores start from: the preset's `history_steps`
        (the headline), then, for a run that scores the test split, its other `origins`."""
        p = self.preset
        others = tuple(k for k in p.origins if k != p.history_steps) if self.evaluate_test else ()
        return (p.history_steps, *others)

    def lora(self) -> LoraSettings:
        """The LoRA wrap of this run: its rank on the preset's target modules."""
        return LoraSettings(rank=self.rank, targets=self.preset.lora_targets)

    def train_config(self) -> TrainConfig:
        p = self.preset
        return TrainConfig(
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            context_length=self.context_length,
            schedule=self.schedule,  # type: ignore[arg-type]
            warmup_steps=min(self.warmup_steps, self.steps - 1),
            seed=self.seed,
            eval_every=p.eval_every,
            eval_windows=p.eval_windows,
            forecast_every=p.forecast_every,
            forecast_series=p.forecast_series,
            forecast_history=p.history_steps,
            forecast_horizon=p.horizon,
            checkpoint_every=max(self.checkpoint_every, 0),
            checkpoint_seconds=p.checkpoint_seconds,
            log_every=p.log_every,
            log_seconds=p.log_seconds,
            compile=p.compile,
        )


def settings_conflicts(
    req: TrainRequest, given: dict[str, Any], defaults: dict[str, Any]
) -> list[str]:
    """Settings given on the command line (anything but the option's default) that differ from
    the resumed run's request `req`. Defaults count as "not given": `mlflow run` passes every
    parameter."""
    # The run's value of each setting: the request's field of the same name, but the preset's
    # name and the base model it resolves to.
    logged = {name: getattr(req, name) for name in given if name != "eval_series"}
    logged.update(preset=req.preset.name, base_model=req.base, eval_series=req.preset.eval_series)
    out = []
    for name, value in given.items():
        if value == defaults.get(name) or value == logged[name]:
            continue
        if (
            name in ("base_model", "data_file")
            and Path(value).resolve() == Path(str(logged[name])).resolve()
        ):
            continue
        out.append(f"--{name.replace('_', '-')} {value} (the run's: {logged[name]})")
    return out


def _parsed(cls: type, params: dict[str, str], names: Sequence[str]) -> dict[str, Any]:
    """The logged `params` among `names`, each parsed as its field of `cls` is typed."""
    hints = get_type_hints(cls)
    return {n: _parse(params[n], hints[n]) for n in names if n in params}


def _parse(text: str, kind: Any) -> Any:
    if kind is bool:
        return text == "True"
    if get_origin(kind) is tuple:  # tuple[X, ...], logged comma-separated
        return tuple(get_args(kind)[0](t) for t in text.split(",") if t)
    return kind(text)
