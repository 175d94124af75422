"""The model card of a registered version (`lvtrack.describe.model_card`), built from known facts;
the registered card itself is checked in test_registry.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lvtrack import describe, registry

HUB_SETTINGS = {
    "base_spec": "Qwen/Qwen2.5-0.5B-Instruct",
    "base_kind": "hub",
    "base_revision": "7ae557604adf67be50417f59c2c2f167def9a775",
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_targets": ["q_proj", "v_proj"],
    "lm_head_bias": True,
    "context_length": 512,
    "horizon": 5,
}
CODEC = {"alpha": 0.8125, "decimals": 2, "time_sep": ";", "var_sep": ",", "n_vars": 2}
METRICS = {
    "val_mse_h5": 0.0121,
    "val_mae_h5": 0.0514,
    "val_mse_filled_h5": 0.0123,
    "val_mae_filled_h5": 0.0519,
    "val_crps_h5": 0.0311,
    "val_coverage80_h5": 0.775,
    "val_invalid_rate": 0.0,
    "test_mse_h5": 0.015,
    "test_mae_h5": 0.0625,
    "test_mse_filled_h5": 0.0152,
    "test_crps_h5": 0.0342,
    "test_coverage80_h5": 0.8125,
    "test_invalid_rate": 0.02,
    "flops_total": 9.91e16,
    "budget_share": 0.991,
    "flops_train": 9.8e16,
    "flops_eval": 1.1e15,
}
PARAMS = {
    "lr": "0.003",
    "steps": "2324",
    "batch_size": "4",
    "schedule": "cosine",
    "seed": "0",
    "budget": "1e+17",
}


def _card(**overrides: object) -> str:
    args: dict = {
        "run_id": "0123abcd",
        "params": PARAMS,
        "metrics": METRICS,
        "tags": {"phase": "final", "preset": "qwen"},
        "data": {"name": "lotka_volterra", "digest": "5f1c0ffee0ddba11", "source": "/d/lv.h5"},
        "git_commit": "d823c74deadbeef",
        "predict_params": {"horizon": 5, "num_samples": 20, "quantiles": [0.1, 0.5, 0.9]},
    }
    args.update(overrides)
    settings = args.pop("settings", HUB_SETTINGS)
    return describe.model_card("lv-forecaster", 7, settings, CODEC, **args)


def test_card_holds_every_field_with_its_value() -> None:
    card = _card()
    lines = set(card.splitlines())
    assert card.startswith(
        "**lv-forecaster version 7**: `Qwen/Qwen2.5-0.5B-Instruct` with a LoRA adapter of rank 16"
    )
    assert "Trained in run `0123abcd` (phase final, preset qwen)." in card
    # base model and its pin
    assert "- spec: `Qwen/Qwen2.5-0.5B-Instruct`" in lines
    assert "- revision: `7ae557604adf67be50417f59c2c2f167def9a775`" in lines
    assert any(line.startswith("- kind: hub (loads exactly this revision") for line in lines)
    # LoRA and training settings
    assert "- rank 16, alpha 32 (scaling 2)" in lines
    assert "- targets: q_proj, v_proj" in lines
    assert "- lm_head bias: trained" in lines
    assert "- context: 512 tokens" in lines
    assert "- training: lr 3e-3, steps 2,324, batch 4, schedule cosine, seed 0" in lines
    # data and codec
    assert "- data set `lotka_volterra`, digest `5f1c0ffee0ddba11`, from `/d/lv.h5`" in lines
    assert "- alpha 0.8125: values are divided by it before encoding" in lines
    assert "- 2 decimals; `,` between prey and predator, `;` between time steps" in lines
    # metrics: validation and test columns, every metric logged
    assert "### Metrics (horizon 5, original units)" in lines
    assert "| MSE | 0.0121 | 0.015 |" in lines
    assert "| MAE | 0.0514 | 0.0625 |" in lines
    assert "| MSE filled (invalid values as persistence) | 0.0123 | 0.0152 |" in lines
    assert "| MAE filled | 0.0519 | - |" in lines  # no test_mae_filled_h5: a dash, not 0
    assert "| CRPS | 0.0311 | 0.0342 |" in lines
    assert "| coverage of the 80% interval | 0.775 | 0.8125 |" in lines
    assert "| invalid values | 0.0% | 2.0% |" in lines
    # FLOPs, provenance, how to load and serve it
    assert "- FLOPs spent: 9.91e16 (99.1% of the 1e17 FLOPs budget)" in lines
    assert "- of which train 9.8e16, eval 1.1e15" in lines
    assert "- source run: `0123abcd`" in lines
    assert "- git commit: `d823c74deadbeef`" in lines
    assert 'model = mlflow.pyfunc.load_model("models:/lv-forecaster/7")  # this version' in lines
    assert (
        '# model = mlflow.pyfunc.load_model("models:/lv-forecaster@champion")  # the champion'
        in (lines)
    )
    assert (
        'forecast = model.predict(history, params={"horizon": 5, "num_samples": 20, '
        '"quantiles": [0.1, 0.5, 0.9]})'
    ) in lines
    assert "mlflow models serve -m models:/lv-forecaster@champion --env-manager local" in lines
    assert '"params": {"horizon": 5, "num_samples": 20, "quantiles": [0.1, 0.5, 0.9]}' in card
    assert len(card) < describe.MAX_CARD_CHARS


def test_card_of_a_digest_pinned_base_without_run_facts() -> None:
    """A GGUF base is named by its digest; facts the source run did not log say so, not zero."""
    settings = {
        "base_spec": "/models/qwen.gguf",
        "base_kind": "gguf",
        "base_digest": "sha256:ab12",
        "lora_rank": 4,
        "lora_targets": ["q_proj"],
        "lm_head_bias": False,
        "horizon": 3,
    }
    card = _card(
        settings=settings, run_id=None, params={}, metrics={}, tags={}, data={}, predict_params={}
    )
    lines = set(card.splitlines())
    assert "- digest: `sha256:ab12`" in lines and "revision" not in card
    assert any(line.startswith("- kind: gguf (referenced, not copied") for line in lines)
    assert "- rank 4, alpha 4" in lines  # alpha unknown: alpha = rank, PEFT's default here
    assert "- lm_head bias: not trained" in lines
    assert "- data set: not recorded by the source run" in lines
    assert "No validation or test metrics were logged by the source run." in lines
    assert "- FLOPs spent: not recorded by the source run" in lines
    assert "No source run recorded." in card and "- source run: none" in lines
    assert 'params={"horizon": 3})' in card and "quantiles" not in card
    assert "### Metrics (horizon 3, original units)" in lines


def test_card_stays_within_the_registry_limit() -> None:
    settings = {**HUB_SETTINGS, "base_spec": "/" + "very-long-folder/" * 400}
    card = _card(settings=settings)
    assert len(card) <= describe.MAX_CARD_CHARS
    assert card.endswith("... (truncated)\n")


def test_number_formats() -> None:
    assert describe.number(0.0123) == "0.0123"
    assert describe.number(1.2e-05) == "1.2e-5"
    assert describe.number(float("nan")) == "n/a"
    assert describe.sci(0.003, 2) == "3e-3" and describe.sci(1.5e-4, 2) == "1.5e-4"
    assert describe.sci(9.912e16) == "9.91e16" and describe.sci(1e17) == "1e17"
    assert describe.percent(0.991) == "99.1%" and describe.percent(4e-5) == "0.004%"
    assert describe.percent(0.0) == "0.0%"
    assert describe.metric_label("val_mse_filled_h5") == "val MSE h5"
    assert describe.metric_label("test_crps_h10") == "test CRPS h10"
    assert describe.metric_label("flops_total") == "flops_total"


def test_git_commit_from_the_run_else_the_checkout_else_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert registry.git_commit({"mlflow.source.git.commit": "abc123"}) == "abc123"
    here = subprocess.run(
        ["git", "-C", str(Path(registry.__file__).parent), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if here.returncode == 0:
        assert registry.git_commit({}) == here.stdout.strip()

    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(registry.subprocess, "run", no_git)
    assert registry.git_commit({}) == "unknown"
