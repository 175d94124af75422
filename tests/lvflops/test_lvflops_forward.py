"""Forward FLOPs of a tiny shape against figures computed by hand from the coursework rules."""

import pytest

from lvflops import COMPONENTS, ModelShape, decode_step_flops, forward_flops
from lvflops.primitives import cross_entropy_row, mean_reduction

# hidden 8, 1 layer, 2 query heads, 1 KV head of width 4, MLP 16, vocab 11.
TINY = ModelShape(
    hidden_size=8,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=4,
    intermediate_size=16,
    vocab_size=11,
    tie_word_embeddings=True,
)

# seq 3, batch 1, true GQA widths (k/v width 4). Each line: the formula by hand.
HAND_GQA = {
    # 2 norms x 3 tokens x (8 sq + 7 add + 1 div + 1 eps + 10 sqrt + 1 inv + 8 scale + 8 weight)
    "rmsnorm": 2 * 3 * (8 + 7 + 1 + 1 + 10 + 1 + 8 + 8),
    "q_proj": 3 * 8 * (2 * 8 - 1),  # (3x8)(8x8)
    "k_proj": 3 * 4 * (2 * 8 - 1),  # (3x8)(8x4)
    "v_proj": 3 * 4 * (2 * 8 - 1),
    "qkv_bias": 3 * (8 + 4 + 4),
    # per vector of width 4: 2 negate + 4 mult (cos) + 4 mult (sin) + 4 add; 3 x (2 q + 1 k) vectors
    "rope": 3 * (2 + 1) * (2 + 4 + 4 + 4),
    "attn_scores": 2 * (3 * 3 * (2 * 4 - 1)),  # 2 heads x (3x4)(4x3)
    "attn_scale": 2 * 3 * 3,
    "attn_mask": 2 * 3 * 3,
    # per row of 3: 2 compare (max) + 3 subtract + 3 exp x 10 + 2 add + 3 divide; 2 heads x 3 rows
    "softmax": 2 * 3 * (2 + 3 + 30 + 2 + 3),
    "attn_values": 2 * (3 * 4 * (2 * 3 - 1)),  # 2 heads x (3x3)(3x4)
    "o_proj": 3 * 8 * (2 * 8 - 1),
    "residual": 2 * 3 * 8,
    "mlp_gate": 3 * 16 * (2 * 8 - 1),
    "mlp_up": 3 * 16 * (2 * 8 - 1),
    # per element: negate + exp (10) + add 1 + divide (SiLU) + multiply by up
    "swiglu": 3 * 16 * (1 + 10 + 1 + 1 + 1),
    "mlp_down": 3 * 8 * (2 * 16 - 1),
    "final_norm": 3 * (8 + 7 + 1 + 1 + 10 + 1 + 8 + 8),
    "lm_head": 3 * 11 * (2 * 8 - 1),
    "lm_head_bias": 0,
    "loss": 0,
    "lora": 0,
}
MATMULS = ("q_proj", "k_proj", "v_proj", "attn_scores", "attn_values", "o_proj")
MATMULS += ("mlp_gate", "mlp_up", "mlp_down", "lm_head")


def test_tiny_by_hand_true_gqa():
    f = forward_flops(TINY, 3, gqa_as_mha=False)
    assert dict(f.by_component) == HAND_GQA
    assert f.total == 5571
    assert f.total == sum(HAND_GQA.values())
    assert f.matmul == sum(HAND_GQA[c] for c in MATMULS) == 4005


def test_tiny_by_hand_gqa_as_mha():
    f = forward_flops(TINY, 3)  # default: GQA counted as MHA, k/v width 8
    hand = dict(HAND_GQA)
    hand["k_proj"] = hand["v_proj"] = 3 * 8 * (2 * 8 - 1)
    hand["qkv_bias"] = 3 * (8 + 8 + 8)
    hand["rope"] = 3 * (2 + 2) * (2 + 4 + 4 + 4)
    assert dict(f.by_component) == hand
    assert f.total - forward_flops(TINY, 3, gqa_as_mha=False).total == 2 * 180 + 24 + 42


def test_tiny_lora_and_lm_head_bias():
    f = forward_flops(TINY, 3, lora_rank=2, lm_head_bias=True, gqa_as_mha=False)
    # q: (1x8)(8x2) + (1x2)(2x8) + 8 scale + 8 add; v: (1x8)(8x2) + (1x2)(2x4) + 4 + 4; x 3 tokens
    q_lora = 2 * 15 + 8 * 3 + 8 + 8
    v_lora = 2 * 15 + 4 * 3 + 4 + 4
    assert f.by_component["lora"] == 3 * (q_lora + v_lora) == 360
    assert f.by_component["lm_head_bias"] == 3 * 11
    assert f.matmul == 4005 + 3 * (2 * 15 + 8 * 3 + 2 * 15 + 4 * 3)
    assert f.total == 5571 + 360 + 33


