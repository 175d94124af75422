"""A training request round-trips through the parameters a run logs (what a resume rebuilds)."""

from __future__ import annotations

from dataclasses import replace

from lvtrack.presets import get_preset
from lvtrack.request import TrainRequest


def _logged(params: dict) -> dict[str, str]:
    """As MLflow keeps them: text."""
    return {k: str(v) for k, v in params.items()}


def test_a_request_comes_back_from_its_logged_parameters():
    preset = get_preset(
        "qwen",
        eval_series=7,
        budget=3e16,
        lora_targets=("q_proj", "k_proj", "v_proj"),
        origins=(20, 76),
        forecast_every=250,
        lr=3.5e-4,
        rank=8,
        temperature=0.7,
        top_p=0.9,
        base_model="/m/q.gguf",
    )
    req = TrainRequest(preset, "final", "final seed 3", 1234, seed=3, evaluate_test=True)
    params = _logged(req.to_params())
    assert params["lora_targets"] == "q_proj,k_proj,v_proj" and params["origins"] == "20,76"
    assert params["evaluate_test"] == "True" and params["budget"] == "3e+16"
    assert params["eval_series"] == "7" and params["forecast_series"] == "7"  # cut by eval_series
    assert params["base_model"] == "/m/q.gguf" and params["eval_samples"] == "10"
    back = TrainRequest.from_params(params)
    assert back == req
    assert back.train_config() == req.train_config() and back.lora() == req.lora()
    assert back.origins() == (50, 20, 76)  # the headline first, then the others
    # The experiment's budget may change on a resume; nothing else does.
    assert TrainRequest.from_params(params, budget=5e16) == replace(
        req, preset=replace(req.preset, budget=5e16)
    )


def test_unset_values_round_trip_as_none():
    """A request whose steps the budget sets, scoring every series: None, logged as text."""
    req = TrainRequest(get_preset("tiny"), "final", "final", None, evaluate_test=True)
    params = _logged(req.to_params())
    assert params["steps"] == "None" and params["eval_series"] == "None"
    back = TrainRequest.from_params(params)
    assert back.steps is None and back.preset.eval_series is None and back == req


def test_only_a_run_that_scores_the_test_split_samples():
    """The preset's eval_samples is the final model's protocol; other runs score greedily."""
    preset = get_preset("tiny")
    assert preset.eval_samples == 10
    assert TrainRequest(preset, "sweep", "s", 5).eval_samples == 1
    assert TrainRequest(preset, "final", "f", 5, evaluate_test=True).eval_samples == 10
    assert TrainRequest(preset, "sweep", "s", 5).to_params()["eval_samples"] == 1


def test_a_run_logged_before_a_field_existed_takes_what_runs_had_then():
    req = TrainRequest(get_preset("qwen", top_p=0.5), "train", "t", 10, evaluate_test=True)
    assert req.preset.origins == (20, 50, 76)
    params = _logged(req.to_params())
    for newer in ("origins", "eval_samples", "top_p"):
        del params[newer]
    back = TrainRequest.from_params(params)
    assert back.preset.origins == (50,)  # scored at the headline origin only
    assert (back.eval_samples, back.preset.top_p) == (1, 1.0)


def test_from_preset_sets_the_phase_choice_on_the_preset():
    req = TrainRequest.from_preset(get_preset("micro"), "sweep", "s", 3, lr=0.01, rank=4, seed=2)
    assert (req.preset.lr, req.preset.rank, req.seed) == (0.01, 4, 2)
    assert req.train_config().lr == 0.01 and req.lora().rank == 4


def test_the_logged_values_come_back_as_they_are():
    """micro scores 8 series by its own eval_series without cutting its 64 validation-loss
    windows (the cut applies to an eval_series given on the command line): a resume must
    rebuild 64, not cut again."""
    req = TrainRequest(get_preset("micro"), "train", "t", 4)
    assert (req.preset.eval_series, req.preset.eval_windows) == (8, 64)
    back = TrainRequest.from_params(_logged(req.to_params()))
    assert back.preset.eval_windows == 64 and back == req
