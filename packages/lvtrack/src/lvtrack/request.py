"""A training run's request: its preset, filled with what the entry point overrides, and what only a
run has (phase, name, steps, seed, data file); the parameters it logs (`to_params`) and back from
them (`from_params`, for resuming), both driven by the fields' types.

The settings chain has three forms: an entry-point parameter (MLproject and click, typed, None when
left out), the :class:`~lvtrack.presets.Preset` that `get_preset` fills with the given ones (the one
place a preset's value is taken), and the run's logged parameters. lvmodel's `TrainConfig` and
`LoraSettings` are built from the request (`train_config`, `lora`).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvtrack.presets import DEFAULT_DATA, Preset, get_preset

# The preset's fields that shape one training run: logged as parameters, so that a resumed run
# rebuilds exactly the run that died from its parameters.
RUN_FIELDS = (
    "base_model", "budget", "lr", "rank", "batch_size", "context_length", "schedule",
    "warmup_steps", "checkpoint_every", "checkpoint_seconds", "log_every", "log_seconds",
    "compile", "history_steps", "horizon", "lora_targets", "origins", "eval_series",
    "eval_windows", "eval_every", "forecast_every", "forecast_series", "eval_samples",
    "temperature", "top_p",
)  # fmt: skip

# What a run logged before a field existed had (`from_params`); other fields take the preset's.
_BEFORE = {"eval_samples": "1", "temperature": "1.0", "top_p": "1.0"}


@dataclass(frozen=True)
class TrainRequest:
    """One training run: `preset` holds every setting (the entry point's overrides applied by
    `get_preset`, the run's lr, rank and context by the phase that chose them); the rest is the
    run's own."""

    preset: Preset
    phase: str
    run_name: str
    steps: int | None  # None: as many as what is left of the budget affords
    seed: int = 0
    data_file: str = DEFAULT_DATA
    evaluate_test: bool = False
    register: bool = False

    @classmethod
    def from_preset(
        cls, preset: Preset, phase: str, run_name: str, steps: int | None, **settings: Any
    ) -> TrainRequest:
        """A run of `preset`; `settings` are the request's own fields (seed, data_file, ...) and
        the preset fields the phase chose for this run (its lr, rank or context length)."""
        chosen = {k: v for k, v in settings.items() if k not in _OWN}
        own = {k: v for k, v in settings.items() if k in _OWN}
        return cls(replace(preset, **chosen), phase, run_name, steps, **own)

    @property
    def eval_samples(self) -> int:
        """Samples per series of the end-of-run scores: the preset's for a run that scores the
        test split (the final model's probabilistic scores), else 1 (greedy)."""
        return self.preset.eval_samples if self.evaluate_test else 1

    def to_params(self) -> dict[str, Any]:
        """What the run logs as parameters: its own fields, the preset's name and the preset
        fields that shape it (:data:`RUN_FIELDS`), its LoRA wrap; tuples as comma-separated
        text."""
        lora = self.lora()
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "preset"}
        params = {
            **own,
            **{k: getattr(self.preset, k) for k in RUN_FIELDS},
            "eval_samples": self.eval_samples,
            "preset": self.preset.name,
            "lora_alpha": lora.lora_alpha,
            "lm_head_bias": lora.lm_head_bias,
        }
        return {k: ",".join(map(str, v)) if isinstance(v, tuple) else v for k, v in params.items()}

    @classmethod
    def from_params(cls, params: dict[str, str], budget: float | None = None) -> TrainRequest:
        """The request a run was started with, rebuilt from its logged parameters (for resuming),
        each parsed by its field's type; a field it did not log takes what runs had before it
        existed (a run logged before `origins` is scored at the headline origin only).

        `budget` (None: the logged one) may differ: it is the experiment's limit, not the run's.
        """
        preset = get_preset(params["preset"])
        logged = {"origins": str(preset.history_steps), **_BEFORE, **params}
        # The logged values as they are (`get_preset`'s cut by eval_series is already in them);
        # `eval_samples` is logged as used, which is the preset's only for a run scoring test.
        read: tuple[str, ...] = RUN_FIELDS
        if logged.get("evaluate_test") != "True":
            read = tuple(f for f in RUN_FIELDS if f != "eval_samples")
        preset = replace(preset, **_parsed(Preset, logged, read))
        if budget is not None:
            preset = replace(preset, budget=float(budget))
        own = [f.name for f in fields(cls) if f.name != "preset"]
        return cls(preset=preset, **_parsed(cls, params, own))

    def setting(self, name: str) -> Any:
        """The run's value of an entry-point parameter `name` (its own field, else its preset's;
        `preset` is the preset's name)."""
        if name == "preset":
            return self.preset.name
        return getattr(self, name) if name in _OWN else getattr(self.preset, name)

    def origins(self) -> tuple[int, ...]:
        """The histories the run's end-of-run scores start from: the preset's `history_steps`
        (the headline), then, for a run that scores the test split, its other `origins`."""
        p = self.preset
        others = tuple(k for k in p.origins if k != p.history_steps) if self.evaluate_test else ()
        return (p.history_steps, *others)

    def lora(self) -> LoraSettings:
        """The LoRA wrap of this run: its rank on the preset's target modules."""
        return LoraSettings(rank=self.preset.rank, targets=self.preset.lora_targets)

    def train_config(self) -> TrainConfig:
        p = self.preset
        if self.steps is None:
            raise ValueError("the run's steps are not set yet (lvtrack.experiment_plan sets them)")
        return TrainConfig(
            steps=self.steps,
            lr=p.lr,
            batch_size=p.batch_size,
            context_length=p.context_length,
            schedule=p.schedule,  # type: ignore[arg-type]
            warmup_steps=min(p.warmup_steps, self.steps - 1),
            seed=self.seed,
            eval_every=p.eval_every,
            eval_windows=p.eval_windows,
            forecast_every=p.forecast_every or 0,
            forecast_series=0 if p.forecast_every is None else p.forecast_series,
            forecast_history=p.history_steps,
            forecast_horizon=p.horizon,
            checkpoint_every=p.checkpoint_every,
            checkpoint_seconds=p.checkpoint_seconds,
            log_every=p.log_every,
            log_seconds=p.log_seconds,
            compile=p.compile,
        )


