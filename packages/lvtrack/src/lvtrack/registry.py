"""Log, register and promote the forecaster in the MLflow model registry.

- :func:`log_forecaster` logs a LoRA adapter + codec + base model as the pyfunc of
  `packages/lvtrack/src/lvtrack/lv_pyfunc.py` ("models from code") with an explicit signature, pinned pip requirements
  and the sources of lvdata, lvflops and lvmodel as `code_paths`, so that
  `mlflow.pyfunc.load_model("models:/lv-forecaster@champion")` works in a fresh process offline.
  The base is referenced, not copied (about 1 GB per version at Qwen scale): `base_ref.json` pins
  a hub id to its commit, a local folder or a GGUF file to its path and sha256
  (`lvmodel.base.pin_base`); only the few-MB `tiny` base (and an in-memory `base_model=`) is
  bundled. By default the logged model is loaded and tried on an example before it is
  registered, so that a reference the loading side cannot resolve fails here.
- At registration the version gets a model card as its description (`lvtrack.describe.model_card`:
  base model and its pin, LoRA, data digest, codec, metrics, FLOPs, git commit, how to load and
  serve it) and a few identifying tags (:data:`VERSION_TAGS` and the selection metric).
- :func:`promote` moves an alias (`champion`) to the version with the best validation forecasting
  metric and records why on the version's tags; running it again changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import tempfile
import warnings
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types import DataType
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

import lvdata
import lvflops
import lvmodel
from lvdata import LLMTimeCodec
from lvtrack.describe import finite, model_card
from lvtrack.selection import SELECTION_METRIC

REGISTERED_MODEL = "lv-forecaster"
MODEL_FILE = Path(__file__).with_name("lv_pyfunc.py")
BASE_REF_FILE = "base_ref.json"
COLUMNS = ("prey", "predator")
DEFAULT_SETTINGS: dict[str, Any] = {
    "context_length": None,
    "horizon": 5,
    "num_samples": 1,
    "temperature": 1.0,
    "top_p": 1.0,
    "batch_size": 16,
}
# Third-party distributions the pyfunc needs, pinned to the versions installed when logging.
# lvdata/lvflops/lvmodel are not on any package index: they travel with the model (code_paths).
REQUIREMENTS = (
    "mlflow",
    "torch",
    "transformers",
    "huggingface_hub",
    "peft",
    "safetensors",
    "tokenizers",
    "numpy",
    "pandas",
    "scipy",
    "h5py",
    "click",
    "tqdm",
)
#: The tags of a registered version (besides `promotion.*` and the selection metric): what
#: identifies it in the registry's list. Everything else is in its description (the model card).
VERSION_TAGS = ("phase", "preset", "base_spec", "base_kind", "lora_rank", "context_length")
# What MLflow logs (and otherwise only warns about) when its input-example check fails.
_MLFLOW_MODEL_LOGGER = "mlflow.models.model"
_VALIDATION_FAILED = "Failed to validate serving input example"


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (no versions, no version with the metric, ...)."""


# -- logging ----------------------------------------------------------------------------------


def forecaster_signature(
    horizon: int = 5, num_samples: int = 1, temperature: float = 1.0, top_p: float = 1.0
) -> ModelSignature:
    """Input: `prey`, `predator` as arrays of doubles (one history per row). Params: `horizon`,
    `num_samples`, `temperature`, `top_p`, and `quantiles` (a list of levels in (0, 1); empty by
    default: no quantiles). Output: `prey`, `predator` (the point forecast: the median of the
    samples), and, only when quantiles are asked for, `prey_quantiles`, `predator_quantiles`
    (per row: horizon x levels) and `quantiles` (the levels): optional columns."""
    columns: list[ColSpec | TensorSpec] = [ColSpec(Array(DataType.double), n) for n in COLUMNS]
    intervals: list[ColSpec | TensorSpec] = [
        ColSpec(Array(Array(DataType.double)), f"{n}_quantiles", required=False) for n in COLUMNS
    ]
    intervals.append(ColSpec(Array(DataType.double), "quantiles", required=False))
    return ModelSignature(
        inputs=Schema(columns),
        outputs=Schema([*columns, *intervals]),
        params=ParamSchema(
            [
                ParamSpec("horizon", DataType.long, int(horizon)),
                ParamSpec("num_samples", DataType.long, int(num_samples)),
                ParamSpec("temperature", DataType.double, float(temperature)),
                ParamSpec("top_p", DataType.double, float(top_p)),
                ParamSpec("quantiles", DataType.double, [], shape=(-1,)),
            ]
        ),
    )


def pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """`name==version` for each runtime dependency, as installed now (local labels like +cpu cut)."""
    pins = []
    for dist in (*REQUIREMENTS, *extra):
        try:
            pins.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins


def code_paths() -> list[str]:
    """The source folders of lvdata, lvflops and lvmodel (src layout: the package folder itself).

    MLflow copies each into the model's `code/` folder and puts that folder first on `sys.path`
    when loading, so a fresh process imports these copies even where the packages are not
    installed (and prefers them over installed ones).
    """
    return [str(Path(str(pkg.__file__)).parent) for pkg in (lvdata, lvflops, lvmodel)]


def save_base(model: Any, tokenizer: Any, directory: str | Path) -> Path:
    """Save a base model (safetensors) and its tokenizer, without any LoRA layers or head bias.

    `model` may already carry LoRA (`apply_lora` changes the base in place, and may add an
    lm_head bias): the state dict is cleaned back to the plain architecture's tensors.
    """
    import torch
    from peft import PeftModel

    directory = Path(directory)
    inner: Any = model.get_base_model() if isinstance(model, PeftModel) else model
    state = inner.state_dict()
    with torch.device("meta"):  # the plain architecture's tensor names (no memory, no init cost)
        expected = set(type(inner)(inner.config).state_dict())
    # Anything the plain architecture lacks (LoRA layers, the head's `lv_bias`) is dropped.
    if set(state) != expected:
        clean = {}
        for key, value in state.items():
            if "lora_" in key:
                continue
            key = key.replace(".base_layer.", ".")
            if key in expected:
                clean[key] = value
        missing = expected - set(clean)
        if missing:
            raise ValueError(f"could not recover the base weights: missing {sorted(missing)[:3]}")
        inner.save_pretrained(directory, state_dict=clean, safe_serialization=True)
    else:
        inner.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def _copy_model_files(src: Path, dst: Path) -> Path:
    """Bundle a model folder: its config, tokenizer and weight files (`lvmodel.base.model_files`)."""
    from lvmodel.base import model_files

    dst.mkdir(parents=True)
    for p in model_files(src):
        shutil.copy2(p, dst / p.name)
    return dst


_REF_NOTES = {
    "hub": "loads exactly this revision: it must be in the loading machine's Hugging Face cache "
    "(complete), or downloadable there",
    "local": "referenced, not copied: the folder must exist at this path on the machine that "
    "loads the model, with files of this digest",
    "gguf": "referenced, not copied: the file must exist at this path on the machine that loads "
    "the model, with this size and sha256",
}


def stage_base(
    base_spec: str, base_model: Any, tokenizer: Any, workdir: Path
) -> tuple[Path, dict[str, str]]:
    """The `base` artifact for `base_spec`: a model folder (`tiny`, an in-memory `base_model`),
    else a `base_ref.json` that pins a hub id, a local folder or a GGUF file without copying it.

    Returns the artifact's path and `{"base_spec", "base_kind"}` (plus `base_revision` or
    `base_digest` for a reference) for the settings and tags. Raises
    `lvmodel.base.BaseModelError` for a spec that cannot be pinned (no such folder or file, a
    hub id not cached here and the hub unreachable).
    """
    from lvmodel.base import pin_base

    spec = str(base_spec)
    info = {"base_spec": spec}
    if base_model is not None:
        if tokenizer is None:
            raise ValueError("base_model needs its tokenizer")
        return save_base(base_model, tokenizer, workdir / "base"), {**info, "base_kind": "bundled"}
    if spec == "tiny":
        from lvmodel.tiny import ensure_tiny_base

        return _copy_model_files(ensure_tiny_base(), workdir / "base"), {
            **info,
            "base_kind": "tiny",
        }
    ref = pin_base(spec)
    out = workdir / BASE_REF_FILE
    out.write_text(json.dumps({**ref, "note": _REF_NOTES[ref["kind"]]}, indent=2) + "\n")
    info.update(base_kind=ref["kind"], base_spec=ref["spec"])
    if "revision" in ref:
        info["base_revision"] = ref["revision"]
    else:
        info["base_digest"] = ref.get("digest") or f"sha256:{ref['sha256']}"
    return out, info


