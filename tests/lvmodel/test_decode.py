"""The forecast decoder against transformers' ``generate`` (what forecast ran before), and its
stopping rule.

The reference is the previous implementation of `forecast`'s generation, rebuilt here from
transformers alone: one left-padded batch, ``generate`` with the grammar's logits processor, a
static cache of ``prompt + max_new - 1`` slots, ``num_return_sequences`` for samples, under
``torch.manual_seed(seed)``. Greedy tokens must be identical. Sampling draws one
``torch.multinomial`` per step over the same ``series x samples`` rows in the same order, so the
random stream is the same too; the samples are identical wherever the prefill over ``B`` rows
gives the bits of the prefill over ``B x samples`` rows (it does on this CPU).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import Qwen2ForCausalLM, StaticCache

import lvdata
from lvdata import LLMTimeCodec
from lvmodel.decode import Decoder
from lvmodel.forecast import build_prompts, forecast
from lvmodel.grammar import (
    LLMTimeGrammar,
    LLMTimeLogitsProcessor,
    max_new_tokens_for,
    min_new_tokens_for,
)
from lvmodel.tiny_tokenizer import build_tiny_tokenizer
from tests.lvmodel._toy import small_qwen2

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small() -> tuple[Qwen2ForCausalLM, object]:
    """A random 2-layer Qwen2 (GQA 4/2, vocab 128) and the tiny tokenizer."""
    return small_qwen2(), build_tiny_tokenizer()


def _reference(model, tokenizer, codec, histories, horizon, num_samples=1, seed=0, **sampling):
    """Texts (per series, per sample) of transformers' ``generate`` on one batch ordered by
    prompt length (as forecast orders its batches), greedy or sampled."""
    prompts, _ = build_prompts(histories, codec, tokenizer)
    order = sorted(range(len(prompts)), key=lambda j: len(prompts[j]))
    grammar = LLMTimeGrammar(tokenizer, codec.decimals)
    pad, width = grammar.pad_token_id, max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, j in enumerate(order):
        ids[row, width - len(prompts[j]) :] = torch.tensor(prompts[j])
        mask[row, width - len(prompts[j]) :] = 1
    max_new = max_new_tokens_for(horizon, codec.decimals)
    kwargs = {"do_sample": False}
    if num_samples > 1:
        kwargs = {"do_sample": True, "top_k": 0, "num_return_sequences": num_samples, **sampling}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", FutureWarning)  # `past_key_values` renamed in 5.2x
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            logits_processor=[LLMTimeLogitsProcessor(grammar, horizon)],
            max_new_tokens=max_new,
            pad_token_id=pad,
            past_key_values=StaticCache(config=model.config, max_cache_len=width + max_new - 1),
            **kwargs,
        )
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    by_series: list[list[str]] = [[] for _ in prompts]
    for row, text in enumerate(texts):
        by_series[order[row // num_samples]].append(text)
    return by_series


@pytest.fixture(scope="module")
def lv_histories() -> tuple[np.ndarray, LLMTimeCodec]:
    """The first 30 steps of 6 generated Lotka-Volterra series, and their codec."""
    traj = lvdata.simulate(n_systems=6, n_steps=40, seed=3)
    return traj.values[:, :30], LLMTimeCodec.fit(traj.values)


def test_greedy_and_sampled_tokens_equal_generate(small) -> None:
    model, tokenizer = small
    codec = LLMTimeCodec(alpha=1.0)
    rng = np.random.default_rng(0)
    histories = [rng.uniform(0.0, 5.0, size=(t, 2)) for t in (12, 5, 9, 1, 7, 20)]
    n = len(histories)
    greedy = forecast(model, tokenizer, codec, histories, 4, batch_size=n)
    assert greedy.texts == _reference(model, tokenizer, codec, histories, 4)
    kw = {"temperature": 0.7, "top_p": 0.9}
    sampled = forecast(
        model, tokenizer, codec, histories, 3, num_samples=5, batch_size=n, seed=4, **kw
    )
    assert sampled.texts == _reference(model, tokenizer, codec, histories, 3, 5, 4, **kw)
    assert len({t for texts in sampled.texts for t in texts}) > n  # the samples differ


def test_tiny_base_forecasts_equal_generate(tiny_base, lv_histories) -> None:
    """The pretrained tiny base on generated Lotka-Volterra series: the same greedy forecasts
    and the same 4 samples per series as ``generate``."""
    model, tokenizer = tiny_base
    histories, codec = lv_histories
    n = len(histories)
    greedy = forecast(model, tokenizer, codec, histories, 3, batch_size=n)
    assert greedy.texts == _reference(model, tokenizer, codec, histories, 3)
    assert greedy.invalid == 0
    sampled = forecast(model, tokenizer, codec, histories, 3, num_samples=4, batch_size=n, seed=2)
    assert sampled.texts == _reference(model, tokenizer, codec, histories, 3, 4, seed=2)


def test_done_is_read_only_from_the_shortest_continuation_on(small) -> None:
    model, tokenizer = small
    grammar = LLMTimeGrammar(tokenizer)
    decoder = Decoder(model, grammar, horizon=2, max_new=24, min_new=20, check_every=3)
    # Before 20 tokens the device is never read (None would raise if it were).
    assert not any(decoder._done(None, new) for new in range(1, 20))  # type: ignore[arg-type]
    done, busy = torch.tensor([2, 2]), torch.tensor([2, 1])
    assert decoder._done(done, 20) and not decoder._done(busy, 20)
    assert not decoder._done(done, 21) and not decoder._done(done, 22)  # not due
    assert decoder._done(done, 23) and not decoder._done(busy, 23)
    assert decoder._done(busy, 24)  # the grammar's longest continuation: always the end


def test_checking_every_k_tokens_only_adds_padding(small) -> None:
    """An accelerator's decoder reads "all done?" every 4 tokens: it may run past the longest
    row (those tokens are padding, and computed), never changes the tokens."""
    model, tokenizer = small
    codec = LLMTimeCodec(alpha=1.0)
    rng = np.random.default_rng(1)
    histories = [rng.uniform(0.0, 12.0, size=(t, 2)) for t in (6, 3, 8)]
    prompts, _ = build_prompts(histories, codec, tokenizer)
    width = max(len(p) for p in prompts)
    grammar = LLMTimeGrammar(tokenizer)
    ids = torch.full((3, width), grammar.pad_token_id)
    mask = torch.zeros((3, width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :], mask[row, width - len(p) :] = torch.tensor(p), 1
    horizon = 3
    lengths = (max_new_tokens_for(horizon), min_new_tokens_for(horizon))  # 36, 30
    with torch.inference_mode():
        every = Decoder(model, grammar, horizon, *lengths, check_every=1)(ids, mask)
        sparse = Decoder(model, grammar, horizon, *lengths, check_every=4)(ids, mask)
    longest = every.shape[1]
    assert 30 <= longest <= 36
    assert (every[:, -1] == grammar.time_sep_id).any()  # stopped at the longest row's end
    assert sparse.shape[1] == min(36, 30 + 4 * -(-(longest - 30) // 4))
    assert torch.equal(sparse[:, :longest], every)
    assert (sparse[:, longest:] == grammar.pad_token_id).all()


def test_sampling_prefills_each_prompt_once(small, monkeypatch) -> None:
    """The model sees each prompt once (a forward over B rows), then 1-token steps over B x S."""
    model, tokenizer = small
    codec = LLMTimeCodec(alpha=1.0)
    histories = [np.full((4, 2), 1.5), np.full((2, 2), 0.5)]
    shapes: list[tuple[int, int]] = []
    forward = type(model).forward

    def spy(self, input_ids=None, cache=None, **kwargs):
        shapes.append(tuple(input_ids.shape))
        return forward(self, input_ids=input_ids, cache=cache, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    f = forecast(model, tokenizer, codec, histories, 1, num_samples=3, batch_size=2)
    width = 4 * 10  # "1.50,1.50;" x 4 steps, the longer prompt
    assert shapes[0] == (2, width)
    assert shapes[1:] == [(6, 1)] * (len(shapes) - 1)
    assert len(shapes) == max(len(t) for texts in f.texts for t in texts)
