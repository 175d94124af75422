"""NLL/D (`lvmodel.nll`): by hand with a model whose logits are all zero (every token has
probability 1/V), and against a plain unbatched, unpadded forward pass on a random model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import Qwen2ForCausalLM

from lvdata import LLMTimeCodec
from lvflops import forward_flops
from lvmodel.nll import nll_per_dim
from lvmodel.run_plan import model_shape
from lvmodel.tiny_tokenizer import build_tiny_tokenizer
from tests.lvmodel._toy import small_qwen2

pytestmark = pytest.mark.usefixtures("one_thread")
HISTORY, HORIZON = 6, 3


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    # Values from 0.2 to 25: some written with two integer digits, so that the continuations of
    # a batch have different lengths (left padding must keep each one's tokens apart).
    rng = np.random.default_rng(0)
    return rng.uniform(0.2, 25.0, size=(5, HISTORY + HORIZON, 2))


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_nll_by_hand_when_every_token_is_equally_likely(tokenizer, series) -> None:
    model = small_qwen2()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: the embeddings too; every logit is 0
    codec = LLMTimeCodec(alpha=2.0, decimals=2)
    out = nll_per_dim(model, tokenizer, codec, series, HISTORY, HORIZON, batch_size=2)
    vocab = model.config.vocab_size
    for b in range(len(series)):
        t = len(_tokens(tokenizer, codec.encode_prompt(series[b, HISTORY:])))
        d = HORIZON * 2
        # -log P / D with log P = -t ln V; then the bin width 10^-2 and the scale alpha = 2.
        expected = t * math.log(vocab) / d - 2 * math.log(10.0) + math.log(2.0)
        assert out.per_series[b] == pytest.approx(expected, rel=1e-6)
    assert out.value == pytest.approx(float(out.per_series.mean()))


def test_nll_matches_an_unbatched_forward_pass(tokenizer, series) -> None:
    model: Qwen2ForCausalLM = small_qwen2()
    codec = LLMTimeCodec(alpha=3.0, decimals=2)
    batched = nll_per_dim(model, tokenizer, codec, series, HISTORY, HORIZON, batch_size=5)
    one = nll_per_dim(model, tokenizer, codec, series, HISTORY, HORIZON, batch_size=1)
    np.testing.assert_allclose(batched.per_series, one.per_series, rtol=1e-4)
    # By hand for series 0: one forward pass over prompt + continuation, no padding.
    prompt = _tokens(tokenizer, codec.encode_prompt(series[0, :HISTORY]))
    cont = _tokens(tokenizer, codec.encode_prompt(series[0, HISTORY:]))
    ids = torch.tensor([prompt + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    log_p = sum(float(logp[len(prompt) + i - 1, tok]) for i, tok in enumerate(cont))
    expected = -log_p / (HORIZON * 2) - 2 * math.log(10.0) + math.log(3.0)
    assert batched.per_series[0] == pytest.approx(expected, rel=1e-5)
    # FLOPs: one forward over the padded batch, logits and log-softmax at the kept positions.
    assert batched.flops > 0 and one.flops > 0
    widths = [
        len(_tokens(tokenizer, codec.encode_prompt(s[:HISTORY])))
        + len(_tokens(tokenizer, codec.encode_prompt(s[HISTORY:])))
        for s in series
    ]
    conts = [len(_tokens(tokenizer, codec.encode_prompt(s[HISTORY:]))) for s in series]
    shape = model_shape(model)
    assert (
        batched.flops
        == forward_flops(shape, max(widths), 5, logits_len=max(conts) + 1, loss=True).total
    )


def test_nll_bound_bounds_what_a_pass_costs(tokenizer, series) -> None:
    """The plan's bound (`run_plan.nll_bound`) is never below the measured cost; it is the
    forward pass over a full context and the longest continuation the grammar allows."""
    from lvmodel.grammar import DEFAULT_MAX_INT_DIGITS, max_new_tokens_for
    from lvmodel.run_plan import nll_bound

    model = small_qwen2()
    shape = model_shape(model)
    codec = LLMTimeCodec(alpha=3.0, decimals=2)
    for context in (24, 40, 200):
        spent = nll_per_dim(model, tokenizer, codec, series, HISTORY, HORIZON, context).flops
        bound = nll_bound(shape, len(series), context, HORIZON, decimals=codec.decimals)
        assert spent <= bound
    new = max_new_tokens_for(HORIZON, 2, DEFAULT_MAX_INT_DIGITS, 2)
    by_hand = len(series) * forward_flops(
        shape, 40 + new, 1, logits_len=new + 1, loss=True
    ).total  # fmt: skip
    assert nll_bound(shape, len(series), 40, HORIZON, decimals=2) == by_hand
