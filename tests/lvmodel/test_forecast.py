"""Constrained batched forecasting with a random tiny Qwen2 model and the tiny tokenizer."""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lvdata import LLMTimeCodec
from lvflops import ModelShape, forward_flops
from lvmodel.forecast import forecast, naive_generate_forecast, truncate_history
from lvmodel.grammar import (
    LLMTimeGrammar,
    LLMTimeLogitsProcessor,
    max_new_tokens_for,
    min_new_tokens_for,
)
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import model_shape
from lvmodel.tiny_tokenizer import build_tiny_tokenizer
from tests.lvmodel._toy import small_qwen2

NUMBER = r"(?:0|[1-9][0-9]?)\.[0-9]{2}"
STEP = rf"{NUMBER},{NUMBER};"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> Qwen2ForCausalLM:
    return small_qwen2()


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def codec() -> LLMTimeCodec:
    return LLMTimeCodec(alpha=1.0)


@pytest.fixture(scope="module")
def histories() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(0.0, 5.0, size=(t, 2)) for t in (12, 5, 9, 1, 7)]


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_shape_and_always_well_formed(model, tokenizer, codec, histories) -> None:
    horizon = 4
    f = forecast(model, tokenizer, codec, histories, horizon, batch_size=3)
    assert f.values.shape == (len(histories), horizon, 2)
    assert f.values.dtype == np.float64
    assert f.invalid == 0 and not np.isnan(f.values).any()
    array = np.asarray(f)
    assert array.shape == f.values.shape and np.array_equal(array, f.values)
    assert np.asarray(f, dtype=np.float32).dtype == np.float32
    assert len(f.texts) == len(histories)
    for (text,) in f.texts:
        assert text.count(";") == horizon
        assert re.fullmatch(rf"(?:{STEP}){{{horizon}}}", text), text
    # generated tokens = the per-row useful lengths; prompts = their unpadded token counts
    assert f.generated_tokens == sum(_n_tokens(tokenizer, t) for (t,) in f.texts)
    assert f.prompt_tokens == sum(_n_tokens(tokenizer, codec.encode_prompt(h)) for h in histories)
    assert f.history_steps == [len(h) for h in histories]


def test_batched_left_padding_equals_one_at_a_time(model, tokenizer, codec, histories) -> None:
    batched = forecast(model, tokenizer, codec, histories, 3, batch_size=len(histories))
    singles = [forecast(model, tokenizer, codec, [h], 3) for h in histories]
    for i, single in enumerate(singles):
        assert single.texts[0] == batched.texts[i]
        np.testing.assert_array_equal(single.values[0], batched.values[i])
    # per-row stopping: no row pays for another row's tokens in the count
    assert batched.generated_tokens == sum(s.generated_tokens for s in singles)


def test_context_length_cuts_whole_steps(model, tokenizer, codec) -> None:
    # steps of unequal token lengths: "12.00,1.00;" is 11 tokens, "1.00,1.00;" 10
    history = np.array([[12.0, 1.0], [1.0, 1.0], [12.0, 1.0], [1.0, 1.0], [12.0, 1.0]])
    for limit, keep in [(11, 1), (20, 1), (21, 2), (31, 2), (32, 3), (53, 5), (None, 5)]:
        kept, ids = truncate_history(history, codec, tokenizer, limit)
        assert len(kept) == keep, limit
        np.testing.assert_array_equal(kept, history[len(history) - keep :])
        assert ids == tokenizer(codec.encode_prompt(kept), add_special_tokens=False)["input_ids"]
        assert limit is None or len(ids) <= limit
    with pytest.raises(ValueError, match="shorter than one time step"):
        truncate_history(history, codec, tokenizer, 10)

    f = forecast(model, tokenizer, codec, [history, history[:2]], 2, context_length=21)
    assert f.history_steps == [2, 2]
    assert f.prompt_tokens == 21 + 21


def test_sampling_is_seeded_and_takes_the_median(model, tokenizer, codec, histories) -> None:
    kw: dict[str, Any] = {"num_samples": 5, "temperature": 1.0, "batch_size": 2}
    a = forecast(model, tokenizer, codec, histories, 3, seed=1, **kw)
    b = forecast(model, tokenizer, codec, histories, 3, seed=1, **kw)
    c = forecast(model, tokenizer, codec, histories, 3, seed=2, **kw)
    assert a.texts == b.texts
    np.testing.assert_array_equal(a.values, b.values)
    assert a.texts != c.texts
    assert a.samples is not None and a.samples.shape == (len(histories), 5, 3, 2)
    # The point forecast is the per-value median of the samples, read here from the texts
    # themselves (alpha 1: the text is the value): the middle of 5 sorted numbers.
    for j, texts in enumerate(a.texts):
        steps = [[[float(v) for v in step.split(",")] for step in t.split(";")[:3]] for t in texts]
        for t in range(3):
            for v in range(2):
                assert a.values[j, t, v] == sorted(s[t][v] for s in steps)[2]
    for texts in a.texts:
        assert len(texts) == 5
        assert all(re.fullmatch(rf"(?:{STEP}){{3}}", t) for t in texts)
    assert a.prompt_tokens == 5 * forecast(model, tokenizer, codec, histories, 1).prompt_tokens