_OWN = frozenset(f.name for f in fields(TrainRequest))


def settings_conflicts(
    req: TrainRequest, given: dict[str, Any], defaults: dict[str, Any]
) -> list[str]:
    """Settings given on the command line that differ from the resumed run's request `req`.
    A value left out (None, or the option's default) counts as not given: `mlflow run` passes
    every parameter ("" for one left out, which click reads as None)."""
    out = []
    for name, value in given.items():
        if value is None or value == defaults.get(name) or value == req.setting(name):
            continue
        logged = req.setting(name)
        if (
            name in ("base_model", "data_file")
            and Path(value).resolve() == Path(str(logged)).resolve()
        ):
            continue
        out.append(f"--{name.replace('_', '-')} {value} (the run's: {logged})")
    return out


def _parsed(cls: type, params: dict[str, str], names: Sequence[str]) -> dict[str, Any]:
    """The logged `params` among `names`, each parsed as its field of `cls` is typed."""
    hints = get_type_hints(cls)
    return {n: _parse(params[n], hints[n]) for n in names if n in params}


def _parse(text: str, kind: Any) -> Any:
    if get_origin(kind) in (Union, types.UnionType):  # `X | None`, logged as "None" when None
        if text == "None":
            return None
        kind = next(a for a in get_args(kind) if a is not type(None))
    if kind is bool:
        return text == "True"
    if get_origin(kind) is tuple:  # tuple[X, ...], logged comma-separated
        return tuple(get_args(kind)[0](t) for t in text.split(",") if t)
    return kind(text)
