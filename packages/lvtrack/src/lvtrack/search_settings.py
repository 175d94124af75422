"""How a search runs, before anything runs: its space, parsed from one parameter, checked and
turned into Optuna distributions (the same ones on every worker of a study); its settings; and
the FLOPs of its rungs from its share of the budget. The search itself is `lvtrack.search`; the
plans (`lvtrack.experiment_plan`, `lvtrack.wall_plan`) need only this module.

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

import click
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
)

from lvflops import ModelShape
from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import nll_bound, plan_run
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


class SearchError(click.ClickException):
    """A search that cannot start (named input, what to do); raised before anything is charged."""


@dataclass(frozen=True)
class SearchSettings:
    """How a search runs.

    Attributes:
        space: what it varies.
        trials: trials of the study in all (over every worker).
        rungs: rungs of successive halving (a trial that reaches the top one completes there).
        eta: the reduction factor: a third of a rung's trials go on at 3.
        share: the search's share of the experiment's budget (the rung size follows from it).
        decay_fraction: each rung's decay branch, as a share of its stable steps.
        sampler: "tpe" (Optuna's TPE) or "grid" (the coursework grid: the preset's sweep lrs).
        rung_score: what scores a rung's decay branch: "forecast" (the forecasting metric,
            `val_mse_filled`) or "nll" (LLMTime's NLL/D, one forward pass: same FLOPs on the
            tiny preset, 2.4x less wall time, and it ranked 12 settings at least as well;
            docs/search.md).
        study, storage: the Optuna study's name and RDB storage URL.
        seed: the LoRA init and batch seed of every trial, and the sampler's.
        heartbeat_s: seconds between a worker's heartbeats; a trial whose worker missed three
            is failed and retried by another worker.
    """

    space: SearchSpace
    trials: int
    study: str = ""
    storage: str = ""
    rungs: int = 3
    eta: int = 3
    share: float = 0.25
    decay_fraction: float = 0.2
    sampler: str = "tpe"
    rung_score: str = "forecast"
    seed: int = 0
    heartbeat_s: int = 30


def rung_flops(
    search_flops: float, trials: int, rungs: int, eta: int, decay: float, evaluation: float = 0
) -> int:
    """The first rung's training FLOPs r0 so that successive halving spends about
    `search_flops`; 0 when the evaluations alone would take it all.

    Rung k trains to eta**k x r0 and holds about n / eta**k of the n trials, but at least one
    (asynchronous halving promotes the first trials it sees): c_k = max(1, n / eta**k). The
    stable phases cost r0 x sum c_k (eta**k - eta**(k-1)), the decay branches r0 x `decay` x
    sum c_k eta**k, and each scored rung one `evaluation` (validation loss and forecasting
    metric): sum c_k of them. The ledger and the search's share stop trials beyond it.
    """
    counts = [max(1.0, trials / eta**k) for k in range(rungs)]
    stable = sum(c * (eta**k - (eta ** (k - 1) if k else 0)) for k, c in enumerate(counts))
    branches = decay * sum(c * eta**k for k, c in enumerate(counts))
    left = search_flops - evaluation * sum(counts)
    return max(0, int(left / (stable + branches)))


def evaluation_flops(
    shape: ModelShape, preset: Preset, space: SearchSpace, decimals: int, rung_score: str
) -> int:
    """The most one rung's scoring can cost (validation loss, and the forecasting metric or
    NLL/D) at the space's longest context and largest rank."""
    lora = LoraSettings(rank=max(space.ranks), targets=max(space.targets, key=len))
    config = TrainConfig(
        steps=1,
        context_length=max(space.contexts),
        batch_size=preset.batch_size,
        eval_every=0,
        eval_windows=preset.eval_windows,
        forecast_every=0,
        forecast_series=preset.forecast_series,
        forecast_history=preset.history_steps,
        forecast_horizon=preset.horizon,
    )
    plan = plan_run(shape, config, lora, decimals, {}, preset.horizon)
    if rung_score == "nll":
        nll = nll_bound(shape, preset.forecast_series, config.context_length, preset.horizon,
                        decimals=decimals, lora=lora)  # fmt: skip
        return plan.val_loss + nll
    return plan.val_loss + plan.val_forecast


def first_rung_flops(
    shape: ModelShape, preset: Preset, settings: SearchSettings, decimals: int
) -> int:
    """The first rung's training FLOPs for this search (:func:`rung_flops` on its share of the
    preset's budget); a :class:`SearchError` when its evaluations alone would take it all."""
    evaluation = evaluation_flops(shape, preset, settings.space, decimals, settings.rung_score)
    r0 = rung_flops(
        settings.share * preset.budget, settings.trials, settings.rungs, settings.eta,
        settings.decay_fraction, evaluation,
    )  # fmt: skip
    if r0 == 0:
        raise SearchError(
            f"the search's share ({settings.share:g} of {preset.budget:.3e} FLOPs) does not "
            f"cover the {settings.trials} trials' rung evaluations ({evaluation:.3e} each): "
            "raise --share or --budget, or lower --trials or --rungs"
        )
    return r0


def search_settings(preset: Preset, **given: Any) -> SearchSettings:
    """The search's settings: the preset's space (parsed), trials and share (an entry point's
    `--space`, `--trials` and `--share` are the preset's fields, filled by `get_preset`), and
    `given`, the rest of SearchSettings' fields (rungs, eta, sampler, study, storage...). A bad
    space is a `click.BadParameter` naming `--space`."""
    try:
        parsed = parse_space(preset.search_space, preset)
    except SearchSpaceError as err:
        raise click.BadParameter(str(err), param_hint="--space") from None
    return SearchSettings(
        space=parsed, trials=preset.search_trials, share=preset.search_share, **given
    )
