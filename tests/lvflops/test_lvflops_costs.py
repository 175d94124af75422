"""Training, evaluation and generation costs built from forward passes."""

import pytest

from lvflops import (
    ModelShape,
    decode_step_flops,
    eval_flops,
    executed_train_step_flops,
    forward_flops,
    generate_flops,
    static_cache_len,
    train_step_flops,
)

TINY = ModelShape(8, 1, 2, 1, 4, 16, 11, True)
# Cross-entropy of one position over 11 logits: 10 max + 11 sub + 110 exp + 10 add + 10 log + 1 + 1.
CE_ROW = 153


def loss_by_hand(rows: int) -> int:
    """The loss of ``rows`` positions: a cross-entropy per row, then the mean (rows-1 adds, 1 div)."""
    return rows * CE_ROW + (rows - 1) + 1


def test_train_step_is_three_forwards_with_loss():
    kw = {"lora_rank": 2, "lm_head_bias": True}
    fwd = forward_flops(TINY, 3, 2, **kw)
    step = train_step_flops(TINY, 3, 2, **kw)
    assert step == 3 * forward_flops(TINY, 3, 2, loss=True, **kw)
    assert step.by_component["loss"] == 3 * loss_by_hand(6)
    assert step.total == 3 * (fwd.total + loss_by_hand(6))
    assert step.matmul == 3 * fwd.matmul
    assert train_step_flops(TINY, 3, 2, loss=True, **kw) == step


@pytest.mark.parametrize("cost", [train_step_flops, executed_train_step_flops, eval_flops])
def test_loss_cannot_be_switched_off(cost):
    with pytest.raises(ValueError, match="loss"):
        cost(TINY, 3, loss=False)


def test_executed_train_step_with_frozen_base():
    kw = {"lora_rank": 2, "lm_head_bias": True, "gqa_as_mha": False}
    fwd = forward_flops(TINY, 3, **kw)
    executed = executed_train_step_flops(TINY, 3, **kw)
    # 2 x (forward + loss) + weight gradients of the adapters (360) and of the lm_head bias (33)
    assert executed.total == 2 * (fwd.total + loss_by_hand(3)) + 360 + 33
    assert executed.matmul == 2 * fwd.matmul + 3 * (2 * 15 + 8 * 3 + 2 * 15 + 4 * 3)
    with_loss = forward_flops(TINY, 3, loss=True, **kw)
    assert executed_train_step_flops(TINY, 3, frozen_base=False, **kw) == 3 * with_loss


def test_executed_train_step_counts_gqa_as_run():
    # TINY has 2 query heads over 1 KV head (head_dim 4): k/v are 4 wide, not 8.
    kw = {"lora_rank": 2, "lm_head_bias": True}
    gqa = executed_train_step_flops(TINY, 3, **kw)  # the default: GQA as executed
    assert gqa == executed_train_step_flops(TINY, 3, gqa_as_mha=False, **kw)
    fwd = forward_flops(TINY, 3, gqa_as_mha=False, **kw)
    assert gqa.total == 2 * (fwd.total + loss_by_hand(3)) + 360 + 33
    # Counted as MHA (k/v 8 wide), per token: k_proj and v_proj 8 x 15 instead of 4 x 15 (60 each
    # more), biases 8 more (k and v: 4 each), RoPE on 2 key heads instead of 1 (14 more), v's
    # LoRA B 8 x 3 instead of 4 x 3 (12 more) with 8 instead of 4 scale-and-add (8 more): 162 a
    # token, 486 over 3 tokens in the forward; the step is 2 forwards + the adapters' weight
    # gradients again (v's LoRA: 20 a token more, 60).
    mha = executed_train_step_flops(TINY, 3, gqa_as_mha=True, **kw)
    assert mha.total - gqa.total == 2 * 486 + 60 == 1032
    # matrix products only: 60 + 60 + 12 = 132 a token, 396 over 3 tokens; + 36 of LoRA grads
    assert mha.matmul - gqa.matmul == 2 * 396 + 36 == 828
    # The budget keeps counting GQA as MHA.
    assert train_step_flops(TINY, 3, **kw) == 3 * forward_flops(TINY, 3, loss=True, **kw)


