"""ModelShape, parameter counts and the Flops value type."""

import pytest

from lvflops import QWEN2_5_0_5B, SHAPES, Flops, ModelShape

QWEN_CONFIG = {  # the keys of Qwen2.5-0.5B-Instruct's config.json that matter, plus some that don't
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
}


def test_qwen_n_params():
    d, v, kv, i = 896, 151936, 128, 4864
    layer = (d * d + d) + 2 * (d * kv + kv) + d * d + 3 * d * i + 2 * d
    assert v * d + 24 * layer + d == 494_032_768
    assert QWEN2_5_0_5B.n_params() == 494_032_768
    assert SHAPES["qwen2.5-0.5b"] is QWEN2_5_0_5B


def test_untied_head_adds_params():
    untied = ModelShape.from_hf_config({**QWEN_CONFIG, "tie_word_embeddings": False})
    assert untied.n_params() == 494_032_768 + 151936 * 896


def test_lora_params_match_peft():
    # PEFT LoRA r=4 on q_proj and v_proj of Qwen2.5-0.5B: 270,336 trainable parameters
    assert QWEN2_5_0_5B.lora_n_params(4) == 24 * (4 * (896 + 896) + 4 * (896 + 128)) == 270_336


def test_from_hf_config():
    assert ModelShape.from_hf_config(QWEN_CONFIG) == QWEN2_5_0_5B  # head_dim = 896 / 14
    assert ModelShape.from_hf_config(QWEN2_5_0_5B.to_hf_config()) == QWEN2_5_0_5B
    other = ModelShape(16, 2, 4, 2, 8, 32, 50, False, qkv_bias=False)
    assert ModelShape.from_hf_config(other.to_hf_config()) == other
    assert ModelShape.from_hf_config({**QWEN_CONFIG, "attention_bias": False}).qkv_bias is False
    with pytest.raises(ValueError, match="vocab_size"):
        ModelShape.from_hf_config({k: v for k, v in QWEN_CONFIG.items() if k != "vocab_size"})


@pytest.mark.parametrize(
    "change", [{"num_kv_heads": 3}, {"head_dim": 3}, {"hidden_size": 0}, {"vocab_size": 1.5}]
)
def test_invalid_shapes(change):
    fields = {**QWEN2_5_0_5B.__dict__, **change}
    with pytest.raises(ValueError):
        ModelShape(**fields)


def test_flops_arithmetic():
    a = Flops({"q_proj": 10, "rope": 3}, 10)
    b = Flops({"q_proj": 5, "lora": 7}, 4)
    s = a + b
    assert dict(s.by_component) == {"q_proj": 15, "rope": 3, "lora": 7}
    assert s.total == 25 and s.matmul == 14
    assert 3 * a == a * 3 == Flops({"q_proj": 30, "rope": 9}, 30)
    assert (a * 0).total == 0
    assert Flops.zero().total == 0
    assert s.as_dict() == {
        "total": 25,
        "matmul": 14,
        "by_component": {"q_proj": 15, "rope": 3, "lora": 7},
    }
    with pytest.raises(TypeError):
        _ = a * 1.5
    with pytest.raises(TypeError):
        Flops({"x": 1.0}, 0)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        _ = a * -1


def test_flops_is_immutable():
    a = Flops({"x": 1}, 0)
    with pytest.raises(TypeError):
        a.by_component["x"] = 2  # type: ignore[index]
