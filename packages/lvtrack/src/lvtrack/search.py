"""Budget-aware search on Optuna: successive halving at FLOPs rungs, each trial an MLflow child run
charged to the ledger, any number of workers on one study.

- The study lives in an RDB storage (`lvtrack.budget_db.default_storage`: SQLite beside the
  tracking DB, or a database of its own on the PostgreSQL server behind the tracking store, where
  the budget ledger's tables live too); every worker started
  with the same study name and storage joins it. Optuna's heartbeat marks a dead worker's trial
  failed, and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` queues it again for another
  worker; the dead trial's MLflow run is closed with what it logged, so its FLOPs count once.
- Rungs are measured in FLOPs: rung k trains the trial's stable phase to `rung_flops * eta**k`
  training FLOPs (as many steps as that buys at the trial's rank and context) and is scored on
  a short decay branched from there (`lvmodel.rungs.WsdRungs`): `val_mse_filled` at the
  preset's horizon on the fixed validation subset of the forecasting metric, never the
  validation loss. Optuna's asynchronous successive-halving pruner compares trials at each rung
  (`trial.report(value, step=eta**k)`: the rung's FLOPs in units of the first rung's, since
  Optuna stores steps as 32-bit integers on PostgreSQL); a promoted trial continues its stable
  phase.
- Each trial reserves in the ledger only what its next rung can spend and asks again when
  promoted; a refusal (the experiment's budget, or the search's share of it) ends it as pruned
  for budget, with what it spent charged.
"""

from __future__ import annotations

import functools
import math
import sys
import time
import warnings
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import click
import mlflow
import optuna
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from lvflops import ModelShape, train_step_flops
from lvmodel.base import BaseModelError, base_shape
from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import nll_bound, plan_run
from lvmodel.rungs import NLL_METRIC, WsdRungs, decay_steps_for
from lvmodel.train import FitData, fit_data
from lvtrack.budget_db import driver_url, ensure_postgres_database
from lvtrack.datafile import Prepared, prepare_data
from lvtrack.describe import describe_run, run_description
from lvtrack.ledger import TAG_PHASE, TAG_PLANNED, BudgetRefused, open_ledger
from lvtrack.plots import plot_rungs, plot_search_history
from lvtrack.presets import Preset
from lvtrack.request import TrainRequest
from lvtrack.resume import ReleaseError, checkpoint_root, release_dead_run
from lvtrack.runs import FlopsMeter, budgeted_run
from lvtrack.search_settings import SearchError, SearchSettings, first_rung_flops
from lvtrack.selection import SELECTION_METRIC
from lvtrack.tracking import set_run_tags
from lvtrack.training_run import lora_model

PHASE = "search"
TAG_STUDY = "optuna.study"
TAG_TRIAL = "optuna.trial_number"
TAG_TRIAL_STATE = "lv.trial_state"  # completed, pruned, pruned for budget
ATTR_RUN = "mlflow_run_id"  # trial attribute: the trial's MLflow run
ATTR_PARENT = "lv.mlflow_parent_run_id"  # study attribute: the search's parent run
ATTR_SPACE = "lv.space"  # study attribute: the space it was created with
SCORE = "val_mse_filled"  # the rung score, from the decayed branch's forecasting metric
RUNG_SCORES = {"forecast": SCORE, "nll": NLL_METRIC}  # by SearchSettings.rung_score


def open_storage(url: str, heartbeat_s: int = 30, attempts: int = 3) -> RDBStorage:
    """The study's storage, with a heartbeat (a dead worker's trial fails after 3 beats missed)
    and the retry of failed trials; a storage that does not answer is a :class:`SearchError`.

    Workers that start together on a new storage race to create its tables: a loser retries
    (the tables are then there)."""
    target = driver_url(url)
    for attempt in range(attempts):
        try:
            if urlsplit(target).scheme.startswith("postgresql"):
                ensure_postgres_database(target)
            engine: dict[str, Any] = {}
            if target.startswith("sqlite"):
                engine = {"connect_args": {"timeout": 60}}  # several workers on one file
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    target,
                    engine_kwargs=engine,
                    heartbeat_interval=heartbeat_s,
                    grace_period=3 * heartbeat_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                )
        except Exception as err:  # sqlalchemy's errors, a bad URL, a server that does not answer
            text = str(err)
            racing = "already exists" in text or "UNIQUE constraint" in text or "locked" in text
            if racing and attempt < attempts - 1:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise SearchError(
                f"the Optuna storage {url} does not answer ({type(err).__name__}: "
                f"{text.splitlines()[0][:200] if text else ''}); check the URL and that the "
                "server runs, or leave --storage empty for SQLite beside the tracking DB"
            ) from None
    raise AssertionError("unreachable")


