"""WSD rungs: the stable phase continues exactly across rungs, each rung is scored on a decay
branched from it, and the FLOPs add up to the stable run plus its branches."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lvflops import eval_flops, train_step_flops
from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings, trainable_state
from lvmodel.run_plan import forecast_bound
from lvmodel.rungs import WsdRungs, decay_steps_for
from lvmodel.tiny_tokenizer import build_tiny_tokenizer
from lvmodel.train import fit
from tests.lvmodel._toy import TOY_SHAPE, toy_model

LORA = LoraSettings(rank=2)
SHAPE = TOY_SHAPE


def _model() -> torch.nn.Module:
    return toy_model(LORA)


CONFIG = TrainConfig(
    lr=5e-3,
    batch_size=2,
    context_length=64,
    warmup_steps=2,
    eval_windows=4,
    forecast_series=2,
    forecast_history=20,
    forecast_horizon=2,
    seed=3,
)


def test_decay_steps_are_a_share_of_the_stable_phase():
    assert decay_steps_for(10, 0.2) == 2
    assert decay_steps_for(12, 0.2) == 2  # 2.4 rounds down
    assert decay_steps_for(13, 0.2) == 3  # 2.6 rounds up
    assert decay_steps_for(2, 0.2) == 1  # at least one


def test_rungs_continue_the_stable_phase_and_score_decayed_branches(toy_data, tmp_path):
    train, val, codec = toy_data
    tok = build_tiny_tokenizer()
    model = _model()
    shapes: list[tuple[int, int]] = []  # (batch, length) of every training forward

    def spy(module, args, kwargs):
        if module.training:
            shapes.append(tuple(kwargs["input_ids"].shape))

    model.get_base_model().model.register_forward_pre_hook(spy, with_kwargs=True)  # the decoder
    seen: list[tuple[int, dict]] = []
    rungs = WsdRungs(
        model,
        tok,
        codec,
        train,
        val,
        CONFIG,
        LORA,
        tmp_path,
        decay_fraction=0.25,
        on_metrics=seen.extend,
    )
    first = rungs.rung(4)
    trained_first = len(shapes)
    second = rungs.rung(8)
    assert (first.stable_steps, first.decay_steps) == (4, 1)
    assert (second.stable_steps, second.decay_steps) == (8, 2)
    # The stable phase is reported step by step (1..8, once each: branches are not).
    assert [s for s, _ in seen] == list(range(1, 9))
    assert {m["lr"] for s, m in seen if s > 2} == {5e-3}  # constant after the 2 warmup steps
    # Each branch decays the lr linearly to 0 and ends with the forecasting metric.
    lrs = [row["lr"] for row in second.branch.history if row["step"] > 8]
    assert lrs == pytest.approx([5e-3, 2.5e-3])
    assert {"val_loss", "val_mse_filled"} <= set(second.metrics)
    assert second.branch.steps == 10

    # The stable phase at rung 1 is exactly one 8-step constant run: a promoted trial continues
    # its stable phase, it does not restart it nor carry the decayed weights on.
    reference = _model()
    fit(
        reference,
        tok,
        codec,
        train,
        val,
        replace(CONFIG, steps=8, schedule="constant", eval_every=0, forecast_series=0),
        LORA,
        progress=False,
    )
    stable = trainable_state(_loaded(second.stable_checkpoint))
    for name, tensor in trainable_state(reference).items():
        torch.testing.assert_close(stable[name], tensor, rtol=0, atol=0)

    # FLOPs, by hand from lvflops: every training forward the model ran (4 + 1 steps, then
    # 4 + 2; the shape of each as run), and each branch's evaluation: the validation loss over
    # at most 4 windows of 64 tokens, and forecasts of 2 series below their bound.
    kw = LORA.flops_kwargs()
    assert len(shapes) == 4 + 1 + 4 + 2
    steps = [train_step_flops(SHAPE, n, b, **kw).total for b, n in shapes]
    loss = eval_flops(SHAPE, 64, 4, **kw).total
    bound = forecast_bound(SHAPE, 2, 64, 2, codec.decimals, LORA)
    for r in (first, second):
        assert 0 < r.branch.eval_flops <= loss + bound
    assert first.flops == sum(steps[:trained_first]) + first.branch.eval_flops
    assert second.flops == sum(steps[trained_first:]) + second.branch.eval_flops
    assert second.total_flops == first.flops + second.flops == rungs.total_flops


def _loaded(checkpoint: str) -> torch.nn.Module:
    """A fresh model with a checkpoint's trainable tensors."""
    from safetensors.torch import load_file

    from lvmodel.lora import load_trainable_state

    model = _model()
    load_trainable_state(model, load_file(f"{checkpoint}/trainable.safetensors"))
    return model