def forecaster_settings(
    settings: dict[str, Any] | None, adapter_dir: Path, codec: LLMTimeCodec
) -> dict[str, Any]:
    """Defaults, then `settings`, then what the adapter and codec fix (rank, targets, decimals)."""
    from lvmodel.lora import adapter_settings

    lora = adapter_settings(adapter_dir)
    out = {**DEFAULT_SETTINGS, **(settings or {})}
    if "decimals" in out and int(out["decimals"]) != codec.decimals:
        raise ValueError(f"settings decimals {out['decimals']} != codec decimals {codec.decimals}")
    if "lora_rank" in out and int(out["lora_rank"]) != lora.rank:
        raise ValueError(f"settings lora_rank {out['lora_rank']} != adapter rank {lora.rank}")
    out.update(
        decimals=codec.decimals,
        lora_rank=lora.rank,
        lora_targets=list(lora.targets),
        lm_head_bias=lora.lm_head_bias,
    )
    return out


def example_input() -> tuple[pd.DataFrame, dict[str, int]]:
    """A small valid request: one 4-step history, horizon 2."""
    frame = pd.DataFrame({"prey": [[1.0, 0.95, 0.91, 0.88]], "predator": [[1.0, 1.03, 1.05, 1.06]]})
    return frame, {"horizon": 2}


