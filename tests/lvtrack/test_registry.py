"""Registry: log the pyfunc forecaster, register versions (model card, few tags), promote the best,
load it back; bases pinned by reference (hub id + revision from a fake HF cache, local folder +
digest, GGUF)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from mlflow.exceptions import MlflowException
from safetensors.torch import load_file

from lvdata import LLMTimeCodec
from lvmodel.base import BaseModelError, pin_base
from lvmodel.lora import LoraSettings, apply_lora, save_adapter
from lvmodel.tiny import random_tiny
from lvtrack import registry
from lvtrack.tracking import log_dataset
from projects import promote as promote_cli
from tests.hfcache import add_snapshot, commit_hash, repo_folder, use_hf_cache

NAME = registry.REGISTERED_MODEL
CODEC = LLMTimeCodec(alpha=0.6)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run much faster on one thread, above all on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def store(tracking_uri: str) -> Iterator[str]:
    """The temporary tracking store, also set as MLflow's current URI and experiment (undone after).

    `mlflow.set_tracking_uri` and `mlflow.set_experiment` are process-global: set both here so that
    a store or experiment left behind by another test is never used, and unset the URI after.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("registry-tests")
    yield tracking_uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base folder, adapter folder): random tiny base and an untrained rank-2 LoRA on it."""
    root = tmp_path_factory.mktemp("tiny")
    model, tok = random_tiny(0)
    registry.save_base(model, tok, root / "base")
    settings = LoraSettings(rank=2)
    save_adapter(apply_lora(model, settings), root / "adapter", settings)
    return root / "base", root / "adapter"


#: The tags of a registered version, besides `promotion.*`: what identifies it, and the metric
#: that promotes it. Everything else is in the model card (the version's description).
VERSION_TAG_KEYS = {
    "phase", "preset", "base_spec", "base_kind", "lora_rank", "context_length", "val_mse_filled_h5",
}  # fmt: skip
DATA = np.linspace(0.5, 1.5, 2 * 10 * 2, dtype=np.float32).reshape(2, 10, 2)


def _log_version(
    adapter: Path, base: Path, val_mse: float, validate: bool = False
) -> mlflow.entities.model_registry.ModelVersion:
    """A version whose source run holds what a final run logs (metrics, FLOPs, data set)."""
    with mlflow.start_run():
        mlflow.log_metrics(
            {
                "val_mse_filled_h5": val_mse,
                "val_mse_h5": val_mse,
                "val_mae_h5": 0.125,
                "test_mse_h5": 0.0375,
                "test_crps_h5": 0.0625,
                "flops_total": 1.5e12,
                "budget_share": 0.015,
                "steps_run": 40.0,
            }
        )
        mlflow.log_params({"lr": 0.003, "budget": 1e14, "steps": 40})
        log_dataset(DATA, base / "config.json", name="lotka_volterra", context="training")
        info = registry.log_forecaster(
            adapter_dir=adapter,
            codec=CODEC,
            base_spec=str(base),
            settings={"context_length": 256},
            registered_model_name=NAME,
            tags={"phase": "final", "preset": "micro"},
            validate=validate,
        )
    return mlflow.MlflowClient().get_model_version(NAME, str(info.registered_model_version))


def _tags(mv: mlflow.entities.model_registry.ModelVersion) -> set[str]:
    return {k for k in mv.tags if not k.startswith("promotion.")}


def test_save_base_strips_lora_and_head_bias(tmp_path: Path) -> None:
    model, tok = random_tiny(0)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    peft = apply_lora(model, LoraSettings(rank=2, lm_head_bias=True))
    registry.save_base(peft, tok, tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in saved)
    assert "lm_head.bias" not in saved
    for key, value in saved.items():
        torch.testing.assert_close(value, original[key])
    assert (tmp_path / "tokenizer.json").is_file()


REPO = "lv-tests/tiny-qwen"
REV_A, REV_B = commit_hash("a"), commit_hash("b")


def test_stage_base_pins_references_and_bundles_tiny(
    tmp_path: Path, tiny_adapter: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = tiny_adapter
    cache = use_hf_cache(monkeypatch, tmp_path / "hf-cache")
    add_snapshot(cache, REPO, base, REV_A)
    for name in ("hub", "local", "gguf", "tiny"):
        (tmp_path / name).mkdir()
    path, info = registry.stage_base(REPO, None, None, tmp_path / "hub")
    assert path.name == registry.BASE_REF_FILE
    ref = json.loads(path.read_text())
    assert {k: ref[k] for k in ("kind", "spec", "revision")} == {
        "kind": "hub",
        "spec": REPO,
        "revision": REV_A,
    }
    assert info == {"base_spec": REPO, "base_kind": "hub", "base_revision": REV_A}

    path, info = registry.stage_base(str(base), None, None, tmp_path / "local")
    ref = json.loads(path.read_text())
    assert ref["kind"] == "local" and ref["spec"] == str(base.resolve())
    assert ref["digest"] == pin_base(str(base))["digest"] == info["base_digest"]
    assert "model.safetensors" in ref["files"] and "not copied" in ref["note"]

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF not really")
    path, info = registry.stage_base(str(gguf), None, None, tmp_path / "gguf")
    ref = json.loads(path.read_text())
    assert (ref["kind"], ref["spec"], ref["size"]) == ("gguf", str(gguf.resolve()), 15)
    assert info["base_digest"] == f"sha256:{ref['sha256']}"
    with pytest.raises(BaseModelError, match="GGUF file not found"):
        registry.stage_base(str(tmp_path / "missing.gguf"), None, None, tmp_path)
    with pytest.raises(BaseModelError, match="not in the local Hugging Face cache"):
        registry.stage_base("lv-tests/not-cached", None, None, tmp_path)

    import lvmodel.tiny

    monkeypatch.setattr(lvmodel.tiny, "ensure_tiny_base", lambda: base)
    path, info = registry.stage_base("tiny", None, None, tmp_path / "tiny")
    assert path.is_dir() and info["base_kind"] == "tiny"  # bundled: a fresh clone loads it
    assert (path / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()


def _model_files(uri: str, dst: Path) -> dict[str, int]:
    """Every file of a logged model, relative path -> size in bytes."""
    root = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst)))
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _no_base_weights(files: dict[str, int], base: Path) -> None:
    weights = [
        f for f in files if f.endswith(".safetensors") and not f.startswith("artifacts/adapter")
    ]
    assert weights == []
    assert sum(files.values()) < (base / "model.safetensors").stat().st_size / 2


def test_hub_version_pins_the_revision_holds_no_weights_and_loads_it(
    store: str, tiny_adapter: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, adapter = tiny_adapter
    cache = use_hf_cache(monkeypatch, tmp_path / "hf-cache")
    add_snapshot(cache, REPO, base, REV_A)
    with mlflow.start_run():  # validates by default: MLflow loads it from the cache, predicts
        info = registry.log_forecaster(
            adapter_dir=adapter, codec=CODEC, base_spec=REPO, registered_model_name=NAME
        )
    uri = f"models:/{NAME}/{info.registered_model_version}"
    files = _model_files(uri, tmp_path / "download")
    ref = json.loads((tmp_path / "download" / "artifacts" / registry.BASE_REF_FILE).read_text())
    assert (ref["kind"], ref["spec"], ref["revision"]) == ("hub", REPO, REV_A)
    _no_base_weights(files, base)
    mv = mlflow.MlflowClient().get_model_version(NAME, str(info.registered_model_version))
    assert (mv.tags["base_kind"], mv.tags["base_spec"]) == ("hub", REPO)
    assert "base_revision" not in mv.tags  # in the card, not a tag
    assert f"- revision: `{REV_A}`" in mv.description and "- kind: hub" in mv.description
    assert mlflow.get_logged_model(info.model_id).tags["base_revision"] == REV_A

    out = mlflow.pyfunc.load_model(uri).predict(GOOD, params={"horizon": 2})
    assert len(out["prey"][0]) == 2

    # A newer snapshot becomes `main` and the pinned one goes: the version still wants its own.
    other = tmp_path / "other"
    model, tok = random_tiny(1)
    registry.save_base(model, tok, other)
    add_snapshot(cache, REPO, other, REV_B)
    shutil.rmtree(repo_folder(cache, REPO) / "snapshots" / REV_A)
    with pytest.raises(BaseModelError) as err:
        mlflow.pyfunc.load_model(uri)
    message = str(err.value)
    assert f"{REPO!r} at revision {REV_A} is not in the local Hugging Face cache" in message
    assert f"cached revisions of it: {REV_B}" in message
    assert f"hf download {REPO} --revision {REV_A}" in message


def test_local_folder_version_holds_no_weights_and_checks_the_folder(
    store: str, tiny_adapter: tuple[Path, Path], tmp_path: Path
) -> None:
    base, adapter = tiny_adapter
    folder = tmp_path / "my-base"
    shutil.copytree(base, folder)
    with mlflow.start_run():
        info = registry.log_forecaster(
            adapter_dir=adapter, codec=CODEC, base_spec=str(folder), registered_model_name=NAME
        )
    uri = f"models:/{NAME}/{info.registered_model_version}"
    files = _model_files(uri, tmp_path / "download")
    ref = json.loads((tmp_path / "download" / "artifacts" / registry.BASE_REF_FILE).read_text())
    assert (ref["kind"], ref["spec"]) == ("local", str(folder.resolve()))
    assert ref["digest"] == pin_base(str(base))["digest"]  # same files, same digest
    _no_base_weights(files, base)
    out = mlflow.pyfunc.load_model(uri).predict(GOOD, params={"horizon": 2})
    assert len(out["predator"][0]) == 2

    model, _ = random_tiny(1)  # other weights, same shapes: the adapter would load silently
    model.save_pretrained(tmp_path / "other")
    shutil.copyfile(tmp_path / "other" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(BaseModelError) as err:
        mlflow.pyfunc.load_model(uri)
    message = str(err.value)
    assert f"base model folder {folder.resolve()}" in message and "has changed" in message
    assert "model.safetensors changed content" in message and registry.BASE_REF_FILE in message
    assert "register a new version" in message

    shutil.rmtree(folder)
    with pytest.raises(BaseModelError, match="does not exist on this machine"):
        mlflow.pyfunc.load_model(uri)


def test_unloadable_base_fails_registration(
    store: str, tiny_adapter: tuple[Path, Path], tmp_path: Path
) -> None:
    """A GGUF reference that cannot load (before, GGUF and hub bases were never tried)."""
    _, adapter = tiny_adapter
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file")
    with mlflow.start_run(), pytest.raises(registry.RegistryError) as err:
        registry.log_forecaster(
            adapter_dir=adapter, codec=CODEC, base_spec=str(bad), registered_model_name=NAME
        )
    message = str(err.value)
    assert "could not be loaded and used to forecast, so it was not registered" in message
    assert str(bad) in message and "GGUF" in message
    client = mlflow.MlflowClient()
    assert client.search_model_versions(f"name = '{NAME}'") == []
    assert mlflow.search_logged_models(output_format="list") == []  # deleted again
    with mlflow.start_run():  # the same without validation registers: the check is what catches it
        info = registry.log_forecaster(
            adapter_dir=adapter,
            codec=CODEC,
            base_spec=str(bad),
            registered_model_name=NAME,
            validate=False,
        )
    assert info.registered_model_version == 1


def test_signature_and_requirements() -> None:
    sig = registry.forecaster_signature()
    assert sig.inputs.input_names() == ["prey", "predator"]
    assert {p.name: p.default for p in sig.params.params} == {
        "horizon": 5,
        "num_samples": 1,
        "temperature": 1.0,
        "top_p": 1.0,
        "quantiles": [],
    }
    assert sorted(Path(p).name for p in registry.code_paths()) == ["lvdata", "lvflops", "lvmodel"]


def test_requirements_pin_what_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each runtime dependency is pinned to the installed version without its local label (a CUDA
    or CPU build of torch installs from the index by its public version); one that is not
    installed stays unpinned, and extra ones (gguf for a GGUF base) are added."""
    installed = {"torch": "2.13.0+cpu", "mlflow": "3.17.2", "gguf": "0.19.0"}

    def fake_version(dist: str) -> str:
        if dist not in installed:
            raise registry.PackageNotFoundError(dist)
        return installed[dist]

    monkeypatch.setattr(registry, "version", fake_version)
    reqs = registry.pip_requirements(("gguf",))
    assert reqs[: len(registry.REQUIREMENTS)][:2] == ["mlflow==3.17.2", "torch==2.13.0"]
    assert "transformers" in reqs and "peft" in reqs  # not installed (here): left unpinned
    assert reqs[-1] == "gguf==0.19.0"
    assert len(reqs) == len(registry.REQUIREMENTS) + 1


