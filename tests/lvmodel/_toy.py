"""A toy Qwen2 (2 layers, hidden 32, GQA 4/2, vocab 128, tied embeddings) for fast training
tests: the model with LoRA, and its shape as lvflops counts it; and a small random Qwen2 (hidden
64) for forecasting tests."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lvflops import ModelShape
from lvmodel.lora import LoraSettings, apply_lora

TOY_SHAPE = ModelShape(
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=64,
    vocab_size=128,
    tie_word_embeddings=True,
)


def toy_model(lora: LoraSettings) -> torch.nn.Module:
    """The toy Qwen2 with seed-0 weights, wrapped with `lora`."""
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        tie_word_embeddings=True,
    )
    return apply_lora(Qwen2ForCausalLM(cfg), lora)


def small_qwen2() -> Qwen2ForCausalLM:
    """A random 2-layer Qwen2 (hidden 64, GQA 4/2, vocab 128, tied embeddings, seed 0), eval mode."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).eval()