class _ValidationWarnings(logging.Handler):
    """Collects MLflow's "Failed to validate serving input example" warnings while logging."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(_VALIDATION_FAILED):
            self.errors.append(message.split("Got error: ", 1)[-1].strip())


def _log_model_checked(validate: bool, **kwargs: Any) -> ModelInfo:
    """`mlflow.pyfunc.log_model`; with `validate`, MLflow's input-example check (it loads the
    logged model in this process and predicts the example) must pass: MLflow itself only warns.
    A model that fails it is deleted again and `RegistryError` says why."""
    with warnings.catch_warnings():
        # validate=False leaves the example out on purpose; MLflow would warn about it
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        if not validate:
            return mlflow.pyfunc.log_model(**kwargs)
        logger = logging.getLogger(_MLFLOW_MODEL_LOGGER)
        handler, level = _ValidationWarnings(), logger.level
        logger.addHandler(handler)
        if not logger.isEnabledFor(logging.WARNING):
            logger.setLevel(logging.WARNING)
        try:
            info = mlflow.pyfunc.log_model(input_example=example_input(), **kwargs)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    if handler.errors:
        with contextlib.suppress(MlflowException):  # the message below still says what failed
            MlflowClient().delete_logged_model(info.model_id)
        raise RegistryError(
            f"the forecaster could not be loaded and used to forecast, so it was not registered "
            f"(logged model {info.model_id} deleted again): {handler.errors[0]}"
        )
    return info


def log_forecaster(
    *,
    name: str = "model",
    adapter_dir: str | Path,
    codec: LLMTimeCodec,
    base_spec: str,
    base_model: Any = None,
    tokenizer: Any = None,
    settings: dict[str, Any] | None = None,
    registered_model_name: str | None = None,
    tags: dict[str, Any] | None = None,
    validate: bool = True,
) -> ModelInfo:
    """Log the forecaster as a pyfunc model (into the active run, if any).

    Args:
        name: the logged model's name.
        adapter_dir: folder written by `lvmodel.lora.save_adapter`.
        codec: the LLMTime codec the adapter was trained with.
        base_spec: what `lvmodel.base.load_base` was given. `"tiny"` is bundled (safetensors +
            tokenizer, a few MB); a hub id, a local folder or a `.gguf` path is pinned in
            `base_ref.json` (hub id + commit; absolute path + sha256) and must be present where
            the model is loaded (see `packages/lvtrack/src/lvtrack/lv_pyfunc.py`).
        base_model, tokenizer: bundle this in-memory base instead (LoRA layers, if present,
            are stripped); `base_spec` is then only recorded.
        settings: context_length, horizon (default of the `horizon` param), num_samples,
            batch_size, ...; LoRA rank/targets/lm_head_bias come from the adapter.
        registered_model_name: also register the model as a new version of this name, with a
            model card as its description and the tags :data:`VERSION_TAGS`, `tags` and the
            source run's selection metric (`val_mse_filled_h5`, unless in `tags`), so that
            :func:`promote` compares versions from their tags.
        tags: tags of the logged model, and of the registered version if any (give only what
            identifies a version: metrics belong to the source run and the card).
        validate: log an input example, which MLflow checks by loading the model in this
            process and predicting it; a failure raises `RegistryError` before anything is
            registered (costs one load of the base: 40-60 s for the Qwen GGUF on a CPU).

    Raises:
        lvmodel.base.BaseModelError: `base_spec` cannot be pinned.
        RegistryError: `validate` and the logged model does not load or forecast.
    """
    adapter_dir = Path(adapter_dir)
    with tempfile.TemporaryDirectory(prefix="lv-forecaster-") as tmp:
        work = Path(tmp)
        base_path, base_info = stage_base(base_spec, base_model, tokenizer, work)
        full = {**forecaster_settings(settings, adapter_dir, codec), **base_info}
        (work / "settings.json").write_text(json.dumps(full, indent=2) + "\n")
        (work / "codec.json").write_text(json.dumps(codec.to_dict(), indent=2) + "\n")
        identity = ("lora_rank", "context_length")
        model_tags = {**base_info, **{k: full[k] for k in identity}, "codec_alpha": codec.alpha}
        model_tags = {k: str(v) for k, v in {**model_tags, **(tags or {})}.items()}
        extra = ("gguf",) if full["base_kind"] == "gguf" else ()
        info = _log_model_checked(
            validate,
            name=name,
            python_model=str(MODEL_FILE),
            artifacts={
                "adapter": str(adapter_dir),
                "codec": str(work / "codec.json"),
                "base": str(base_path),
                "settings": str(work / "settings.json"),
            },
            code_paths=code_paths(),
            pip_requirements=pip_requirements(extra),
            signature=forecaster_signature(
                full["horizon"], full["num_samples"], full["temperature"], full["top_p"]
            ),
            tags=model_tags,
        )
    if registered_model_name is not None:  # only now: a model that failed `validate` is not
        version_tags = {k: v for k, v in model_tags.items() if k in VERSION_TAGS}
        card = {
            "settings": {**full, "lora_alpha": _lora_alpha(adapter_dir)},
            "codec": codec.to_dict(),
        }
        version = _register(
            info.model_uri, registered_model_name, {**version_tags, **(tags or {})}, card
        )
        info.registered_model_version = int(version.version)
    return info


# -- registering ------------------------------------------------------------------------------


def _tag_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "null" if value is None else str(value)


def _tag_version(client: MlflowClient, name: str, ver: str, tags: dict[str, Any]) -> ModelVersion:
    """Set `tags`, and the source run's selection metric (unless tagged): :func:`promote` reads
    it from the tags (else from the run)."""
    mv = client.get_model_version(name, ver)
    merged: dict[str, str] = {k: _tag_value(v) for k, v in tags.items()}
    if SELECTION_METRIC not in merged and mv.run_id:
        metric = client.get_run(mv.run_id).data.metrics.get(SELECTION_METRIC)
        if metric is not None:
            merged[SELECTION_METRIC] = _tag_value(metric)
    for key, value in merged.items():
        if mv.tags.get(key) != value:
            client.set_model_version_tag(name, ver, key, value)
    return client.get_model_version(name, ver)


def _lora_alpha(adapter_dir: Path) -> int:
    from lvmodel.lora import adapter_settings

    return adapter_settings(adapter_dir).lora_alpha


def git_commit(run_tags: dict[str, str]) -> str:
    """The code's commit: the run's `mlflow.source.git.commit`, else `git rev-parse HEAD` of the
    checkout this package lives in (or of the working directory), else "unknown"."""
    if run_tags.get(MLFLOW_GIT_COMMIT):
        return run_tags[MLFLOW_GIT_COMMIT]
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "-C", str(where), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return "unknown"


def _dataset(run: Any) -> dict[str, str]:
    """The run's training data set (name, digest, source path), else its first; {} if none."""
    inputs = list(run.inputs.dataset_inputs) if run.inputs else []
    if not inputs:
        return {}
    chosen = next(
        (i for i in inputs if any(t.value == "training" for t in i.tags)), inputs[0]
    ).dataset
    try:
        source = json.loads(chosen.source).get("uri", chosen.source)
    except (TypeError, ValueError, AttributeError):
        source = chosen.source
    return {"name": chosen.name, "digest": chosen.digest, "source": str(source or "")}


