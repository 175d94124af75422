"""Training windows aligned to time steps."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lvdata import IGNORE_INDEX, LLMTimeCodec, Windows, make_windows, tokenize_steps

SEMI = ord(";") - 33  # 26
QWEN_PAD = 151643


def _texts(n_series: int = 3, n_steps: int = 40, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    codec = LLMTimeCodec(alpha=1.0)
    return [codec.encode(rng.uniform(0, 9.99, (n_steps, 2))) for _ in range(n_series)]


def _check_alignment(w: Windows, texts: list[str], tok: Any) -> None:
    for i in range(len(w)):
        ids, starts = tokenize_steps(texts[int(w.series[i])], tok)
        start = starts[int(w.start_step[i])]
        n = int(w.attention_mask[i].sum())
        np.testing.assert_array_equal(w.input_ids[i, :n], ids[start : start + n])
        assert start == 0 or ids[start - 1] == SEMI


def test_step_is_ten_tokens(fake_tokenizer: Any) -> None:
    text = LLMTimeCodec(alpha=1.0).encode([[1.23, 4.56], [7.89, 0.12], [3.0, 9.99]])
    ids, starts = tokenize_steps(text, fake_tokenizer)
    assert starts == [0, 10, 20]
    assert ids[:10] == [16, 13, 17, 18, 11, 19, 13, 20, 21, 26]
    assert len(ids) == 29  # no ";" after the last step
    assert ids == [ord(c) - 33 for c in text]  # equals tokenizing the whole text


def test_windows_shapes_alignment_stride_tail(fake_tokenizer: Any) -> None:
    texts = _texts(3, 40)  # 399 tokens per series
    w = make_windows(texts, fake_tokenizer, context_length=128, stride=64)
    for arr in (w.input_ids, w.attention_mask, w.labels):
        assert arr.dtype == np.int64 and arr.shape == (len(w), 128)
    _check_alignment(w, texts, fake_tokenizer)
    for s in range(3):
        rows = np.flatnonzero(w.series == s)
        starts = w.start_step[rows] * 10
        assert starts[0] == 0
        # each next start: first boundary at or after previous + stride (boundaries every 10)
        gaps = np.diff(starts)
        assert np.all(gaps[:-1] == 70)
        assert 0 < gaps[-1] <= 70
        # the tail: the last window ends at the series end
        last = rows[-1]
        end = starts[-1] + int(w.attention_mask[last].sum())
        assert end == 399
        assert 399 - starts[-1] <= 128
    # order: series, then position
    assert np.all(np.diff(w.series) >= 0)


def test_padding_masked(fake_tokenizer: Any) -> None:
    texts = _texts(2, 5)  # 49 tokens, shorter than the context
    w = make_windows(texts, fake_tokenizer, context_length=64)
    assert len(w) == 2
    assert np.all(w.attention_mask[:, :49] == 1) and np.all(w.attention_mask[:, 49:] == 0)
    assert np.all(w.input_ids[:, 49:] == QWEN_PAD)
    assert np.all(w.labels[:, 49:] == IGNORE_INDEX)
    np.testing.assert_array_equal(w.labels[:, :49], w.input_ids[:, :49])
    assert np.all(w.labels != QWEN_PAD)


def test_default_stride_and_no_crossing(fake_tokenizer: Any) -> None:
    texts = _texts(4, 30)  # 299 tokens each
    w = make_windows(texts, fake_tokenizer, context_length=100)
    _check_alignment(w, texts, fake_tokenizer)
    first = w.start_step[w.series == 0] * 10
    assert first[1] == 50  # stride 100 // 2 = 50, a step boundary
    again = make_windows(texts, type(fake_tokenizer)(), context_length=100)
    np.testing.assert_array_equal(w.input_ids, again.input_ids)


def test_chunk_cache(fake_tokenizer: Any) -> None:
    text = ";".join(["1.00,2.00"] * 50)
    make_windows([text, text], fake_tokenizer, context_length=64)
    assert fake_tokenizer.calls == 2  # "1.00,2.00;" and the final "1.00,2.00"


def test_errors(fake_tokenizer: Any) -> None:
    texts = _texts(1, 5)
    with pytest.raises(ValueError, match="time step"):
        make_windows(texts, fake_tokenizer, context_length=8)
    with pytest.raises(ValueError, match="stride"):
        make_windows(texts, fake_tokenizer, context_length=20, stride=0)
    tok = type(fake_tokenizer)()
    tok.pad_token_id = None
    with pytest.raises(ValueError, match="pad"):
        make_windows(texts, tok, context_length=20)
    w = make_windows(texts, tok, context_length=64, pad_token_id=0)
    assert w.input_ids[0, -1] == 0


def _gguf() -> Path | None:
    spec = os.environ.get("LV_QWEN_GGUF")
    if not spec or importlib.util.find_spec("transformers") is None:
        return None
    path = Path(spec)
    return path if path.is_file() else None


@pytest.mark.realmodel
@pytest.mark.skipif(_gguf() is None, reason="needs transformers and LV_QWEN_GGUF=<file.gguf>")
def test_real_qwen_tokenizer_matches_fake(fake_tokenizer: Any) -> None:
    from transformers import AutoTokenizer

    path = _gguf()
    assert path is not None
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert tok("1.23", add_special_tokens=False)["input_ids"] == [16, 13, 17, 18]
    wide = LLMTimeCodec(alpha=0.5).encode(np.random.default_rng(1).uniform(0, 9.99, (30, 2)))
    texts = [*_texts(2, 30), wide]  # values up to 20: some steps of 11-12 tokens
    real = make_windows(texts, tok, context_length=100, pad_token_id=QWEN_PAD)
    fake = make_windows(texts, fake_tokenizer, context_length=100)
    np.testing.assert_array_equal(real.input_ids, fake.input_ids)
    np.testing.assert_array_equal(real.labels, fake.labels)
    for text in texts:
        whole = tok(text, add_special_tokens=False)["input_ids"]
        assert whole == tokenize_steps(text, tok)[0]