def test_lora_targets_and_mha_widths():
    mha = forward_flops(TINY, 3, lora_rank=2, lora_targets=("k_proj",))
    gqa = forward_flops(TINY, 3, lora_rank=2, lora_targets=("k_proj",), gqa_as_mha=False)
    assert mha.by_component["lora"] == 3 * (2 * 15 + 8 * 3 + 8 + 8)
    assert gqa.by_component["lora"] == 3 * (2 * 15 + 4 * 3 + 4 + 4)
    with pytest.raises(ValueError, match="unknown linear module"):
        forward_flops(TINY, 3, lora_rank=2, lora_targets=("wq",))


def test_batch_multiplies_everything():
    one = forward_flops(TINY, 3, lora_rank=2, lm_head_bias=True)
    assert forward_flops(TINY, 3, batch=5, lora_rank=2, lm_head_bias=True) == 5 * one


def test_decode_step_by_hand():
    # 1 new position attending to 4 positions (3 cached + itself), true GQA widths
    f = decode_step_flops(TINY, 4, gqa_as_mha=False)
    assert f == forward_flops(TINY, 1, kv_len=4, gqa_as_mha=False)
    hand = {
        "rmsnorm": 2 * 44,
        "q_proj": 8 * 15,
        "k_proj": 4 * 15,
        "v_proj": 4 * 15,
        "qkv_bias": 16,
        "rope": 3 * 14,
        "attn_scores": 2 * (4 * 7),  # (1x4)(4x4)
        "attn_scale": 2 * 4,
        "attn_mask": 2 * 4,
        "softmax": 2 * (3 + 4 + 40 + 3 + 4),
        "attn_values": 2 * (4 * (2 * 4 - 1)),  # (1x4)(4x4)
        "o_proj": 8 * 15,
        "residual": 16,
        "mlp_gate": 16 * 15,
        "mlp_up": 16 * 15,
        "swiglu": 16 * 14,
        "mlp_down": 8 * 31,
        "final_norm": 44,
        "lm_head": 11 * 15,
        "lm_head_bias": 0,
        "loss": 0,
        "lora": 0,
    }
    assert dict(f.by_component) == hand
    assert f.total == 1919


def test_logits_len_counts_only_some_positions():
    f = forward_flops(TINY, 3, logits_len=1, lm_head_bias=True)
    assert f.by_component["lm_head"] == 11 * 15
    assert f.by_component["lm_head_bias"] == 11


# Cross-entropy of one position over the 11 logits of TINY: max 10 compares, subtract the max 11,
# exp 11 x 10, sum 10 adds, log of the sum 10, subtract the log-sum from the picked logit 1, negate 1.
CE_ROW = 10 + 11 + 110 + 10 + 10 + 1 + 1


def test_loss_by_hand():
    assert CE_ROW == 153
    plain = forward_flops(TINY, 3, gqa_as_mha=False)
    f = forward_flops(TINY, 3, gqa_as_mha=False, loss=True)
    # 3 rows, then their mean: 2 adds + 1 divide
    assert f.by_component["loss"] == 3 * CE_ROW + 2 + 1 == 462
    assert f.total == 5571 + 462
    assert f.matmul == plain.matmul == 4005  # the loss is not a matrix product
    assert dict(f.by_component) == {**HAND_GQA, "loss": 462}
    assert plain.by_component["loss"] == 0  # no loss unless asked for


def test_loss_mean_scales_with_batch():
    # batch 4: 12 rows; the mean over all of them is 11 adds + 1 divide = 12, one per row
    f = forward_flops(TINY, 3, batch=4, loss=True)
    assert f.by_component["loss"] == 12 * CE_ROW + 11 + 1 == 1848
    assert f == 4 * forward_flops(TINY, 3, loss=True)


def test_loss_follows_logits_len():
    assert forward_flops(TINY, 3, logits_len=1, loss=True).by_component["loss"] == CE_ROW + 1
    assert forward_flops(TINY, 3, logits_len=0, loss=True).by_component["loss"] == 0


def test_loss_primitives():
    assert cross_entropy_row(11) == CE_ROW
    assert cross_entropy_row(1) == 0 + 1 + 10 + 0 + 10 + 1 + 1
    assert [mean_reduction(n) for n in (0, 1, 2, 7)] == [0, 1, 2, 7]  # n-1 adds + 1 divide
    with pytest.raises(ValueError):
        cross_entropy_row(0)
    with pytest.raises(ValueError):
        mean_reduction(-1)


def test_components_complete_and_ordered():
    assert tuple(forward_flops(TINY, 3).by_component) == COMPONENTS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seq_len": 0},
        {"seq_len": 3, "batch": 0},
        {"seq_len": 3, "kv_len": 2},
        {"seq_len": 3, "lora_rank": 0},
        {"seq_len": 3, "logits_len": 4},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        forward_flops(TINY, **kwargs)