def _predict_params(horizon: int) -> dict[str, Any]:
    """The card's predict example: a probabilistic forecast (params of
    :func:`forecaster_signature`)."""
    return {"horizon": int(horizon), "num_samples": 20, "quantiles": [0.1, 0.5, 0.9]}


def version_card(client: MlflowClient, mv: ModelVersion, card: dict[str, Any]) -> str:
    """The model card of `mv` (`lvtrack.describe.model_card`), from its source run and `card`
    (the forecaster's settings and codec)."""
    run = None
    if mv.run_id:
        with contextlib.suppress(MlflowException):
            run = client.get_run(mv.run_id)
    settings = card["settings"]
    tags = dict(run.data.tags) if run else {}
    return model_card(
        mv.name,
        mv.version,
        settings,
        card["codec"],
        run_id=mv.run_id,
        params=dict(run.data.params) if run else {},
        metrics=dict(run.data.metrics) if run else {},
        tags={**tags, **{k: v for k, v in mv.tags.items() if k in ("phase", "preset")}},
        data=_dataset(run) if run else {},
        git_commit=git_commit(tags),
        predict_params=_predict_params(settings.get("horizon") or 5),
    )


def _register(
    model_uri: str, name: str, tags: dict[str, Any], card: dict[str, Any]
) -> ModelVersion:
    """Register `model_uri` as a new version of `name`: tag it with `tags` (and the selection
    metric, see :func:`_tag_version`), describe it with its model card (:func:`version_card`)."""
    mv = mlflow.register_model(model_uri, name)
    client = MlflowClient()
    mv = _tag_version(client, name, str(mv.version), tags)
    client.update_model_version(name, str(mv.version), description=version_card(client, mv, card))
    return client.get_model_version(name, str(mv.version))


# -- promoting --------------------------------------------------------------------------------


def version_metric(client: MlflowClient, mv: ModelVersion, metric: str) -> float | None:
    """`metric` of a version: its tag, else its source run's metric; None when absent/non-finite."""
    if metric in mv.tags:
        return finite(mv.tags[metric])
    if mv.run_id:
        try:
            return finite(client.get_run(mv.run_id).data.metrics.get(metric))
        except MlflowException:
            return None
    return None


def _prefix(alias: str) -> str:
    return f"promotion.{alias}"


