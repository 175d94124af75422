"""The tiny base: tokenizer ids, synthetic corpus, deterministic cached builds, zero-shot quality."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import lvmodel.tiny as tiny
from lvdata import LLMTimeCodec, split
from lvmodel.synthetic import FAMILIES, format_series, synthetic_series, synthetic_text
from lvmodel.tiny import (
    PRETRAIN_FILE,
    TinyPretrainSettings,
    build_tiny_base,
    ensure_tiny_base,
    tiny_base_dir,
)
from lvmodel.tiny_tokenizer import VOCAB_SIZE, build_tiny_tokenizer

# A few seconds per build: for determinism and cache tests only.
QUICK = TinyPretrainSettings(steps=3, seq_lens=(64, 128), batch_sizes=(4, 2), warmup_steps=1)


def test_tokenizer_ids_equal_qwen_ids_for_lv_text() -> None:
    text = format_series(np.array([[1.234, 0.5], [12.0, 0.061], [0.0, 3.999]]))
    assert text == "1.23,0.50;12.00,0.06;0.00,4.00"
    ids = build_tiny_tokenizer()(text)["input_ids"]
    assert ids == [ord(c) - 33 for c in text]
    assert build_tiny_tokenizer()("1.23")["input_ids"] == [16, 13, 17, 18]


def test_one_time_step_below_10_is_10_tokens() -> None:
    tok = build_tiny_tokenizer()
    assert len(tok("0.25,1.50;")["input_ids"]) == 10
    rng = np.random.default_rng(0)
    text = format_series(rng.uniform(0, 9.99, size=(30, 2)))
    assert len(tok(text + ";")["input_ids"]) == 30 * 10


def test_synthetic_series_are_positive_and_mostly_below_10() -> None:
    rng = np.random.default_rng(0)
    for family in FAMILIES:
        x = np.concatenate([synthetic_series(rng, 80, family) for _ in range(50)])
        assert x.shape == (4000, 2)
        assert (x >= 0).all(), family
        assert np.mean(x < 10) > 0.8, family
    x = np.concatenate([synthetic_series(rng, 80) for _ in range(200)])
    assert np.mean(x < 10) > 0.9 and np.mean(x >= 10) > 0.01  # some two-digit integer parts
    text = synthetic_text(rng, 20)
    assert re.fullmatch(r"(\d+\.\d\d,\d+\.\d\d;){19}\d+\.\d\d,\d+\.\d\d", text)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_build_is_deterministic_by_seed(tmp_path: Path) -> None:
    a = build_tiny_base(tmp_path / "a", seed=0, settings=QUICK, progress=False)
    b = build_tiny_base(tmp_path / "b", seed=0, settings=QUICK, progress=False)
    c = build_tiny_base(tmp_path / "c", seed=1, settings=QUICK, progress=False)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    info = json.loads((a / PRETRAIN_FILE).read_text())
    assert info["seed"] == 0 and info["steps_done"] == 3 and info["tokens_seen"] > 0
    assert np.isfinite(info["final_loss"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp leftovers
    with pytest.raises(FileExistsError):
        build_tiny_base(a, settings=QUICK, progress=False)


def test_cache_is_keyed_by_recipe_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ensure_tiny_base(tmp_path, settings=QUICK, progress=False)
    assert path == tiny_base_dir(tmp_path, settings=QUICK)
    assert (path / PRETRAIN_FILE).is_file() and (path / "config.json").is_file()

    def no_rebuild(*args: object, **kwargs: object) -> Path:
        raise AssertionError("rebuilt a cached tiny base")

    monkeypatch.setattr(tiny, "build_tiny_base", no_rebuild)
    assert ensure_tiny_base(tmp_path, settings=QUICK, progress=False) == path
    assert tiny_base_dir(tmp_path, seed=1, settings=QUICK) != path
    assert tiny_base_dir(tmp_path, settings=TinyPretrainSettings(steps=4)) != path
    monkeypatch.setenv("LV_CACHE_DIR", str(tmp_path / "env"))
    assert tiny_base_dir(settings=QUICK).parent == tmp_path / "env"


def test_random_tiny_shape(random_tiny) -> None:
    model, tok = random_tiny
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # GQA
    assert cfg.tie_word_embeddings
    assert cfg.vocab_size >= VOCAB_SIZE == len(tok)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight


# --- zero-shot quality of the pretrained base on Lotka-Volterra ------------------------------------

HISTORY, HORIZON = 50, 5


def _greedy_forecast(model, tok, prompts: list[str], batch: int = 50) -> tuple[np.ndarray, int]:
    """Plain greedy `generate` + parse of the first HORIZON steps; malformed -> repeat last value."""
    out, invalid = [], 0
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=10 * HORIZON + 10, do_sample=False)
        new = gen[:, enc["input_ids"].shape[1] :]
        for prompt, row in zip(prompts[i : i + batch], new, strict=True):
            steps: list[list[float]] = []
            for field in tok.decode(row, skip_special_tokens=True).split(";")[:HORIZON]:
                m = re.fullmatch(r"(\d+\.\d\d),(\d+\.\d\d)", field)
                if not m:
                    break
                steps.append([float(m[1]), float(m[2])])
            if len(steps) < HORIZON:
                invalid += 1
                last = [float(v) for v in prompt.rstrip(";").split(";")[-1].split(",")]
                steps += [steps[-1] if steps else last] * (HORIZON - len(steps))
            out.append(steps)
    return np.array(out), invalid


@pytest.mark.slow
def test_zero_shot_beats_training_mean(tiny_base, coursework) -> None:
    series = np.asarray(coursework.values, dtype=np.float64)
    parts = split(len(series))  # the project's 800/100/100 split; judged on validation
    train, val = series[parts.train], series[parts.val]
    alpha = LLMTimeCodec.fit(train).alpha  # p99(train) / 10, rounded up: about 0.6
    prompts = [format_series(s[:HISTORY] / alpha) + ";" for s in val]
    truth = val[:, HISTORY : HISTORY + HORIZON]

    model, tok = tiny_base
    pred, invalid = _greedy_forecast(model, tok, prompts)
    mse_zero_shot = float(np.mean((pred * alpha - truth) ** 2))
    mse_mean = float(np.mean((train.reshape(-1, 2).mean(axis=0) - truth) ** 2))
    mse_persist = float(np.mean((val[:, HISTORY - 1 : HISTORY] - truth) ** 2))
    print(
        f"\nLV zero-shot MSE {mse_zero_shot:.4f} | training mean {mse_mean:.4f} | "
        f"persistence {mse_persist:.4f} | malformed {invalid}/{len(val)} | alpha {alpha:.3f}"
    )
    assert invalid <= len(val) // 10
    assert mse_zero_shot < mse_mean


# LoRA on all seven linear layers of every block at rank 16 (the `tiny` preset's adapter), 1500
# steps of 8 windows of 512 tokens: about 10 minutes on 2 cores. Measured on the coursework
# validation split (K=50, H=5, context 512): zero-shot 0.310; after 600 steps 0.177, after 1000
# steps 0.160 (1.94x), after 1500 steps 0.066 (4.7x).
LORA_STEPS = 1500


@pytest.mark.slow
def test_lora_beats_zero_shot_clearly(tiny_base_path, coursework) -> None:
    from lvmodel.base import load_base
    from lvmodel.config import TrainConfig
    from lvmodel.evaluate import evaluate_llm
    from lvmodel.intervals import difference_interval, series_terms
    from lvmodel.lora import LoraSettings, apply_lora
    from lvmodel.train import fit

    series = np.asarray(coursework.values, dtype=np.float64)
    parts = split(len(series))
    train, val = series[parts.train], series[parts.val]
    codec = LLMTimeCodec.fit(train)
    torch.manual_seed(0)
    model, tok = load_base(str(tiny_base_path))
    zero = evaluate_llm(model, tok, codec, val, HISTORY, HORIZON, 512, batch_size=50)
    lora = LoraSettings(
        rank=16,
        targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    )
    model = apply_lora(model, lora)
    config = TrainConfig(
        steps=LORA_STEPS,
        lr=3e-3,
        batch_size=8,
        context_length=512,
        schedule="cosine",
        warmup_steps=50,
        eval_every=0,
        forecast_series=0,
    )
    fit(model, tok, codec, train, val, config, lora, progress=False)
    tuned = evaluate_llm(model, tok, codec, val, HISTORY, HORIZON, 512, lora, batch_size=50)
    print(
        f"\nLV validation MSE h5: zero-shot {zero.metrics['mse']:.4f}, LoRA {tuned.metrics['mse']:.4f}"
    )
    assert zero.metrics["invalid_rate"] == tuned.metrics["invalid_rate"] == 0.0
    # Measured (2 cores, torch 2.13, denormals flushed from the start): zero-shot 0.3430, LoRA
    # 0.1926. One seed of tiny moves such a figure by tens of percent (docs/report.md), so the
    # claim is a resolved improvement: the paired 95% interval of LoRA - zero-shot over the same
    # validation series lies below 0, and LoRA's MSE is at least a third lower.
    lo, hi = difference_interval(
        series_terms(tuned.predictions, tuned.histories, tuned.truth),
        series_terms(zero.predictions, zero.histories, zero.truth),
        "mse",
    )
    assert lo < hi < 0
    assert tuned.metrics["mse"] <= zero.metrics["mse"] * 2 / 3
