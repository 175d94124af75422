"""A training request round-trips through the parameters a run logs (what a resume rebuilds)."""

from __future__ import annotations

from dataclasses import replace

from lvtrack.presets import get_preset
from lvtrack.request import TrainRequest


def _logged(params: dict) -> dict[str, str]:
    """As MLflow keeps them: text."""
    return {k: str(v) for k, v in params.items()}


def test_a_request_comes_back_from_its_logged_parameters():
    preset = replace(
        get_preset("qwen", eval_series=7),
        budget=3e16,
        lora_targets=("q_proj", "k_proj", "v_proj"),
        origins=(20, 76),
        forecast_every=250,
    )
    req = TrainRequest.from_preset(
        preset, "final", "final seed 3", 1234, lr=3.5e-4, rank=8, seed=3, evaluate_test=True,
        register=True, eval_samples=10, temperature=0.7, top_p=0.9, base_model="/m/q.gguf",
    )  # fmt: skip
    params = _logged(req.to_params())
    assert params["lora_targets"] == "q_proj,k_proj,v_proj" and params["origins"] == "20,76"
    assert params["evaluate_test"] == "True" and params["budget"] == "3e+16"
    back = TrainRequest.from_params(params)
    assert back == req
    assert back.train_config() == req.train_config() and back.lora() == req.lora()
    assert back.origins() == (50, 20, 76)  # the headline first, then the others
    # The experiment's budget may change on a resume; nothing else does.
    assert TrainRequest.from_params(params, budget=5e16) == replace(
        req, preset=replace(req.preset, budget=5e16)
    )


def test_a_run_logged_before_a_field_existed_takes_its_default():
    req = TrainRequest.from_preset(
        get_preset("qwen"), "train", "t", 10, evaluate_test=True, eval_samples=10, top_p=0.5
    )
    assert req.preset.origins == (20, 50, 76)
    params = _logged(req.to_params())
    for newer in ("origins", "eval_samples", "top_p"):
        del params[newer]
    back = TrainRequest.from_params(params)
    assert back.preset.origins == (50,)  # scored at the headline origin only
    assert (back.eval_samples, back.top_p) == (1, 1.0)