def test_a_rung_must_grow_the_stable_phase(toy_data, tmp_path):
    train, val, codec = toy_data
    rungs = WsdRungs(_model(), build_tiny_tokenizer(), codec, train, val, CONFIG, LORA, tmp_path)
    with pytest.raises(ValueError, match="more than 2 stable steps"):
        rungs.rung(2)  # not past the warmup
    rungs.rung(3)
    with pytest.raises(ValueError, match="more than 3 stable steps"):
        rungs.rung(3)


def test_the_windows_are_tokenized_once_for_every_segment(toy_data, tmp_path, monkeypatch):
    """A trial fits twice per rung on the same windows: they are built once (tokenizing the
    training split is seconds of set-up per `fit` call), and windows of another context are
    refused rather than trained on."""
    import lvdata

    train, val, codec = toy_data
    tok = build_tiny_tokenizer()
    contexts: list[int] = []
    real = lvdata.make_windows

    def counting(texts, tokenizer, context_length, *args, **kwargs):
        contexts.append(context_length)
        return real(texts, tokenizer, context_length, *args, **kwargs)

    monkeypatch.setattr(lvdata, "make_windows", counting)
    rungs = WsdRungs(_model(), tok, codec, train, val, CONFIG, LORA, tmp_path / "a")
    rungs.rung(4)
    rungs.rung(8)  # four `fit` calls
    assert contexts == [64, 64]  # the training split and the validation split, once each
    other = replace(CONFIG, context_length=32, steps=4)
    with pytest.raises(ValueError, match=r"windows built for .*\(64, None, 4\).*\(32, None, 4\)"):
        fit(_model(), tok, codec, train, val, other, LORA, data=rungs.data, progress=False)


def test_rungs_scored_by_nll_forward_once_and_generate_nothing(toy_data, tmp_path, monkeypatch):
    """With `score="nll"` a branch ends with the validation loss and NLL/D of the forecasting
    subset, computed by `lvmodel.nll` (no generation), and its FLOPs are charged to the rung."""
    import lvmodel.forecast
    from lvmodel.nll import nll_per_dim
    from lvmodel.run_plan import nll_bound
    from lvmodel.rungs import NLL_METRIC

    def no_generation(*args, **kwargs):
        raise AssertionError("an NLL-scored rung must not forecast")

    monkeypatch.setattr(lvmodel.forecast, "forecast", no_generation)
    train, val, codec = toy_data
    tok = build_tiny_tokenizer()
    model = _model()
    rungs = WsdRungs(model, tok, codec, train, val, CONFIG, LORA, tmp_path, score="nll")
    first = rungs.rung(4)
    assert NLL_METRIC in first.metrics and "val_mse_filled" not in first.metrics
    again = nll_per_dim(model, tok, codec, val[:2], 20, 2, 64, LORA)  # the decayed model
    assert first.metrics[NLL_METRIC] == pytest.approx(again.value, rel=1e-6)
    loss = eval_flops(SHAPE, 64, 4, **LORA.flops_kwargs()).total
    evaluated = first.flops - (first.branch.train_flops)
    assert again.flops <= nll_bound(SHAPE, 2, 64, 2, decimals=codec.decimals, lora=LORA)
    assert (
        evaluated
        == first.branch.eval_flops + again.flops
        <= loss + nll_bound(SHAPE, 2, 64, 2, decimals=codec.decimals, lora=LORA)
    )
    with pytest.raises(ValueError, match="score must be one of"):
        WsdRungs(model, tok, codec, train, val, CONFIG, LORA, tmp_path, score="loss")