def open_study(settings: SearchSettings, preset: Preset) -> optuna.Study:
    """Create the study or join it; a study made with another space is a :class:`SearchError`."""
    storage = open_storage(settings.storage, settings.heartbeat_s)
    space = settings.space
    if settings.sampler == "grid":
        grid = space.grid(tuple(lr for lr in preset.sweep_lrs if _inside(lr, space.lr)))
        if "lr" in space.distributions() and not grid["lr"]:
            raise SearchError(
                f"the grid sampler takes the preset's lrs {preset.sweep_lrs}; none lies in the "
                f"space's lr range {space.lr[0]:g}:{space.lr[1]:g}"
            )
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(grid, seed=settings.seed)
    else:
        # Each worker's sampler gets its own seed (the trials it finds in the study): workers
        # must not draw the same first trials; one worker alone is deterministic.
        try:
            known = optuna.load_study(study_name=settings.study, storage=storage)
            offset = len(known.trials)
        except KeyError:
            offset = 0
        sampler = optuna.samplers.TPESampler(seed=settings.seed + offset)
    study = optuna.create_study(
        study_name=settings.study,
        storage=storage,
        sampler=sampler,
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1,
            reduction_factor=settings.eta,  # steps: rung FLOPs / the first rung's
        ),
        direction="minimize",
        load_if_exists=True,
    )
    made_with = study.user_attrs.get(ATTR_SPACE)
    if made_with is None:
        study.set_user_attr(ATTR_SPACE, space.fingerprint())
        study.set_user_attr("lv.sampler", settings.sampler)
    elif made_with != space.fingerprint():
        raise SearchError(
            f"study {settings.study!r} in {settings.storage} was created with another search "
            f"space ({made_with}); this worker's is {space.fingerprint()}. Use the same "
            "--space, or another --study name"
        )
    return study


def _log_params(params: dict[str, Any]) -> None:
    mlflow.log_params(params)


