"""Forecast batches sized by their generation memory, with figures worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2ForCausalLM

import lvmodel.decode
import lvmodel.forecast
from lvdata import LLMTimeCodec
from lvflops import QWEN2_5_0_5B, ModelShape
from lvmodel.batch_memory import memory_budget, row_bytes, series_bytes, series_per_batch
from lvmodel.forecast import forecast
from lvmodel.tiny_tokenizer import build_tiny_tokenizer
from tests.lvmodel._toy import small_qwen2

GIB = 1024**3


def test_qwen_rows_and_series_by_hand() -> None:
    # Qwen2.5-0.5B in bf16: K and V of 24 layers x 2 KV heads x 64 dims x 2 bytes = 12,288 bytes
    # a token; 512 prompt + 60 new tokens = 7,028,736; the last logits 151,936 x 4 = 607,744.
    assert row_bytes(QWEN2_5_0_5B, 572, 2) == 7_028_736 + 607_744 == 7_636_480
    # the prefill's MLP: 512 tokens x 3 x 4864 x 2 bytes = 14,942,208 per series
    assert series_bytes(QWEN2_5_0_5B, 512, 60, 1, 2) == 7_636_480 + 14_942_208
    assert series_bytes(QWEN2_5_0_5B, 512, 60, 10, 2) == 76_364_800 + 14_942_208 == 91_307_008
    # 2 GiB = 2,147,483,648 bytes: 95.1 greedy series, 23.5 sampled (10 samples)
    assert series_per_batch(QWEN2_5_0_5B, 512, 60, 1, 2 * GIB, 2) == 95
    assert series_per_batch(QWEN2_5_0_5B, 512, 60, 10, 2 * GIB, 2) == 23
    # 40 GB (half of 80 GB free): 438.08 sampled series
    assert series_per_batch(QWEN2_5_0_5B, 512, 60, 10, 40 * 10**9, 2) == 438
    # never less than one series, even when one does not fit
    assert series_per_batch(QWEN2_5_0_5B, 512, 60, 10, 1000, 2) == 1


def test_tiny_shape_by_hand() -> None:
    # tiny (4 layers, 2 KV heads of 32 dims, vocab 128, MLP 384) in float32 at context 256,
    # horizon 5: 2 x 4 x 2 x 32 x 4 = 2048 bytes a token x 316 = 647,168, logits 512;
    # prefill 256 x 3 x 384 x 4 = 1,179,648; 10 samples: 6,476,800 + 1,179,648 = 7,656,448.
    tiny = ModelShape(128, 4, 4, 2, 32, 384, 128, True)
    assert row_bytes(tiny, 316, 4) == 647_680
    assert series_bytes(tiny, 256, 60, 10, 4) == 7_656_448
    assert series_per_batch(tiny, 256, 60, 10, 2 * GIB, 4) == 280  # 2 GiB / 7,656,448 = 280.5


def test_memory_budget_cpu_and_cuda(monkeypatch) -> None:
    assert memory_budget("cpu") == memory_budget(torch.device("cpu")) == 2 * GIB
    asked = []

    def mem_get_info(device):
        asked.append(device)
        return 30 * GIB, 80 * GIB  # (free, total)

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    assert memory_budget("cuda:1") == 15 * GIB  # half the free memory
    assert asked == [torch.device("cuda", 1)]


@pytest.fixture()
def small() -> tuple[Qwen2ForCausalLM, object]:
    return small_qwen2(), build_tiny_tokenizer()


def test_forecast_default_batches_fit_the_budget(small, monkeypatch) -> None:
    """Without batch_size, a forecast holds as many series per batch as its memory budget
    allows; with it, exactly that many. Either way the forecasts are the same."""
    model, tokenizer = small
    codec = LLMTimeCodec(alpha=1.0)
    histories = [np.full((t, 2), 1.25) for t in (3, 5, 4, 2, 5)]  # "1.25,1.25;" = 10 tokens
    # The longest prompt: 5 steps = 50 tokens; horizon 2: at most 24 new tokens. One row in
    # float32: K and V of 2 layers x 2 KV heads x 16 dims x 4 bytes = 512 bytes a token x 74
    # = 37,888, logits 128 x 4 = 512; the prefill 50 x 3 x 128 x 4 = 76,800. 3 samples:
    # 3 x 38,400 + 76,800 = 192,000 bytes a series.
    budget = 2 * 192_000 + 191_999  # room for 2 series, not 3
    monkeypatch.setattr(lvmodel.forecast, "memory_budget", lambda device: budget)
    batches: list[int] = []
    call = lvmodel.decode.Decoder.__call__

    def spy(self, ids, mask):
        batches.append(ids.shape[0])
        return call(self, ids, mask)

    monkeypatch.setattr(lvmodel.decode.Decoder, "__call__", spy)
    auto = forecast(model, tokenizer, codec, histories, 2, num_samples=3, seed=5)
    assert batches == [2, 2, 1]
    batches.clear()
    fixed = forecast(model, tokenizer, codec, histories, 2, num_samples=3, seed=5, batch_size=2)
    assert batches == [2, 2, 1]
    assert auto.texts == fixed.texts and auto.flops == fixed.flops
    batches.clear()
    forecast(model, tokenizer, codec, histories, 2, num_samples=3, batch_size=5)
    assert batches == [5]
    with pytest.raises(ValueError, match="batch_size"):
        forecast(model, tokenizer, codec, histories, 2, batch_size=0)
