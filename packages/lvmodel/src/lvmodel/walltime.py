"""Wall-time plans: how long a run takes on a given machine, from rates measured on it.

The FLOPs plan (:mod:`lvmodel.run_plan`) says what a run may spend; this module says how long it will
take. :class:`Rates` holds what was measured on one machine for one base model and batch size:

- training: positions per second of optimizer steps at each context (batch x context positions a
  step, full windows, as the FLOPs plan counts them), and of validation-loss passes;
- forecasting: per context and sample count, the seconds of one call (prefill and decode
  latency that does not shrink with fewer series) and the series per second beyond it, so that
  a forecast of ``n`` series takes ``call_s + n / series_per_s``;
- fixed seconds: loading the base, tokenizing the training split's windows at one context
  (:func:`lvmodel.train.fit_data`; a search builds them once per context, a run once), one `fit`
  call's set-up and end beyond that (optimizer, the end checkpoint), and, filled by the MLflow
  layer (``lvtrack.rates_probe``), a process start, a
  budgeted run's open and close, one logged evaluation (metrics, plots), registering a model,
  and the pipeline's steps that are not budgeted (data, reference forecasters...).

Contexts and sample counts that were not measured are interpolated linearly (seconds per position
in the context, seconds per series in the context and the sample count); beyond the measured
ones, the nearest segment's line where it grows, else the nearest value. :func:`run_seconds`
mirrors :func:`lvmodel.run_plan.plan_run` part by part; :func:`measure_rates` times `fit`,
`validation_loss` and `evaluate_llm` themselves (no MLflow). Rates round-trip through JSON
(:meth:`Rates.to_json`, :meth:`Rates.from_json`, also read from a `gpu_check` summary's `rates`).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "Rates",
    "RunSeconds",
    "forecast_seconds",
    "measure_forecast",
    "measure_process_start",
    "measure_rates",
    "measure_reference",
    "run_seconds",
]


def _key(context: int, samples: int) -> str:
    return f"{context}x{samples}"


def _unkey(key: str) -> tuple[int, int]:
    context, samples = key.split("x")
    return int(context), int(samples)


def interpolate(points: Mapping[int, float], x: float) -> float:
    """Piecewise-linear through `points` (x -> y); below the smallest x its y; above the largest
    x the last segment's line where it grows, else the largest x's y."""
    if not points:
        raise ValueError("nothing measured to interpolate from")
    xs = sorted(points)
    if x <= xs[0] or len(xs) == 1:
        return points[xs[0]]
    for lo, hi in itertools.pairwise(xs):
        if x <= hi:
            return points[lo] + (points[hi] - points[lo]) * (x - lo) / (hi - lo)
    lo, hi = xs[-2], xs[-1]
    slope = (points[hi] - points[lo]) / (hi - lo)
    return points[hi] + max(slope, 0.0) * (x - hi)


@dataclass
class Rates:
    """What one machine does per second with one base model (see the module docstring).

    Attributes:
        device: where they were measured (device name, dtype, threads).
        base: the base model spec (or a description of its shape).
        batch_size: the training batch the training rates were measured at.
        train_positions_per_s: context -> positions (batch x context) per second of training
            steps.
        val_positions_per_s: context -> positions per second of validation-loss passes.
        forecast_series_per_s: "CONTEXTxSAMPLES" -> series per second beyond a call's fixed part.
        forecast_call_s: "CONTEXTxSAMPLES" -> a forecast call's fixed seconds.
        load_base_s: loading the base model and tokenizer (in a fresh process).
        windows_s: tokenizing the training split (and the validation-loss subset) into one
            context's windows (`lvmodel.train.fit_data`).
        fit_fixed_s: one `fit` call beyond its steps and its windows: optimizer, first steps'
            warm-up, the end checkpoint. (Rates measured before `windows_s` existed count the
            windows here, with `windows_s` 0.)
        process_start_s: an entry point's process start (python and its imports).
        process_start_by_step: the same for each pipeline step's own entry point, where
            measured (their imports differ: `data` needs no torch); else `process_start_s`.
        run_fixed_s: a budgeted MLflow run's open (ledger reservation, parameters, data set) and
            close.
        eval_log_s: logging one evaluation (metrics and plots).
        register_s: registering a model (log it, load it back, forecast with it).
        steps_s: the pipeline's steps that are not budgeted phases, and fixed parts of those
            that are: step name -> seconds beyond the process start.
        measured: the raw figures behind the rates (for the record).
    """

    device: str
    base: str
    batch_size: int
    train_positions_per_s: dict[int, float]
    val_positions_per_s: dict[int, float]
    forecast_series_per_s: dict[str, float]
    forecast_call_s: dict[str, float]
    load_base_s: float = 0.0
    windows_s: float = 0.0
    fit_fixed_s: float = 0.0
    process_start_s: float = 0.0
    process_start_by_step: dict[str, float] = field(default_factory=dict)
    run_fixed_s: float = 0.0
    eval_log_s: float = 0.0
    register_s: float = 0.0
    steps_s: dict[str, float] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)

    # -- lookups ----------------------------------------------------------------------------

    def seconds_per_train_position(self, context: int) -> float:
        return interpolate({c: 1 / r for c, r in self.train_positions_per_s.items()}, context)

    def seconds_per_val_position(self, context: int) -> float:
        return interpolate({c: 1 / r for c, r in self.val_positions_per_s.items()}, context)

    def _by_samples(self, table: Mapping[str, float], context: int, samples: int) -> float:
        by_samples: dict[int, dict[int, float]] = {}
        for key, value in table.items():
            c, s = _unkey(key)
            by_samples.setdefault(s, {})[c] = value
        at = {s: interpolate(points, context) for s, points in by_samples.items()}
        return interpolate(at, samples)

    def seconds_per_series(self, context: int, samples: int = 1) -> float:
        inverse = {k: 1 / v for k, v in self.forecast_series_per_s.items()}
        return self._by_samples(inverse, context, samples)

    def call_seconds(self, context: int, samples: int = 1) -> float:
        return self._by_samples(self.forecast_call_s, context, samples)

    def process_start(self, step: str) -> float:
        """The process start of the entry point of pipeline step `step`."""
        return self.process_start_by_step.get(step, self.process_start_s)

    # -- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("train_positions_per_s", "val_positions_per_s"):
            out[name] = {str(k): v for k, v in out[name].items()}
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1, default=str) + "\n"
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rates:
        """Rates from :meth:`to_dict`, or from a `gpu_check` summary holding them as `rates`."""
        if "rates" in data and "train_positions_per_s" not in data:
            data = data["rates"]
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        for name in ("train_positions_per_s", "val_positions_per_s"):
            kw[name] = {int(k): float(v) for k, v in kw.get(name, {}).items()}
        for name in ("forecast_series_per_s", "forecast_call_s", "process_start_by_step"):
            kw[name] = {str(k): float(v) for k, v in kw.get(name, {}).items()}
        rates = cls(**kw)
        if not rates.train_positions_per_s or not rates.forecast_series_per_s:
            raise ValueError("rates without training or forecasting figures")
        return rates

    @classmethod
    def from_json(cls, path: str | Path) -> Rates:
        return cls.from_dict(json.loads(Path(path).read_text()))


# -- arithmetic ---------------------------------------------------------------------------------


def forecast_seconds(
    rates: Rates, context: int, samples: int, n_series: int, calls: int = 1
) -> float:
    """`calls` forecasts of `n_series` series each at `context` with `samples` samples."""
    if calls <= 0 or n_series <= 0:
        return 0.0
    return calls * (
        rates.call_seconds(context, samples) + n_series * rates.seconds_per_series(context, samples)
    )


def train_seconds(rates: Rates, context: int, steps: int, batch: int) -> float:
    """`steps` optimizer steps of `batch` windows of `context` positions."""
    return steps * batch * context * rates.seconds_per_train_position(context)


def val_loss_seconds(rates: Rates, context: int, windows: int, passes: int = 1) -> float:
    """`passes` validation-loss passes over `windows` windows of `context` positions."""
    return passes * windows * context * rates.seconds_per_val_position(context)


@dataclass(frozen=True)
class RunSeconds:
    """A training run's predicted wall time by part (seconds), the parts of its
    :class:`lvmodel.run_plan.RunPlan` plus its fixed costs."""

    train: float
    val_loss: float
    val_forecast: float
    final_eval: dict[str, float]
    fixed: float

    @property
    def total(self) -> float:
        return (
            self.train
            + self.val_loss
            + self.val_forecast
            + sum(self.final_eval.values())
            + (self.fixed)
        )

    def parts(self) -> dict[str, float]:
        """Each part by name (the final evaluations together)."""
        return {
            "training": self.train,
            "validation loss": self.val_loss,
            "in-run forecasts": self.val_forecast,
            "final forecasts": sum(self.final_eval.values()),
            "fixed costs": self.fixed,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def run_seconds(
    config: Any,
    final_series: Mapping[str, int],
    rates: Rates,
    final_samples: int = 1,
    register: bool = False,
) -> RunSeconds:
    """The wall time of a training run `fit` with `config` (a :class:`lvmodel.config.TrainConfig`)
    then forecasts of `final_series[split]` series at its context (`final_samples` each): the same
    parts and evaluation counts as :func:`lvmodel.run_plan.plan_run`, in seconds. Fixed: loading the
    base, the `fit` call's set-up, the run's open and close, one logged evaluation per split,
    and registering (with `register`). The process start is the entry point's, not the run's."""
    from lvmodel.run_plan import evaluation_count

    ctx = config.context_length
    batch = config.batch_size * config.grad_accum
    loss_passes = evaluation_count(config.steps, config.eval_every, config.evaluate_at_end)
    forecasts = 0
    if config.forecast_series > 0:
        forecasts = evaluation_count(config.steps, config.forecast_every, config.evaluate_at_end)
    final = {
        split: forecast_seconds(rates, ctx, final_samples, n) for split, n in final_series.items()
    }
    fixed = rates.load_base_s + rates.windows_s + rates.fit_fixed_s + rates.run_fixed_s
    fixed += rates.eval_log_s * len(final_series) + (rates.register_s if register else 0.0)
    return RunSeconds(
        train=train_seconds(rates, ctx, config.steps, batch),
        val_loss=val_loss_seconds(rates, ctx, config.eval_windows, loss_passes),
        val_forecast=forecast_seconds(rates, ctx, 1, config.forecast_series, forecasts),
        final_eval=final,
        fixed=fixed,
    )


def dominant(parts: Mapping[str, float]) -> str:
    """'NAME P%' of the largest part."""
    total = sum(parts.values())
    if total <= 0:
        return ""
    name = max(parts, key=lambda k: parts[k])
    return f"{name} {parts[name] / total:.0%}"


# -- measuring ----------------------------------------------------------------------------------


def measure_process_start(
    modules: Sequence[str], repeats: int = 2, path: Sequence[str] = ()
) -> float:
    """Seconds a fresh `python -c "import MODULES"` takes (the fastest of `repeats`), with the
    folders `path` put first on its sys.path."""
    code = f"import sys; sys.path[:0] = {list(map(str, path))!r}; import " + ", ".join(modules)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def _training_rates(
    model: Any,
    tok: Any,
    codec: Any,
    train_series: Any,
    val_series: Any,
    lora: Any,
    ctx: int,
    batch_size: int,
    eval_windows: int,
    train_steps: int,
    warmup_steps: int,
    tmp: Path,
    say: Callable[[str], None],
) -> dict[str, float]:
    """At context `ctx`: building the windows (`windows_s`), a training step (`step_s`,
    `train_pos` positions/s) and the rest of a `fit` call (`fit_fixed_s`), a validation-loss
    pass (`val_pos` positions/s)."""
    from lvmodel.config import TrainConfig
    from lvmodel.train import fit_data, validation_loss

    t0 = time.perf_counter()
    config = TrainConfig(context_length=ctx, eval_windows=eval_windows)
    data = fit_data(tok, codec, train_series, val_series, config)
    windows_s = time.perf_counter() - t0
    per_step, fit_fixed = _timed_fit(
        model, tok, codec, train_series, val_series, lora, data, batch_size, train_steps,
        warmup_steps, tmp,
    )  # fmt: skip
    t0 = time.perf_counter()
    validation_loss(model, data.val, batch_size, next(model.parameters()).device)
    val_s = time.perf_counter() - t0
    out = {
        "windows_s": windows_s,
        "step_s": per_step,
        "train_pos": batch_size * ctx / per_step,
        "fit_fixed_s": fit_fixed,
        "val_pos": len(data.val.input_ids) * ctx / val_s,
    }
    say(
        f"context {ctx}: {per_step * 1e3:.1f} ms a training step of {batch_size} x {ctx} "
        f"({out['train_pos']:.0f} positions/s), windows {windows_s:.2f} s, fit's fixed "
        f"{fit_fixed:.2f} s, validation loss {out['val_pos']:.0f} positions/s"
    )
    return out


def _timed_fit(
    model: Any,
    tok: Any,
    codec: Any,
    train: Any,
    val: Any,
    lora: Any,
    data: Any,
    batch: int,
    steps: int,
    warmup: int,
    root: Path,
) -> tuple[float, float]:
    """(seconds per step, fixed seconds of the call) of `fit` on `data` (`lvmodel.train.FitData`,
    built beforehand): the steps timed between the logging point after `warmup` steps and the
    last one (fit reads the device there, so the stamps follow the device), the rest of the
    call is its fixed part."""
    from lvmodel.config import TrainConfig
    from lvmodel.train import fit

    context = data.context_length

    config = TrainConfig(
        steps=warmup + steps,
        lr=1e-4,
        batch_size=batch,
        context_length=context,
        eval_windows=data.eval_windows,
        schedule="constant",
        eval_every=0,
        forecast_series=0,
        evaluate_at_end=False,
        log_every=warmup,
        log_seconds=0.0,
    )
    stamps: dict[int, float] = {}

    def on_metrics(rows: list[tuple[int, dict[str, float]]]) -> None:
        stamps[rows[-1][0]] = time.perf_counter()
        if rows[-1][0] == warmup:
            config.log_every = 0  # the next logging point is the last step's

    t0 = time.perf_counter()
    fit(model, tok, codec, train, val, config, lora, on_metrics=on_metrics, progress=False,
        checkpoint_dir=root / f"fit-{context}", data=data)  # fmt: skip
    t_end = time.perf_counter()
    per_step = (stamps[warmup + steps] - stamps[warmup]) / steps
    fixed = (t_end - t0) - (warmup + steps) * per_step
    return per_step, max(fixed, 0.0)


def measure_forecast(
    model: Any,
    tok: Any,
    codec: Any,
    series: Any,
    context: int,
    samples: int,
    sizes: tuple[int, int],
    history_steps: int,
    horizon: int,
    lora: Any = None,
) -> tuple[float, float, dict[str, float]]:
    """(fixed seconds of a call, seconds per series, the timings) of `evaluate_llm` at `context`
    with `samples` samples, from calls on `sizes` (small, large) series: the line through them."""
    from lvmodel.evaluate import evaluate_llm

    timed = {}
    for n in sizes:
        t0 = time.perf_counter()
        evaluate_llm(model, tok, codec, series[:n], history_steps, horizon, context, lora,
                     num_samples=samples, seed=0)  # fmt: skip
        timed[n] = time.perf_counter() - t0
    small, large = sizes
    per_series = (timed[large] - timed[small]) / (large - small)
    if per_series <= 0:  # noise: no fixed part seen
        return 0.0, timed[large] / large, {str(n): s for n, s in timed.items()}
    call = max(timed[small] - small * per_series, 0.0)
    return call, per_series, {str(n): s for n, s in timed.items()}


def measure_reference(train: Any, time_grid: Any, splits: Sequence[Any], history: int,
                      horizon: int) -> dict[str, float]:  # fmt: skip
    """Seconds of each reference forecaster's fit on `train` and forecasts of every split in
    `splits` (what the `reference` step computes)."""
    from lvmodel.metrics import protocol_split
    from lvmodel.reference import REFERENCE_FORECASTERS, make_reference

    out = {}
    for name in REFERENCE_FORECASTERS:
        t0 = time.perf_counter()
        model = make_reference(name).fit(train, time_grid)
        for series in splits:
            hist, _ = protocol_split(series, history, horizon)
            model.predict(hist, horizon)
        out[name] = time.perf_counter() - t0
    return out


def measure_rates(
    load: Callable[[], tuple[Any, Any]],
    codec: Any,
    train_series: Any,
    val_series: Any,
    *,
    contexts: Sequence[int],
    samples: Sequence[int] = (1,),
    batch_size: int = 4,
    lora: Any = None,
    eval_windows: int = 64,
    forecast_sizes: tuple[int, int] = (16, 64),
    history_steps: int = 50,
    horizon: int = 5,
    train_steps: int = 5,
    warmup_steps: int = 2,
    device: str = "",
    base: str = "",
    say: Callable[[str], None] = lambda message: None,
) -> Rates:
    """Measure :class:`Rates` with lvmodel's own code paths (no MLflow): `load()` timed (the
    base model and tokenizer, as a run loads them), then, on the model with `lora` applied, at
    each context: `fit` of `warmup_steps` + `train_steps` steps of `batch_size` windows (the
    timed steps give the training rate, the rest of the call `fit_fixed_s`) on windows built
    beforehand (timed: `windows_s`, over all of `train_series`), a validation-loss
    pass over `eval_windows` windows, and `evaluate_llm` of `forecast_sizes` validation series
    at each sample count. The fields the MLflow layer measures stay 0."""
    from lvmodel.lora import LoraSettings, apply_lora

    t0 = time.perf_counter()
    base_model, tok = load()
    load_s = time.perf_counter() - t0
    say(f"base loaded in {load_s:.1f} s")
    lora = lora or LoraSettings()
    model = apply_lora(base_model, lora)
    trained: dict[int, dict[str, float]] = {}
    series_per_s, call_s, raw = {}, {}, {}
    sizes = (min(forecast_sizes[0], len(val_series) - 1), min(forecast_sizes[1], len(val_series)))
    forecast_at = functools.partial(
        measure_forecast, model, tok, codec, val_series, history_steps=history_steps,
        horizon=horizon, lora=lora,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lv-rates-") as tmp:
        for i, ctx in enumerate(contexts):
            trained[ctx] = _training_rates(
                model, tok, codec, train_series, val_series, lora, ctx, batch_size,
                eval_windows, train_steps, warmup_steps, Path(tmp), say,
            )  # fmt: skip
            if i == 0:  # the first forecast call's one-time costs
                forecast_at(ctx, 1, (1, 2))
            for s in samples:
                call, per, timed = forecast_at(ctx, s, sizes)
                key = _key(ctx, s)
                series_per_s[key], call_s[key], raw[f"forecast_{key}_s"] = 1 / per, call, timed
                say(f"context {ctx}, {s} sample(s): {1 / per:.1f} series/s beyond {call:.2f} s "
                    f"a call ({timed})")  # fmt: skip
    windows_s = [t["windows_s"] for t in trained.values()]
    fixed = [t["fit_fixed_s"] for t in trained.values()]
    return Rates(
        device=device or str(next(model.parameters()).device),
        base=base,
        batch_size=batch_size,
        train_positions_per_s={c: t["train_pos"] for c, t in trained.items()},
        val_positions_per_s={c: t["val_pos"] for c, t in trained.items()},
        forecast_series_per_s=series_per_s,
        forecast_call_s=call_s,
        load_base_s=load_s,
        windows_s=sum(windows_s) / len(windows_s),
        fit_fixed_s=sum(fixed) / len(fixed),
        measured={
            "train_steps": train_steps,
            "warmup_steps": warmup_steps,
            "eval_windows": eval_windows,
            "forecast_sizes": list(sizes),
            "lora": lora.to_dict() if hasattr(lora, "to_dict") else str(lora),
            "windows_s": windows_s,
            "fit_fixed_s": fixed,
            **raw,
        },
    )
