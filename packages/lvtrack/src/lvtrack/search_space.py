"""The search space of `search`: parsed from one parameter, checked before anything runs, and
turned into Optuna distributions (the same ones on every worker of a study).

Syntax: `name=values` items separated by `;`:

- `lr=LOW:HIGH` a log-uniform range (LOW < HIGH, both positive);
- `rank=4,8,16` and `context=128,256` choices;
- `targets=q_proj+v_proj,all` choices of LoRA target sets (`+` joins modules; `all` is every
  linear layer of a Qwen2 block).

Names left out take the preset's value (its lr, rank, context length and LoRA targets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
)

from lvtrack.options import MIN_CONTEXT_TOKENS
from lvtrack.presets import Preset

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NAMES = ("lr", "rank", "context", "targets")


class SearchSpaceError(ValueError):
    """A search space that cannot be searched (the message names the item and what to write)."""


@dataclass(frozen=True)
class SearchSpace:
    """What a search varies; a name with one value is fixed."""

    lr: tuple[float, float]
    ranks: tuple[int, ...]
    contexts: tuple[int, ...]
    targets: tuple[tuple[str, ...], ...]

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna's distributions of the varied names (targets as `+`-joined strings)."""
        out: dict[str, BaseDistribution] = {}
        low, high = self.lr
        if low < high:
            out["lr"] = FloatDistribution(low, high, log=True)
        for name, choices in (
            ("rank", self.ranks),
            ("context", self.contexts),
            ("targets", tuple("+".join(t) for t in self.targets)),
        ):
            if len(choices) > 1:
                out[name] = CategoricalDistribution(choices)
        return out

    def fingerprint(self) -> str:
        """The space as JSON (kept in the study: a worker with another space is refused)."""
        return json.dumps(
            {
                "lr": list(self.lr),
                "rank": list(self.ranks),
                "context": list(self.contexts),
                "targets": ["+".join(t) for t in self.targets],
            },
            sort_keys=True,
        )

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """A trial's settings: lr, rank, context_length, targets."""
        picked: dict[str, Any] = {}
        for name, dist in self.distributions().items():
            if isinstance(dist, FloatDistribution):
                picked[name] = trial.suggest_float(name, dist.low, dist.high, log=True)
            else:
                assert isinstance(dist, CategoricalDistribution)
                picked[name] = trial.suggest_categorical(name, dist.choices)
        return {
            "lr": float(picked.get("lr", self.lr[0])),
            "rank": int(picked.get("rank", self.ranks[0])),
            "context_length": int(picked.get("context", self.contexts[0])),
            "targets": tuple(str(picked["targets"]).split("+"))
            if "targets" in picked
            else self.targets[0],
        }

    def grid(self, lrs: tuple[float, ...]) -> dict[str, list[Any]]:
        """The grid over `lrs` (inside the lr range) and every choice: for Optuna's GridSampler."""
        out: dict[str, list[Any]] = {}
        dists = self.distributions()
        if "lr" in dists:
            out["lr"] = list(lrs)
        for name, dist in dists.items():
            if isinstance(dist, CategoricalDistribution):
                out[name] = list(dist.choices)
        return out


def _choices(name: str, text: str, kind: type) -> tuple[Any, ...]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise SearchSpaceError(f"search space item {name!r} is empty: give {name}=A,B,...")
    try:
        values = tuple(kind(t) for t in items)
    except ValueError:
        raise SearchSpaceError(
            f"search space item {name}={text}: expected comma-separated {kind.__name__} values"
        ) from None
    if len(set(values)) != len(values):
        raise SearchSpaceError(f"search space item {name}={text} repeats a value")
    return values


def parse_space(text: str, preset: Preset) -> SearchSpace:
    """The search space `text` (see the module docstring) over `preset`'s defaults."""
    given: dict[str, str] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise SearchSpaceError(f"search space item {item!r} has no '=': write name=values")
        if name not in NAMES:
            raise SearchSpaceError(
                f"unknown search space name {name!r} in {item!r}; known: {', '.join(NAMES)}"
            )
        if name in given:
            raise SearchSpaceError(f"search space name {name!r} is given twice")
        given[name] = value.strip()

    lr = (preset.lr, preset.lr)
    if "lr" in given:
        low_text, colon, high_text = given["lr"].partition(":")
        try:
            low, high = float(low_text), float(high_text if colon else low_text)
        except ValueError:
            raise SearchSpaceError(
                f"search space item lr={given['lr']}: expected LOW:HIGH, e.g. lr=1e-4:1e-2"
            ) from None
        if not 0 < low <= high or (colon and low == high):
            raise SearchSpaceError(
                f"search space item lr={given['lr']}: the range must be positive and LOW < HIGH "
                "(it is log-uniform), e.g. lr=1e-4:1e-2"
            )
        lr = (low, high)
    ranks = _choices("rank", given["rank"], int) if "rank" in given else (preset.rank,)
    if any(r < 1 for r in ranks):
        raise SearchSpaceError(f"search space item rank={given['rank']}: ranks are at least 1")
    contexts = (
        _choices("context", given["context"], int)
        if "context" in given
        else (preset.context_length,)
    )
    if any(c < MIN_CONTEXT_TOKENS for c in contexts):
        raise SearchSpaceError(
            f"search space item context={given['context']}: a context needs at least "
            f"{MIN_CONTEXT_TOKENS} tokens (two time steps)"
        )
    targets = (
        tuple(_targets(t) for t in _choices("targets", given["targets"], str))
        if "targets" in given
        else (preset.lora_targets,)
    )
    return SearchSpace(lr=lr, ranks=ranks, contexts=contexts, targets=targets)


def _targets(text: str) -> tuple[str, ...]:
    if text == "all":
        return ALL_LINEAR
    modules = tuple(m.strip() for m in text.split("+") if m.strip())
    unknown = [m for m in modules if m not in ALL_LINEAR]
    if not modules or unknown:
        raise SearchSpaceError(
            f"search space targets {text!r}: modules are {', '.join(ALL_LINEAR)} joined by '+', "
            "or 'all'"
        )
    return modules