def _inside(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


class Search:
    """One worker of a search: its trials, each a budgeted child run of the search's parent."""

    def __init__(
        self,
        settings: SearchSettings,
        preset: Preset,
        data_file: str,
        experiment_id: str,
    ) -> None:
        self.settings, self.preset = settings, preset
        self.data_file, self.base = data_file, preset.base_model
        self.experiment_id = experiment_id
        self.client = MlflowClient()
        self.ledger = open_ledger(experiment_id, int(preset.budget), settings.storage, self.client)
        self.prep: Prepared = prepare_data(data_file)
        try:
            self.shape: ModelShape = base_shape(self.base)
        except BaseModelError as err:
            raise SearchError(str(err)) from None
        self.search_flops = settings.share * preset.budget
        self.val = self.prep.scored("val", preset.eval_series)
        self.r0 = first_rung_flops(self.shape, preset, settings, self.prep.codec.decimals)
        self.parent_id = ""
        self._bases: dict[str, tuple[Any, Any]] = {}
        self._windows: dict[tuple[int, int | None, int], FitData] = {}

    # -- the study and the parent run ------------------------------------------------------

    def attach(self, study: optuna.Study, worker_run_id: str) -> str:
        """The search's parent run: the first worker's own run; later workers' runs become its
        children. Decided in one transaction of the ledger's database (one parent however many
        start), then kept in the study for the UI."""
        parent = self.ledger.first_value(f"study:{study.study_name}", "parent", worker_run_id)
        if parent == worker_run_id:
            study.set_user_attr(ATTR_PARENT, parent)
        if parent != worker_run_id:
            self.client.set_tag(worker_run_id, MLFLOW_PARENT_RUN_ID, parent)
        self.parent_id = str(parent)
        return self.parent_id

    def rung_steps(self, context: int, batch: int, warmup: int, lora: LoraSettings) -> list[int]:
        """Stable steps at each rung: what the rung's training FLOPs buy at full windows (at
        least one step past the warmup and the rung before)."""
        step = train_step_flops(self.shape, context, batch, **lora.flops_kwargs()).total
        steps: list[int] = []
        for k in range(self.settings.rungs):
            target = self.r0 * self.settings.eta**k
            floor = max(steps[-1] if steps else 0, warmup) + 1
            steps.append(max(floor, int(target // step)))
        return steps

    def rung_plan(self, config: TrainConfig, lora: LoraSettings, start: int, stable: int) -> int:
        """The most rung `stable` can spend after `start` stable steps: the new stable steps,
        the decay branch, its validation loss and forecasting metric (or NLL/D)."""
        decay = decay_steps_for(stable, self.settings.decay_fraction)
        nll = self.settings.rung_score == "nll"
        branch = replace(
            config, steps=stable - start + decay, eval_every=0, forecast_every=0,
            forecast_series=0 if nll else config.forecast_series, evaluate_at_end=True,
        )  # fmt: skip
        decimals, horizon = self.prep.codec.decimals, self.preset.horizon
        plan = plan_run(self.shape, branch, lora, decimals, {}, horizon).total
        if nll:
            n, ctx = config.forecast_series, config.context_length
            plan += nll_bound(self.shape, n, ctx, horizon, decimals=decimals, lora=lora)
        return plan

    def search_charged(self) -> int:
        """What the search's trials hold of the budget now (spent and reserved)."""
        ledger = self.ledger.read(self.experiment_id, int(self.preset.budget))
        return ledger.by_phase().get(PHASE, (0, 0))[1]

    # -- one trial -------------------------------------------------------------------------

    def objective(self, trial: optuna.Trial) -> float:
        s, p = self.settings, self.preset
        picked = s.space.suggest(trial)
        self._close_failed_original(trial)
        preset = replace(p, lora_targets=picked["targets"])
        name = f"trial {trial.number} lr={picked['lr']:.3g} r={picked['rank']}"
        if len(s.space.contexts) > 1:
            name += f" ctx={picked['context_length']}"
        req = TrainRequest.from_preset(
            preset,
            PHASE,
            name,
            1,
            lr=picked["lr"],
            rank=picked["rank"],
            context_length=picked["context_length"],
            schedule="wsd",
            seed=s.seed,
            data_file=self.data_file,
        )
        lora = req.lora()
        steps = self.rung_steps(
            req.preset.context_length, req.preset.batch_size, p.warmup_steps, lora
        )
        req = replace(req, steps=steps[-1])
        # Each rung's decay branch is scored on the preset's forecasting subset, whatever the
        # in-run cadence (micro has none).
        config = replace(req.train_config(), forecast_series=p.forecast_series)
        first = self.rung_plan(config, lora, 0, steps[0])
        if self.search_charged() + first > self.search_flops:
            trial.set_user_attr("pruned_for", "budget")
            trial.study.stop()  # the search's share is spent: no more trials on this worker
            raise optuna.TrialPruned("the search's share of the budget is spent")
        tags = {
            MLFLOW_PARENT_RUN_ID: self.parent_id,
            TAG_STUDY: trial.study.study_name,
            TAG_TRIAL: str(trial.number),
            "base_model": self.base,
        }
        params = {
            "lr": picked["lr"],
            "rank": picked["rank"],
            "context_length": picked["context_length"],
            "lora_targets": ",".join(picked["targets"]),
            "batch_size": req.preset.batch_size,
            "warmup_steps": config.warmup_steps,
            "seed": s.seed,
            "rung_steps": ",".join(map(str, steps)),
            "rung_flops": ",".join(f"{self.r0 * s.eta**k:.4g}" for k in range(s.rungs)),
            "decay_fraction": s.decay_fraction,
            "preset": p.name,
            "optuna_trial": trial.number,
        }
        outcome: str = "completed"
        value = math.nan
        # Nested under this worker's run (the active one), then re-parented by the tag.
        log_start = functools.partial(_log_params, params)
        with budgeted_run(
            name, PHASE, p, first, log_start, True, tags, storage=self.settings.storage
        ) as (run, meter):
            trial.set_user_attr(ATTR_RUN, run.info.run_id)
            outcome, value = self._train(
                trial, req, config, lora, steps, meter, run.info.run_id, first
            )
            mlflow.set_tag(TAG_TRIAL_STATE, outcome)
            scored = {SELECTION_METRIC: value, "budget_share": meter.spent / p.budget}
            label = f"{PHASE} trial {trial.number}"
            describe_run(run_description(PHASE, params, scored, label=label, state=outcome))
        if outcome != "completed":
            raise optuna.TrialPruned(outcome)
        return value

    def _train(
        self,
        trial: optuna.Trial,
        req: TrainRequest,
        config: TrainConfig,
        lora: LoraSettings,
        steps: list[int],
        meter: FlopsMeter,
        run_id: str,
        planned: int,
    ) -> tuple[str, float]:
        """Rung after rung until pruned, refused or at the top; (outcome, last rung's score)."""
        s = self.settings
        model, tok = lora_model(req.preset.base_model, lora, s.seed, self._bases)
        trainer: WsdRungs

        def on_metrics(rows: list[tuple[int, dict[str, float]]]) -> None:
            meter.log_rows(
                [
                    (s, trainer.branch_flops + m["flops_cumulative"], _without_flops(m))
                    for s, m in rows
                ]
            )

        trainer = WsdRungs(
            model,
            tok,
            self.prep.codec,
            self.prep.series("train"),
            self.val,
            config,
            lora,
            checkpoint_root() / run_id,
            decay_fraction=s.decay_fraction,
            on_metrics=on_metrics,
            progress=sys.stderr.isatty(),
            data=self._fit_data(tok, config),
            score=s.rung_score,
        )
        value = math.nan
        for k, stable in enumerate(steps):
            if k > 0:
                want = int(meter.spent) + self.rung_plan(config, lora, steps[k - 1], stable)
                others = self.search_charged() - max(planned, int(meter.spent))
                if others + want > self.search_flops:
                    return "pruned for budget (the search's share)", value
                try:
                    self.ledger.extend(run_id, want, int(self.preset.budget))
                    self.client.set_tag(run_id, TAG_PLANNED, str(want))  # for the UI
                except BudgetRefused as err:
                    click.echo(f"trial {trial.number}: {err}", err=True)
                    return "pruned for budget", value
                planned = want
            result = trainer.rung(stable)
            value = float(result.metrics.get(RUNG_SCORES[s.rung_score], math.nan))
            scored = f"{RUNG_SCORES[s.rung_score]}_h{self.preset.horizon}"
            meter.log(result.total_flops, stable, {f"rung_{scored}": value, "rung": float(k)})
            if k == len(steps) - 1:  # the top rung: no further pruning; `final` compares these
                # (`val_mse_filled_h5`, the selection metric; `val_nll_per_dim_h5` by NLL/D)
                top = SELECTION_METRIC if s.rung_score == "forecast" else scored
                mlflow.log_metric(top, value, step=stable)
                return "completed", value
            trial.report(value, step=s.eta**k)  # FLOPs in units of rung 0's
            if trial.should_prune():
                return f"pruned at rung {k}", value
        return "completed", value

    def _fit_data(self, tok: Any, config: TrainConfig) -> FitData:
        """The training windows at the trial's context: tokenized once per worker and context
        (the space has a few contexts; a trial fits twice per rung)."""
        key = (config.context_length, config.stride, config.eval_windows)
        if key not in self._windows:
            train = self.prep.series("train")
            self._windows[key] = fit_data(tok, self.prep.codec, train, self.val, config)
        return self._windows[key]

    def _close_failed_original(self, trial: optuna.Trial) -> None:
        """A retried trial (its worker died): close the dead trial's run FAILED with what it
        logged, so that its FLOPs count once and its reservation is given back."""
        trials = {t.number: t for t in trial.study.get_trials(deepcopy=False)}  # one read
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            failed = RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[trial.number])
        if failed is None:
            return
        original = trials.get(failed)
        run_id = original.user_attrs.get(ATTR_RUN) if original else None
        if not run_id:
            return
        try:
            spent = release_dead_run(
                self.client, str(run_id), int(self.preset.budget), self.settings.storage, True
            )
        except ReleaseError as err:
            click.echo(f"trial {trial.number}: the failed trial's run: {err}", err=True)
        else:
            click.echo(
                f"trial {trial.number} retries trial {failed} (its worker died): its run "
                f"{run_id} closed FAILED, {spent:.3e} FLOPs charged once",
                err=True,
            )

    # -- the whole worker ------------------------------------------------------------------

    def run(self, study: optuna.Study) -> None:
        """Run trials until the study holds `trials` finished ones (or the share is spent)."""
        stop = optuna.study.MaxTrialsCallback(
            self.settings.trials,
            states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING),
        )
        study.optimize(self.objective, n_trials=self.settings.trials, callbacks=[stop])

    def log_study(self, study: optuna.Study) -> dict[str, Any]:
        """The study's plots and best trial, logged to the parent run (every worker rewrites
        them as it ends: the last one leaves the whole study)."""
        trials = study.get_trials(deepcopy=False)
        self.client.log_figure(self.parent_id, plot_search_history(trials), "plots/history.png")
        rungs = [self.r0 * self.settings.eta**k for k in range(self.settings.rungs)]
        self.client.log_figure(self.parent_id, plot_rungs(trials, rungs), "plots/rungs.png")
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        summary: dict[str, Any] = {
            "trials": len(trials),
            "completed": len(done),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "search_flops": float(self.search_charged()),
        }
        tags = {TAG_PHASE: PHASE}
        if done:
            best = min(done, key=lambda t: t.value if t.value is not None else math.inf)
            summary.update(best_value=best.value, best_trial=best.number, **best.params)
            tags["best_run_id"] = str(best.user_attrs.get(ATTR_RUN, ""))
            tags.update({f"best_{key}": str(value) for key, value in best.params.items()})
            score = RUNG_SCORES[self.settings.rung_score]
            self.client.log_metric(self.parent_id, f"best_{score}", float(best.value or math.nan))
        set_run_tags(self.parent_id, tags)  # every worker writes them: one batch, race-safe
        return summary


def _without_flops(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "flops_cumulative"}
