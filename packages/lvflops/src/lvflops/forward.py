"""Analytic FLOPs of one forward pass of a Qwen2-style decoder under the coursework rules.

Conventions (see the package README for the full table):

* Everything is counted per sequence and multiplied by ``batch``.
* ``seq_len`` query positions attend to ``kv_len`` key/value positions (``kv_len = seq_len`` for an
  ordinary forward; larger with a KV cache). The whole ``seq_len x kv_len`` score matrix is
  computed, scaled, masked and soft-maxed, as eager attention does.
* ``gqa_as_mha=True`` (default) counts k/v projections, their biases and RoPE on keys as if there
  were ``num_heads`` KV heads; ``False`` uses the true ``num_kv_heads``. Attention itself always
  has ``num_heads`` query heads over (repeated) KV heads.
* The 1/sqrt(head_dim) constant and the RoPE cos/sin tables are computed once outside the
  per-token work: free. Embedding lookup is free.
* ``loss=True`` adds the cross-entropy over every position whose logits are computed (the
  ``loss`` component): torch's ``cross_entropy`` runs its log-softmax over every row it is given,
  ignored labels (-100: padding, the shifted-off last position) included. Per row
  :func:`~lvflops.primitives.cross_entropy_row` (13V + 10), plus the mean over the batch's P rows,
  (P - 1) adds + 1 divide = exactly 1 FLOP per row. Not a matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lvflops.flops import COMPONENTS, Flops
from lvflops.primitives import (
    ADD,
    MUL,
    cross_entropy_row,
    lora_token,
    matmul,
    mean_reduction,
    rmsnorm_token,
    rope_vector,
    softmax_row,
    swiglu_element,
)
from lvflops.shape import ModelShape

DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "v_proj")


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


# The matrix products among a layer's components (the rest are elementwise or reductions).
_MATMULS = (
    "q_proj", "k_proj", "v_proj", "attn_scores", "attn_values", "o_proj", "mlp_gate", "mlp_up",
    "mlp_down",
)  # fmt: skip


def _lora_layer(
    shape: ModelShape,
    seq_len: int,
    rank: int | None,
    targets: Sequence[str],
    gqa_as_mha: bool,
) -> tuple[int, int]:
    """(all FLOPs, matrix-product FLOPs) of the LoRA paths of one layer over `seq_len`
    positions; (0, 0) without LoRA."""
    if rank is None:
        return 0, 0
    total = mm = 0
    for module in dict.fromkeys(targets):
        d_in, d_out = shape.linear_dims(module, gqa_as_mha)
        t, m = lora_token(d_in, d_out, rank)
        total, mm = total + seq_len * t, mm + seq_len * m
    return total, mm


def forward_flops(
    shape: ModelShape,
    seq_len: int,
    batch: int = 1,
    lora_rank: int | None = None,
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS,
    lm_head_bias: bool = False,
    gqa_as_mha: bool = True,
    kv_len: int | None = None,
    logits_len: int | None = None,
    loss: bool = False,
) -> Flops:
    """FLOPs of one forward pass over ``batch`` sequences of ``seq_len`` new positions.

    Args:
        shape: the model shape.
        seq_len: query positions processed in this pass (1 for a KV-cache decode step).
        batch: sequences in the batch.
        lora_rank: rank of LoRA adapters on ``lora_targets`` in every layer; None for no LoRA.
        lora_targets: PEFT names of the wrapped linear layers (default q_proj, v_proj).
        lm_head_bias: count a bias on the LM head (``logits_len * vocab`` adds).
        gqa_as_mha: count grouped-query attention as standard multi-head attention.
        kv_len: key/value positions attended to (cached context plus the new positions);
            defaults to ``seq_len``; must be at least ``seq_len``.
        logits_len: positions whose logits the LM head computes; defaults to ``seq_len``
            (every position). Pass 1 to count only the last position's logits.
        loss: count the cross-entropy loss over the ``logits_len`` positions (``loss``
            component): per position a stable log-softmax, the pick and the negation,
            13 * vocab + 10, plus the position's share of the mean over the whole batch, which is
            exactly 1 (the mean of P values is P - 1 adds and 1 divide). So ``loss`` is
            ``batch * logits_len * (13 * vocab + 11)``. Labels are not known here: every computed
            row is counted, ignored ones (-100) included, as torch's log-softmax computes them;
            the negation and the mean of ignored rows (2 FLOPs each) are an upper bound.
            Default False: a plain forward or a generation step has no loss.
    """
    kv_len = seq_len if kv_len is None else kv_len
    logits_len = seq_len if logits_len is None else logits_len
    _check_positive(seq_len=seq_len, batch=batch, kv_len=kv_len, lora_rank=lora_rank)
    if kv_len < seq_len:
        raise ValueError(f"kv_len ({kv_len}) must be at least seq_len ({seq_len})")
    if not 0 <= logits_len <= seq_len:
        raise ValueError(f"logits_len must be in [0, seq_len], got {logits_len}")

    s, k = seq_len, kv_len
    d, hd, h = shape.hidden_size, shape.head_dim, shape.num_heads
    hk = shape.kv_heads_counted(gqa_as_mha)
    qw, kvw = h * hd, hk * hd
    inter, vocab = shape.intermediate_size, shape.vocab_size

    layer: dict[str, int] = {
        "rmsnorm": 2 * s * rmsnorm_token(d),
        "q_proj": matmul(s, d, qw),
        "k_proj": matmul(s, d, kvw),
        "v_proj": matmul(s, d, kvw),
        "qkv_bias": s * (qw + 2 * kvw) * ADD if shape.qkv_bias else 0,
        "rope": s * (h + hk) * rope_vector(hd),
        "attn_scores": h * matmul(s, hd, k),
        "attn_scale": h * s * k * MUL,
        "attn_mask": h * s * k * ADD,
        "softmax": h * s * softmax_row(k),
        "attn_values": h * matmul(s, k, hd),
        "o_proj": matmul(s, qw, d),
        "residual": 2 * s * d * ADD,
        "mlp_gate": matmul(s, d, inter),
        "mlp_up": matmul(s, d, inter),
        "swiglu": s * inter * swiglu_element(),
        "mlp_down": matmul(s, inter, d),
    }
    lora_total, lora_mm = _lora_layer(shape, s, lora_rank, lora_targets, gqa_as_mha)
    layer["lora"] = lora_total
    layer_mm = sum(layer[c] for c in _MATMULS) + lora_mm

    comps = dict.fromkeys(COMPONENTS, 0)
    for name, value in layer.items():
        comps[name] = shape.num_layers * value
    comps["final_norm"] = s * rmsnorm_token(d)
    comps["lm_head"] = matmul(logits_len, d, vocab)
    comps["lm_head_bias"] = logits_len * vocab * ADD if lm_head_bias else 0
    if loss:
        # The mean over all batch * logits_len rows costs mean_reduction(batch * logits_len),
        # which is one FLOP per row: counted per sequence as mean_reduction(logits_len), the same
        # after ``* batch``.
        comps["loss"] = logits_len * cross_entropy_row(vocab) + mean_reduction(logits_len)
    matmul_total = shape.num_layers * layer_mm + comps["lm_head"]
    return Flops(comps, matmul_total) * batch


def decode_step_flops(
    shape: ModelShape,
    context_len: int,
    batch: int = 1,
    new_tokens: int = 1,
    **forward_kwargs: Any,
) -> Flops:
    """One KV-cache step: ``new_tokens`` positions attending to ``context_len`` positions in all.

    ``context_len`` includes the new positions (cached keys plus the ones computed now).
    Equivalent to ``forward_flops(shape, new_tokens, batch, kv_len=context_len, ...)``.
    """
    return forward_flops(shape, new_tokens, batch, kv_len=context_len, **forward_kwargs)