def test_sampled_quantiles_top_p_and_flops(model, tokenizer, codec, histories) -> None:
    kw: dict[str, Any] = {"num_samples": 4, "batch_size": len(histories), "seed": 3}
    f = forecast(model, tokenizer, codec, histories, 2, **kw)
    q = f.quantiles((0.1, 0.5, 0.9))
    assert q.shape == (len(histories), 2, 2, 3)
    # The quantiles are those of the generated numbers themselves (alpha 1: text = value).
    for j, texts in enumerate(f.texts):
        values = np.array(
            [[[float(v) for v in step.split(",")] for step in t.split(";")[:2]] for t in texts]
        )
        np.testing.assert_allclose(
            q[j], np.moveaxis(np.quantile(values, [0.1, 0.5, 0.9], 0), 0, -1)
        )
    np.testing.assert_array_equal(q[..., 1], f.values)  # the median is the point forecast
    # Each prompt is prefilled once; every sample's decoding is charged: rows = series x
    # samples, to the longest row.
    shape = ModelShape.from_hf_config(model.config.to_dict())
    prompt_len = max(_n_tokens(tokenizer, codec.encode_prompt(h)) for h in histories)
    new_tokens = max(_n_tokens(tokenizer, t) for texts in f.texts for t in texts)
    slots = prompt_len + 2 * 12 - 1
    n = len(histories)
    assert f.flops == _by_hand(shape, prompt_len, new_tokens, 4 * n, slots, prompts=n)
    # A vanishing top-p keeps only the most likely allowed token: every sample is greedy.
    greedy = forecast(model, tokenizer, codec, histories, 2)
    narrow = forecast(model, tokenizer, codec, histories, 2, top_p=1e-9, **kw)
    for texts, (one,) in zip(narrow.texts, greedy.texts, strict=True):
        assert texts == [one] * 4
    with pytest.raises(ValueError, match="quantiles need a sampled forecast"):
        greedy.quantiles()
    with pytest.raises(ValueError, match="top_p"):
        forecast(model, tokenizer, codec, histories, 2, num_samples=2, top_p=0.0)


def _by_hand(
    shape, prompt_len: int, new_tokens: int, rows: int, slots: int, prompts: int = 0, **lora
) -> int:
    """Generation assembled pass by pass: the prefill over the `prompts` padded prompts (default:
    one per row) and one 1-token step over the `rows` per generated token but the last, every
    pass attending over all `slots` keys of the static cache and computing the last position's
    logits only."""
    prefill_rows = prompts or rows
    passes = [forward_flops(shape, prompt_len, prefill_rows, kv_len=slots, logits_len=1, **lora)]
    passes += [
        forward_flops(shape, 1, rows, kv_len=slots, logits_len=1, **lora)
        for _ in range(new_tokens - 1)
    ]
    return sum(p.total for p in passes)


def test_flops_are_the_passes_that_ran(model, tokenizer, codec, histories) -> None:
    f = forecast(model, tokenizer, codec, histories, 2, batch_size=len(histories))
    shape = ModelShape.from_hf_config(model.config.to_dict())
    # What ran, read from the inputs and outputs (not from forecast's internals): one batch of
    # every history, padded to the longest prompt, generating until its longest row ended.
    prompt_len = max(_n_tokens(tokenizer, codec.encode_prompt(h)) for h in histories)
    new_tokens = max(_n_tokens(tokenizer, t) for (t,) in f.texts)
    # The static cache holds prompt + max_new - 1 slots; max_new is the grammar's bound for 2
    # steps: per step two numbers of at most 2 integer digits, ".", 2 decimals, and a separator
    # after each = 2 x 6 = 12 tokens.
    slots = prompt_len + 2 * 12 - 1
    assert f.flops == _by_hand(shape, prompt_len, new_tokens, len(histories), slots)
    lora = LoraSettings(rank=4, lm_head_bias=False)
    with_lora = forecast(
        model, tokenizer, codec, histories, 2, batch_size=len(histories), lora=lora
    )
    assert with_lora.flops == _by_hand(
        shape, prompt_len, new_tokens, len(histories), slots, lora_rank=4
    )
    assert with_lora.flops > f.flops