def promote(
    name: str = REGISTERED_MODEL,
    metric: str = "val_mse_filled_h5",
    alias: str = "champion",
    higher_is_better: bool = False,
    allow_loss: bool = False,
) -> tuple[ModelVersion, str]:
    """Point `alias` at the version of `name` with the best `metric`; return it and the reason.

    The metric is read from each version's tags, else from its source run. Versions without it
    are skipped. Ties keep the current holder of the alias, else the oldest version. The reason
    (metric, value, previous holder and its value) is written to the chosen version's tags
    `promotion.<alias>.*`; the replaced version gets `promotion.<alias>.replaced_by`. Calling
    again with nothing new registered changes nothing.

    A loss is a poor proxy for forecasting accuracy: a metric named like `*loss*` is refused
    unless `allow_loss`.
    """
    if "loss" in metric.lower() and not allow_loss:
        raise ValueError(
            f"{metric!r} looks like a loss; promote on a validation forecasting metric such as "
            "val_mse_h5 (or allow it: --allow-loss on the command line, allow_loss=True in Python)"
        )
    client = MlflowClient()
    scored = _scored_versions(client, name, metric)
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    held = next((v for mv, v in scored if mv.version == current.version), None) if current else None
    best, value = _best(scored, current, higher_is_better)
    word, direction = ("highest", "higher") if higher_is_better else ("lowest", "lower")
    measured = [v for _, v in scored if v is not None]
    skipped = sorted(int(mv.version) for mv, v in scored if v is None)
    among = f"of {len(measured)} version(s) with the metric" + (
        f"; skipped without it: {skipped}" if skipped else ""
    )
    p = _prefix(alias)
    if current is not None and current.version == best.version:
        reason = (
            f"version {best.version} stays @{alias}: {metric} = {value:.6g} is the {word} {among}"
        )
        if best.tags.get(f"{p}.metric") == metric:
            return best, reason
        previous, held = "none", None
    else:
        previous = str(current.version) if current is not None else "none"
        before = (
            "no previous holder"
            if current is None
            else f"previous: version {current.version} with {metric} = "
            + ("n/a" if held is None else f"{held:.6g}")
        )
        reason = (
            f"version {best.version} promoted to @{alias}: {metric} = {value:.6g} is the {word} "
            f"({direction} is better) {among}; {before}"
        )
        _move_alias(client, name, alias, best, current)
    record = {
        "metric": metric,
        "value": repr(value),
        "direction": direction,
        "previous_version": previous,
        "previous_value": "none" if held is None else repr(held),
        "reason": reason,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for key, text in record.items():
        client.set_model_version_tag(name, best.version, f"{p}.{key}", text)
    return client.get_model_version(name, best.version), reason


def _scored_versions(
    client: MlflowClient, name: str, metric: str
) -> list[tuple[ModelVersion, float | None]]:
    """Every version of `name` with its `metric` (None without it); an error when none has it."""
    escaped = name.replace("'", "\\'")
    versions = client.search_model_versions(f"name = '{escaped}'")
    if not versions:
        raise RegistryError(
            f"registered model {name!r} has no versions at {mlflow.get_registry_uri()}: "
            "log and register a forecaster first"
        )
    scored = [(mv, version_metric(client, mv, metric)) for mv in versions]
    if all(v is None for _, v in scored):
        raise RegistryError(
            f"none of the {len(versions)} versions of {name!r} has a finite {metric!r} "
            "(version tag or source-run metric)"
        )
    return scored


def _best(
    scored: list[tuple[ModelVersion, float | None]],
    current: ModelVersion | None,
    higher_is_better: bool,
) -> tuple[ModelVersion, float]:
    """The best measured version; ties keep the current holder, else the oldest version."""
    sign = -1.0 if higher_is_better else 1.0

    def rank(item: tuple[ModelVersion, float]) -> tuple[float, int, int]:
        mv, value = item
        is_current = current is not None and mv.version == current.version
        return (sign * value, 0 if is_current else 1, int(mv.version))

    return min(((mv, v) for mv, v in scored if v is not None), key=rank)


def _move_alias(
    client: MlflowClient, name: str, alias: str, best: ModelVersion, current: ModelVersion | None
) -> None:
    """`alias` to `best`; the replaced holder is tagged with what replaced it."""
    p = _prefix(alias)
    client.set_registered_model_alias(name, alias, best.version)
    if f"{p}.replaced_by" in best.tags:
        client.delete_model_version_tag(name, best.version, f"{p}.replaced_by")
    if current is not None:
        client.set_model_version_tag(name, current.version, f"{p}.replaced_by", str(best.version))
