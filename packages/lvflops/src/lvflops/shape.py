"""Shapes of Qwen2-style decoder models: :class:`ModelShape`, ready shapes and parameter counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Linear layers of a Qwen2 block that a LoRA adapter can wrap (PEFT module names).
LORA_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclass(frozen=True)
class ModelShape:
    """The numbers that fix the FLOPs of a Qwen2-style decoder (RMSNorm, RoPE, GQA, SwiGLU MLP)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")

    @property
    def q_width(self) -> int:
        """Output width of q_proj (and input width of o_proj): num_heads * head_dim."""
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """True output width of k_proj / v_proj: num_kv_heads * head_dim."""
        return self.num_kv_heads * self.head_dim

    def kv_heads_counted(self, gqa_as_mha: bool) -> int:
        """KV heads that the FLOPs count uses: num_heads if GQA is counted as MHA."""
        return self.num_heads if gqa_as_mha else self.num_kv_heads

    def linear_dims(self, module: str, gqa_as_mha: bool = False) -> tuple[int, int]:
        """``(d_in, d_out)`` of a block's linear layer by PEFT name (see :data:`LORA_MODULES`)."""
        d, i = self.hidden_size, self.intermediate_size
        kv = self.kv_heads_counted(gqa_as_mha) * self.head_dim
        dims = {
            "q_proj": (d, self.q_width),
            "k_proj": (d, kv),
            "v_proj": (d, kv),
            "o_proj": (self.q_width, d),
            "gate_proj": (d, i),
            "up_proj": (d, i),
            "down_proj": (i, d),
        }
        if module not in dims:
            raise ValueError(f"unknown linear module {module!r}; known: {', '.join(LORA_MODULES)}")
        return dims[module]

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """Build from a Hugging Face ``config.json`` dict (Qwen2 keys; extra keys are ignored).

        ``head_dim`` defaults to hidden_size // num_attention_heads, ``num_key_value_heads`` to
        ``num_attention_heads``; ``qkv_bias`` is read from ``qkv_bias`` or ``attention_bias``
        and defaults to True (Qwen2).
        """
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            shape = cls(
                hidden_size=hidden,
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                intermediate_size=int(config["intermediate_size"]),
                vocab_size=int(config["vocab_size"]),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                qkv_bias=bool(config.get("qkv_bias", config.get("attention_bias", True))),
            )
        except KeyError as err:
            raise ValueError(f"HF config lacks the key {err.args[0]!r}") from err
        return shape

    def to_hf_config(self) -> dict[str, Any]:
        """The Hugging Face config keys of this shape (inverse of :meth:`from_hf_config`)."""
        return {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "qkv_bias": self.qkv_bias,
        }

    def n_params(self) -> int:
        """Parameter count (the LM head counted once when tied to the embeddings)."""
        d = self.hidden_size
        bias = self.qkv_bias
        attn = (d * self.q_width + self.q_width * bias) + 2 * (
            d * self.kv_width + self.kv_width * bias
        )
        attn += self.q_width * d
        mlp = 3 * d * self.intermediate_size
        layer = attn + mlp + 2 * d
        embed = self.vocab_size * d
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return embed + self.num_layers * layer + d + head

    def lora_n_params(self, rank: int, targets: Sequence[str] = ("q_proj", "v_proj")) -> int:
        """Trainable parameters of LoRA adapters of ``rank`` on ``targets`` in every layer."""
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        per_layer = 0
        for module in targets:
            d_in, d_out = self.linear_dims(module, gqa_as_mha=False)
            per_layer += rank * (d_in + d_out)
        return self.num_layers * per_layer


#: Qwen2.5-0.5B(-Instruct): 494,032,768 parameters.
QWEN2_5_0_5B = ModelShape(
    hidden_size=896,
    num_layers=24,
    num_heads=14,
    num_kv_heads=2,
    head_dim=64,
    intermediate_size=4864,
    vocab_size=151936,
    tie_word_embeddings=True,
    qkv_bias=True,
)

#: Named shapes known to the CLI.
SHAPES: dict[str, ModelShape] = {"qwen2.5-0.5b": QWEN2_5_0_5B}