def test_forecast_never_calls_generate(model, tokenizer, codec, histories, monkeypatch) -> None:
    """The decoder runs the model's forward itself: transformers' ``generate`` (which compiles
    the forward for a static cache on CUDA, and reads the device every token to stop) is never
    called, greedy or sampled."""

    def generate(*args, **kwargs):
        raise AssertionError("forecast must not call generate")

    monkeypatch.setattr(model, "generate", generate)
    assert forecast(model, tokenizer, codec, histories, 2).invalid == 0
    assert forecast(model, tokenizer, codec, histories, 2, num_samples=3).invalid == 0


def test_grammar_masks_and_decimals_zero(tokenizer) -> None:
    grammar = LLMTimeGrammar(tokenizer, decimals=0, max_int_digits=1)
    proc = LLMTimeLogitsProcessor(grammar, horizon=1)
    ids = tokenizer("5;", add_special_tokens=False)["input_ids"]
    seq = torch.tensor([ids])
    vocab = 100

    def allowed(prefix: str) -> set[str]:
        nonlocal seq
        if prefix:
            seq = torch.cat([seq, torch.tensor([[tokenizer.convert_tokens_to_ids(prefix)]])], 1)
        scores = proc(seq, torch.zeros(1, vocab))
        return {
            tokenizer.convert_ids_to_tokens(i)
            for i in torch.isfinite(scores[0]).nonzero()[:, 0].tolist()
        }

    digits = set("0123456789")
    assert allowed("") == digits  # first call: the prompt only
    assert allowed("7") == {","}
    assert allowed(",") == digits
    assert allowed("0") == {";"}
    assert allowed(";") == {tokenizer.pad_token}  # horizon reached: only padding
    assert max_new_tokens_for(5) == 60
    assert max_new_tokens_for(1, decimals=0, max_int_digits=1) == 4  # "d,d;"
    assert min_new_tokens_for(5) == 50  # 5 x len("0.00,0.00;")
    assert min_new_tokens_for(1, decimals=0) == 4  # "0,0;"
    assert min_new_tokens_for(3, decimals=1, n_vars=3) == 36  # 3 x len("0.0,0.0,0.0;")


def test_training_mode_restored_and_naive_baseline(model, tokenizer, codec, histories) -> None:
    model.train()
    try:
        naive = naive_generate_forecast(model, tokenizer, codec, histories[:2], 2, max_new_tokens=8)
        assert model.training
    finally:
        model.eval()
    assert naive.values.shape == (2, 2, 2)
    assert naive.flops > 0 and naive.generated_tokens == 2 * 8


def test_malformed_output_is_nan_and_counted(model, tokenizer, codec, histories, monkeypatch):
    """What an unconstrained model may write, scripted: a missing field, a clean answer, a
    number with one decimal and letters, and text that stops short of the horizon."""
    scripted = ["0.50,1.25;0.75,", "1.00,2.00;3.00,4.00;", "1.5,x;", "2.00,3.00"]
    replies = iter(scripted)

    def generate(input_ids, **kwargs):
        new = tokenizer(next(replies), add_special_tokens=False)["input_ids"]
        return torch.cat([input_ids, torch.tensor([new])], dim=1)

    monkeypatch.setattr(model, "generate", generate)
    f = naive_generate_forecast(model, tokenizer, codec, histories[:4], 2, max_new_tokens=20)
    nan = np.nan
    expected = [
        [[0.5, 1.25], [0.75, nan]],
        [[1.0, 2.0], [3.0, 4.0]],
        [[nan, nan], [nan, nan]],
        [[2.0, 3.0], [nan, nan]],
    ]
    np.testing.assert_array_equal(f.values, expected)  # NaN where expected NaN
    assert f.invalid == 1 + 0 + 4 + 2
    assert f.texts == [[t] for t in scripted]
    assert f.generated_tokens == 15 + 20 + 6 + 9  # one token per character


def test_peft_model_shape_and_lora_warning(tokenizer, codec, histories) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    base = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
        )
    )
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert model_shape(peft_model).hidden_size == 32
    with pytest.warns(UserWarning, match="lora=None"):
        forecast(peft_model, tokenizer, codec, histories[:1], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        f = forecast(peft_model, tokenizer, codec, histories[:1], 1, lora=LoraSettings(rank=2))
    assert f.invalid == 0
