"""load_base: the four kinds of spec, tokenizer/model fix-ups, fast failures; opt-in real GGUF."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lvmodel.base import DEFAULT_BASE, BaseModelError, describe_base, load_base
from lvmodel.synthetic import format_series
from lvmodel.tiny_tokenizer import EOS_ID, PAD_ID, build_tiny_tokenizer


def _check_ready(model, tok) -> None:
    assert tok.padding_side == "left"
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert model.generation_config.eos_token_id is not None
    assert not model.training


def test_load_tiny(tiny_base) -> None:
    model, tok = tiny_base
    _check_ready(model, tok)
    assert (tok.pad_token_id, tok.eos_token_id) == (PAD_ID, EOS_ID)
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    info = describe_base(model)
    assert info["num_key_value_heads"] < info["num_attention_heads"]
    assert info["tie_word_embeddings"] and info["n_params"] > 100_000


def test_load_local_directory(random_tiny, tmp_path: Path) -> None:
    model, tok = random_tiny
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    loaded, ltok = load_base(str(tmp_path), device="cpu")
    _check_ready(loaded, ltok)
    ids = ltok(["1.00,2.00;", "0.5"], return_tensors="pt", padding=True)
    assert ids["attention_mask"][1, 0] == 0  # left padding
    with torch.no_grad():
        a = model(**ids).logits
        b = loaded(**ids).logits
    torch.testing.assert_close(a, b)


def test_batched_generate_is_left_padded_and_quiet(random_tiny, recwarn) -> None:
    model, tok = random_tiny
    enc = tok(["0.10,0.20;0.30,0.40;", "1.00,2.00;"], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 4)
    assert not [w for w in recwarn.list if "pad_token_id" in str(w.message)]


@pytest.mark.parametrize(
    "spec", ["missing/model.gguf", "./no-such-model-dir", "/no/such/dir", "a/b/no-such-model"]
)
def test_missing_path_names_it(spec: str) -> None:
    with pytest.raises(BaseModelError, match=Path(spec).name) as err:
        load_base(spec)
    assert "gguf" in str(err.value) and "tiny" in str(err.value)


@pytest.mark.parametrize("offline", [True, False])
def test_uncached_hub_id_fails_fast(offline: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # A made-up id: never cached; offline it fails at once, online the hub probe says no.
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = "lv-forecast-tests/no-such-model-xyz"
    t0 = time.perf_counter()
    with pytest.raises(BaseModelError) as err:
        load_base(spec)
    assert time.perf_counter() - t0 < 20
    message = str(err.value)
    assert spec in message and "gguf" in message and "tiny" in message


def test_default_base_is_qwen_instruct() -> None:
    assert DEFAULT_BASE == "Qwen/Qwen2.5-0.5B-Instruct"


# --- opt-in: the real Qwen2.5 0.5B as a GGUF file (LV_QWEN_GGUF=/path/to/file.gguf) ---------------

QWEN_GGUF = os.environ.get("LV_QWEN_GGUF")


@pytest.fixture(scope="module")
def qwen_gguf():
    if not QWEN_GGUF or not Path(QWEN_GGUF).is_file():
        pytest.skip("set LV_QWEN_GGUF to a Qwen2.5 GGUF file (../shared/tools/qwen-gguf makes one)")
    pytest.importorskip("gguf")
    return load_base(QWEN_GGUF, dtype=torch.float32, device="cpu")


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gguf_tokenizer_matches_tiny(qwen_gguf) -> None:
    model, tok = qwen_gguf
    _check_ready(model, tok)
    assert tok("1.23")["input_ids"] == [16, 13, 17, 18]
    assert tok.pad_token_id == 151643 and tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    eos = model.generation_config.eos_token_id
    assert 151645 in (eos if isinstance(eos, list) else [eos])
    text = format_series(np.random.default_rng(0).uniform(0, 12, size=(20, 2))) + ";"
    assert tok(text)["input_ids"] == build_tiny_tokenizer()(text)["input_ids"]
    info = describe_base(model)
    assert (info["hidden_size"], info["num_hidden_layers"]) == (896, 24)
    assert (info["num_attention_heads"], info["num_key_value_heads"]) == (14, 2)
    assert info["vocab_size"] == 151936


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gguf_batched_generate(qwen_gguf) -> None:
    model, tok = qwen_gguf
    enc = tok(["0.10,0.20;0.30,0.40;0.50,0.60;", "1.00,2.00;"], return_tensors="pt", padding=True)
    assert enc["attention_mask"][1, 0] == 0 and enc["input_ids"][1, 0] == 151643
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 3)


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gguf_zero_shot_forecasts_are_valid(qwen_gguf, coursework) -> None:
    """Zero-shot, coursework validation series, 512-token context, horizon 5: >= 95% valid."""
    import lvdata
    from lvmodel.evaluate import evaluate_llm

    model, tok = qwen_gguf
    parts = lvdata.split(coursework.n_series, seed=0)
    codec = lvdata.LLMTimeCodec.fit(coursework.values[parts.train])
    val = coursework.values[parts.val[:8]]
    ev = evaluate_llm(
        model, tok, codec, val, history_steps=50, horizon=5, context_length=512, batch_size=8
    )
    assert ev.metrics["invalid_rate"] <= 0.05
    assert ev.result is not None and ev.result.prompt_tokens <= 8 * 512
    print(f"real GGUF zero-shot: {ev.metrics} in {ev.result.seconds:.1f} s")


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gguf_lora_steps_at_context_128(coursework) -> None:
    """A few LoRA steps on the real model (a private copy: the module fixture stays untouched)."""
    import lvdata
    from lvmodel.lora import LoraSettings, apply_lora, parameter_counts
    from lvmodel.train import TrainConfig, fit

    if not QWEN_GGUF or not Path(QWEN_GGUF).is_file():
        pytest.skip("set LV_QWEN_GGUF to a Qwen2.5 GGUF file")
    model, tok = load_base(QWEN_GGUF, dtype=torch.float32, device="cpu")
    lora = LoraSettings(rank=4)
    model = apply_lora(model, lora)
    trainable, _ = parameter_counts(model)
    assert trainable == 270_336 + 151_936  # LoRA r=4 on q/v (DESIGN) + the lm_head bias
    parts = lvdata.split(coursework.n_series, seed=0)
    codec = lvdata.LLMTimeCodec.fit(coursework.values[parts.train])
    config = TrainConfig(
        steps=3,
        lr=1e-4,
        batch_size=1,
        context_length=128,
        eval_every=0,
        eval_windows=2,
        forecast_every=-1,
    )
    result = fit(
        model,
        tok,
        codec,
        coursework.values[parts.train[:4]],
        coursework.values[parts.val[:2]],
        config,
        lora,
        progress=False,
    )
    assert result.steps == 3 and np.isfinite(result.final["train_loss"])
    print(f"real GGUF LoRA: {result.history}")
