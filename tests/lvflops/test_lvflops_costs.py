"""Training, evaluation and generation costs built from forward passes."""

import pytest

from lvflops import (
    ModelShape,
    decode_step_flops,
    eval_flops,
    executed_train_step_flops,
    forward_flops,
    generate_flops,
    train_step_flops,
)

TINY = ModelShape(8, 1, 2, 1, 4, 16, 11, True)


def test_train_step_is_three_forwards():
    fwd = forward_flops(TINY, 3, 2, lora_rank=2, lm_head_bias=True)
    step = train_step_flops(TINY, 3, 2, lora_rank=2, lm_head_bias=True)
    assert step == 3 * fwd
    assert step.total == 3 * fwd.total and step.matmul == 3 * fwd.matmul


def test_executed_train_step_with_frozen_base():
    kw = {"lora_rank": 2, "lm_head_bias": True, "gqa_as_mha": False}
    fwd = forward_flops(TINY, 3, **kw)
    executed = executed_train_step_flops(TINY, 3, **kw)
    # 2 x forward + weight gradients of the adapters (360) and of the lm_head bias (33)
    assert executed.total == 2 * fwd.total + 360 + 33
    assert executed.matmul == 2 * fwd.matmul + 3 * (2 * 15 + 8 * 3 + 2 * 15 + 4 * 3)
    assert executed_train_step_flops(TINY, 3, frozen_base=False, **kw) == 3 * fwd


def test_eval_is_forward():
    assert eval_flops(TINY, 7, 3) == forward_flops(TINY, 7, 3)


def test_generate_one_token_is_prefill():
    for cache in (True, False):
        assert generate_flops(TINY, 5, 1, 2, kv_cache=cache) == forward_flops(TINY, 5, 2)


def test_generate_with_cache_exact_tiny():
    # prompt 3, 3 new tokens: prefill over 3, then 1-token steps attending to 4 and 5 positions
    g = generate_flops(TINY, 3, 3, gqa_as_mha=False)
    prefill, step4 = 5571, 1919
    # from 4 to 5 positions: scores +2*7, scale +2, mask +2, softmax +2*14, values +2*(4*2)
    step5 = step4 + 2 * 7 + 2 + 2 + 2 * 14 + 2 * (4 * 2)
    assert g.total == prefill + step4 + step5
    assert g == forward_flops(TINY, 3, gqa_as_mha=False) + decode_step_flops(
        TINY, 4, gqa_as_mha=False
    ) + decode_step_flops(TINY, 5, gqa_as_mha=False)


def test_generate_without_cache_recomputes_everything():
    g = generate_flops(TINY, 3, 3, batch=2, kv_cache=False)
    expected = forward_flops(TINY, 3, 2) + forward_flops(TINY, 4, 2) + forward_flops(TINY, 5, 2)
    assert g == expected
    assert g.total > generate_flops(TINY, 3, 3, batch=2).total


def test_generate_logits_len_and_kwargs_pass_through():
    g = generate_flops(TINY, 3, 2, lora_rank=2, lm_head_bias=True, logits_len=1)
    assert g.by_component["lm_head"] == 2 * 11 * 15
    assert g.by_component["lm_head_bias"] == 2 * 11
    assert g.by_component["lora"] > 0


def test_generate_rejects_zero_tokens():
    with pytest.raises(ValueError):
        generate_flops(TINY, 3, 0)