def test_eval_is_forward_with_loss():
    ev = eval_flops(TINY, 7, 3)
    assert ev.total == forward_flops(TINY, 7, 3).total + loss_by_hand(21)
    assert ev == forward_flops(TINY, 7, 3, loss=True)


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


def test_generate_samples_share_the_prefill():
    # 1 prompt of 3 tokens, 4 samples of 3 new tokens: one prefill (5571), then the two 1-token
    # steps (1919 and 1981 for one row, as above) over 4 rows each.
    g = generate_flops(TINY, 3, 3, num_samples=4, gqa_as_mha=False)
    assert g.total == 5571 + 4 * (1919 + 1981) == 21171
    # 2 prompts, 3 samples each, static cache of 5 slots: prefill 2 x 5943 (see the static test
    # below), then 2 steps of 1981 over 6 rows.
    g = generate_flops(TINY, 3, 3, batch=2, num_samples=3, cache_len=5, gqa_as_mha=False)
    assert g.total == 2 * 5943 + 2 * 6 * 1981 == 35658
    # one new token is the prefill alone, whatever the samples
    assert generate_flops(TINY, 5, 1, 2, num_samples=7) == forward_flops(TINY, 5, 2)
    # without a cache every step recomputes the whole sequence of every sample
    g = generate_flops(TINY, 3, 2, kv_cache=False, num_samples=2)
    assert g == forward_flops(TINY, 3, 1) + forward_flops(TINY, 4, 2)
    for bad in (0, 1.0, True):
        with pytest.raises(ValueError, match="num_samples"):
            generate_flops(TINY, 3, 3, num_samples=bad)


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


def test_generate_has_no_loss():
    assert generate_flops(TINY, 3, 2).by_component["loss"] == 0
    with pytest.raises(ValueError, match="no loss"):
        generate_flops(TINY, 3, 2, loss=True)
    with pytest.raises(ValueError, match="cache_len"):
        generate_flops(TINY, 3, 2, kv_len=9)


def test_generate_static_cache_exact_tiny():
    # prompt 3, 3 new tokens, static cache of 5 slots: every forward attends over 5 keys.
    g = generate_flops(TINY, 3, 3, cache_len=5, gqa_as_mha=False)
    # prefill: 3 queries over 5 keys instead of 3, for 2 heads: scores +2*3*2*7, scale +2*3*2,
    # mask +2*3*2, softmax +2*3*(14*2), values +2*3*4*(2*2)
    prefill = 5571 + 84 + 12 + 12 + 168 + 96
    step5 = 1919 + 2 * 7 + 2 + 2 + 2 * 14 + 2 * (4 * 2)  # 1 query over 5 keys
    assert g.total == prefill + 2 * step5 == 9905
    assert g.total > generate_flops(TINY, 3, 3, gqa_as_mha=False).total == 5571 + 1919 + 1981
    # a larger cache only adds attention work
    big = generate_flops(TINY, 3, 3, cache_len=6, gqa_as_mha=False)
    assert big.total - g.total == 2 * 3 * (7 + 1 + 1 + 14 + 8) + 2 * 2 * (7 + 1 + 1 + 14 + 8)
    assert big.matmul - g.matmul == 5 * 2 * (7 + 8)


def test_generate_static_cache_one_token_is_prefill():
    g = generate_flops(TINY, 5, 1, 2, cache_len=5)
    assert g == forward_flops(TINY, 5, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cache_len": 4}, "at least prompt_len"),  # 3 + 3 - 1 = 5 positions must fit
        ({"cache_len": 0}, "at least prompt_len"),
        ({"cache_len": 5.0}, "int"),
        ({"cache_len": 5, "kv_cache": False}, "kv_cache=False"),
    ],
)
def test_generate_static_cache_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_flops(TINY, 3, 3, **kwargs)


def test_static_cache_len():
    assert static_cache_len(3, 3) == 5
    assert static_cache_len(500, 50) == 549
    assert static_cache_len(7, 1) == 7
    generate_flops(TINY, 3, 3, cache_len=static_cache_len(3, 3))  # the smallest that fits
    for bad in ((0, 3), (3, 0), (3.0, 3)):
        with pytest.raises(ValueError):
            static_cache_len(*bad)