def test_register_promote_and_load_in_fresh_process(
    store: str, tiny_adapter: tuple[Path, Path], tmp_path: Path
) -> None:
    base, adapter = tiny_adapter
    v1 = _log_version(adapter, base, 0.02, validate=True)  # validate: MLflow predicts the example
    assert _tags(v1) == VERSION_TAG_KEYS  # no copies of the run's ~30 metrics
    assert v1.tags["val_mse_filled_h5"] == "0.02"  # the selection metric, from the run
    assert (v1.tags["phase"], v1.tags["preset"], v1.tags["lora_rank"]) == ("final", "micro", "2")
    assert (v1.tags["base_kind"], v1.tags["context_length"]) == ("local", "256")

    mv, reason = registry.promote(NAME)  # on val_mse_filled_h5
    assert mv.version == v1.version and "no previous holder" in reason

    v2 = _log_version(adapter, base, 0.01)
    # promote reads the tags first: a later value on the source run does not change the choice
    mlflow.MlflowClient().log_metric(v2.run_id, "val_mse_filled_h5", 0.9)
    mv, reason = registry.promote(NAME)
    assert mv.version == v2.version
    assert "val_mse_filled_h5 = 0.01" in reason
    assert f"version {v1.version}" in reason and "0.02" in reason
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(NAME, "champion").version == v2.version
    tags = client.get_model_version(NAME, v2.version).tags
    assert tags["promotion.champion.reason"] == reason
    assert tags["promotion.champion.previous_version"] == str(v1.version)
    assert float(tags["promotion.champion.previous_value"]) == 0.02
    replaced = client.get_model_version(NAME, v1.version).tags["promotion.champion.replaced_by"]
    assert replaced == str(v2.version)

    # idempotent: nothing new, nothing changes
    again, why = registry.promote(NAME)
    assert again.version == v2.version and "stays" in why
    assert client.get_model_version(NAME, v2.version).tags == tags

    # a worse version does not take the alias; higher_is_better flips the choice
    _log_version(adapter, base, 0.5)
    assert registry.promote(NAME)[0].version == v2.version
    assert registry.promote(NAME, alias="worst", higher_is_better=True)[0].version == 3
    # the source run's metric still serves a version registered without the tag
    assert registry.promote(NAME, "val_mse_h5")[0].version == v2.version

    script = textwrap.dedent(
        """
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/lv-forecaster@champion")
        df = pd.DataFrame({
            "prey": [[1.0, 0.93, 0.87, 0.8], [2.5, 2.1, 1.8]],
            "predator": [[0.5, 0.52, 0.56, 0.61], [1.2, 1.3, 1.35]],
        })
        out = model.predict(df, params={"horizon": 3})
        import lvmodel
        print(json.dumps({"columns": list(out.columns), "rows": out.to_dict("records"),
                          "lvmodel": lvmodel.__file__}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MLFLOW_TRACKING_URI=store, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["columns"] == ["prey", "predator"]
    assert len(result["rows"]) == 2
    for row in result["rows"]:
        for col in ("prey", "predator"):
            assert len(row[col]) == 3 and np.isfinite(row[col]).all()
    # the model brings its own copy of the libraries (code_paths), ahead of installed ones
    assert f"{os.sep}code{os.sep}lvmodel{os.sep}" in result["lvmodel"]


def _git_head() -> str | None:
    out = subprocess.run(
        ["git", "-C", str(Path(registry.__file__).parent), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def test_registered_version_carries_its_model_card(
    store: str, tiny_adapter: tuple[Path, Path]
) -> None:
    """The version's description is its model card, with the figures of its source run; the
    card's own predict example runs against it."""
    from lvmodel.lora import adapter_settings
    from lvtrack.tracking import array_digest

    base, adapter = tiny_adapter
    mv = _log_version(adapter, base, 0.02)
    card = mv.description
    lora = adapter_settings(adapter)
    assert card.startswith(f"**{NAME} version {mv.version}**")
    assert f"- spec: `{base.resolve()}`" in card and "- kind: local" in card
    assert f"- digest: `{pin_base(str(base))['digest']}`" in card
    assert f"- rank 2, alpha {lora.lora_alpha} (scaling 1)" in card
    assert "- targets: q_proj, v_proj" in card and "- lm_head bias: trained" in card
    assert "- context: 256 tokens" in card and "- training: lr 3e-3, steps 40" in card
    assert f"digest `{array_digest(DATA)}`" in card  # the source run's data set
    assert "- alpha 0.6: values are divided" in card
    assert "- 2 decimals; `,` between prey and predator, `;` between time steps" in card
    assert "| MSE | 0.02 | 0.0375 |" in card and "| MAE | 0.125 | - |" in card
    assert "| MSE filled (invalid values as persistence) | 0.02 | - |" in card
    assert "| CRPS | - | 0.0625 |" in card
    assert "- FLOPs spent: 1.5e12 (1.5% of the 1e14 FLOPs budget)" in card
    assert f"- source run: `{mv.run_id}`" in card and "(phase final, preset micro)" in card
    head = _git_head()
    assert f"- git commit: `{head or 'unknown'}`" in card
    assert f'mlflow.pyfunc.load_model("models:/{NAME}/{mv.version}")' in card
    assert f'mlflow.pyfunc.load_model("models:/{NAME}@champion")' in card
    assert f"mlflow models serve -m models:/{NAME}@champion --env-manager local" in card
    assert len(card) < 5000  # MLflow's VARCHAR(5000) for a version's description

    example = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert '"horizon": 5, "num_samples": 20, "quantiles": [0.1, 0.5, 0.9]' in example
    namespace: dict = {}
    exec(compile(example, "model card", "exec"), namespace)  # the card's own example
    forecast = namespace["forecast"]
    assert {"prey", "predator", "prey_quantiles", "predator_quantiles"} <= set(forecast.columns)
    assert len(forecast["prey"][0]) == 5
    assert np.asarray(forecast["prey_quantiles"][0]).shape == (5, 3)


def test_promote_refuses_a_loss() -> None:
    with pytest.raises(ValueError, match="looks like a loss"):
        registry.promote(NAME, "val_loss")


def test_promote_cli(store: str, tiny_adapter: tuple[Path, Path]) -> None:
    with pytest.raises(registry.RegistryError, match="no versions"):
        registry.promote(NAME, "val_mse_h5")
    runner = CliRunner()
    empty = runner.invoke(promote_cli.main, ["--name", NAME, "--metric", "val_mse_h5"])
    assert empty.exit_code == 1
    assert "no versions" in empty.output

    base, adapter = tiny_adapter
    v1 = _log_version(adapter, base, 0.03)
    ok = runner.invoke(promote_cli.main, ["--name", NAME, "--metric", "val_mse_h5"])
    assert ok.exit_code == 0, ok.output
    assert f"version {v1.version} promoted to @champion" in ok.output
    run = mlflow.search_runs(filter_string="tags.phase = 'promote'", output_format="list")
    done = next(r for r in run if r.info.status == "FINISHED")
    assert done.data.params["metric"] == "val_mse_h5"
    assert done.data.tags["promoted_version"] == str(v1.version)
    assert done.data.tags["promotion_moved"] == "true"
    assert done.data.metrics["champion_val_mse_h5"] == pytest.approx(0.03)
    assert done.data.tags["mlflow.note.content"] == (
        f"promote · version {v1.version} @champion · val MSE h5 0.03 · no previous holder"
    )


# -- bad input ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(
    tmp_path_factory: pytest.TempPathFactory, tiny_adapter: tuple[Path, Path]
) -> mlflow.pyfunc.PyFuncModel:
    """The forecaster logged to a throwaway store and loaded in this process."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.set_experiment("registry-tests")
            base, adapter = tiny_adapter
            info = registry.log_forecaster(
                adapter_dir=adapter, codec=CODEC, base_spec=str(base), validate=False
            )
            model = mlflow.pyfunc.load_model(info.model_uri)
        finally:
            mlflow.set_tracking_uri(None)
    return model


def _frame(prey: list, predator: list) -> pd.DataFrame:
    return pd.DataFrame({"prey": prey, "predator": predator})


GOOD = _frame([[1.0, 0.9, 0.8]], [[0.5, 0.6, 0.7]])


@pytest.mark.parametrize(
    ("frame", "params", "message"),
    [
        (pd.DataFrame({"prey": [[1.0, 0.9]]}), {}, "missing inputs ['predator']"),
        (_frame([[1.0, 0.9, 0.8]], [[0.5, 0.6]]), {}, "row 0, fields 'prey' and 'predator'"),
        (_frame([[1.0, 0.9], [1.0]], [[0.5, 0.6], [0.5]]), {}, "row 1, fields 'prey' and 'pred"),
        (_frame([[1.0, float("nan")]], [[0.5, 0.6]]), {}, "row 0, field 'prey': value at step 1"),
        (_frame([[1.0, 2.0]], [[0.5, float("inf")]]), {}, "row 0, field 'predator'"),
        (_frame([[1.0, 0.5], [1.5, 2.5]], [[0.5, 0.4], [1.0, -2.0]]), {}, "row 1, field 'pred"),
        (_frame([], []), {}, "input is empty"),
        (GOOD, {"horizon": 0}, "parameter 'horizon' must be between 1"),
        (GOOD, {"horizon": 2.5}, "horizon"),
        (GOOD, {"horizon": "three"}, "horizon"),
        (GOOD, {"num_samples": 0}, "parameter 'num_samples' must be between 1"),
        (GOOD, {"num_samples": 3, "quantiles": [0.1, 1.2]}, "entry 1 (1.2) is outside (0, 1)"),
        (GOOD, {"num_samples": 3, "quantiles": [-0.5]}, "entry 0 (-0.5) is outside (0, 1)"),
        (GOOD, {"num_samples": 3, "quantiles": ["x"]}, "quantiles"),
        (GOOD, {"num_samples": 3, "quantiles": [0.5, 0.5]}, "repeats a level"),
        (GOOD, {"quantiles": [0.5]}, "ask for num_samples >= 2"),
        (GOOD, {"num_samples": 3, "temperature": 0.0}, "parameter 'temperature' must be > 0"),
        (GOOD, {"num_samples": 3, "top_p": 1.5}, "parameter 'top_p' must be in (0, 1]"),
    ],
    ids=[
        "missing-column",
        "unequal-lengths",
        "too-short",
        "nan",
        "inf",
        "negative",
        "empty",
        "horizon-0",
        "horizon-float",
        "horizon-str",
        "num-samples-0",
        "quantile-above-1",
        "quantile-negative",
        "quantile-not-a-number",
        "quantile-repeated",
        "quantiles-greedy",
        "temperature-0",
        "top-p-above-1",
    ],
)
def test_bad_input_is_a_clear_invalid_parameter_error(
    loaded: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame, params: dict, message: str
) -> None:
    with pytest.raises(MlflowException) as err:
        loaded.predict(frame, params=params)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert err.value.get_http_status_code() == 400
    assert message in err.value.message


def test_in_process_predict_shapes(loaded: mlflow.pyfunc.PyFuncModel) -> None:
    out = loaded.predict(
        _frame([[1.0, 0.9, 0.8], [2.0, 1.9]], [[0.5, 0.6, 0.7], [1.0, 1.1]]), params={"horizon": 2}
    )
    assert list(out.columns) == ["prey", "predator"]
    assert [len(v) for v in out["prey"]] == [2, 2]
    default = loaded.predict(GOOD)  # horizon defaults to the signature's 5
    assert len(default["predator"][0]) == 5
    assert list(default.columns) == ["prey", "predator"]  # no quantiles unless asked for


def test_in_process_quantiles(loaded: mlflow.pyfunc.PyFuncModel) -> None:
    frame = _frame([[1.0, 0.9, 0.8], [2.0, 1.9]], [[0.5, 0.6, 0.7], [1.0, 1.1]])
    params = {"horizon": 3, "num_samples": 5, "quantiles": [0.9, 0.1, 0.5]}
    out = loaded.predict(frame, params=params)
    assert list(out.columns) == [
        "prey",
        "predator",
        "prey_quantiles",
        "predator_quantiles",
        "quantiles",
    ]
    for r in range(2):
        assert out["quantiles"][r] == [0.1, 0.5, 0.9]  # sorted
        for name in ("prey", "predator"):
            bands = np.asarray(out[f"{name}_quantiles"][r])
            assert bands.shape == (3, 3)
            assert np.all(np.diff(bands, axis=1) >= 0)  # 0.1 <= 0.5 <= 0.9
            np.testing.assert_allclose(bands[:, 1], out[name][r])  # the median is the forecast
    again = loaded.predict(frame, params=params)  # seeded: the same request, the same answer
    assert again["prey_quantiles"].tolist() == out["prey_quantiles"].tolist()
