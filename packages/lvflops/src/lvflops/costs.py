"""Costs of whole workloads built from forward passes: training steps, evaluation, generation.

Budget rule of the coursework: backpropagation costs exactly 2x the forward pass, so one training
step costs 3x its forward pass (:func:`train_step_flops`). That is the figure charged to the
budget. :func:`executed_train_step_flops` estimates the FLOPs actually executed, which is what an
MFU figure should use: with a frozen base (LoRA) no weight gradients are formed for the base
weights, so a step is about 2x forward plus the weight gradients of the trainable parts.
"""

from __future__ import annotations

from typing import Any

from lvflops.flops import Flops
from lvflops.forward import forward_flops
from lvflops.shape import ModelShape

#: Training step = forward + backward, backward = 2 x forward (coursework rule).
TRAIN_STEP_MULTIPLIER = 3


def train_step_flops(
    shape: ModelShape, seq_len: int, batch: int = 1, **forward_kwargs: Any
) -> Flops:
    """Budgeted FLOPs of one training step: 3 x :func:`~lvflops.forward.forward_flops`.

    ``forward_kwargs`` are passed to ``forward_flops`` (``lora_rank``, ``lm_head_bias``, ...).
    """
    return TRAIN_STEP_MULTIPLIER * forward_flops(shape, seq_len, batch, **forward_kwargs)


def executed_train_step_flops(
    shape: ModelShape,
    seq_len: int,
    batch: int = 1,
    frozen_base: bool = True,
    **forward_kwargs: Any,
) -> Flops:
    """Estimated FLOPs actually executed by one training step (for MFU, not for the budget).

    With ``frozen_base`` (LoRA): forward + input-gradient backward (1 x forward) + weight
    gradients of the trainable parts only (1 x the ``lora`` and ``lm_head_bias`` components).
    Without it (full fine-tuning) this is the same as :func:`train_step_flops`.
    """
    fwd = forward_flops(shape, seq_len, batch, **forward_kwargs)
    if not frozen_base:
        return TRAIN_STEP_MULTIPLIER * fwd
    trainable = {
        name: value if name in ("lora", "lm_head_bias") else 0
        for name, value in fwd.by_component.items()
    }
    # The adapters' own matrix products: the matmul difference to the same forward without LoRA.
    base = forward_flops(shape, seq_len, batch, **{**forward_kwargs, "lora_rank": None})
    lora_mm = fwd.matmul - base.matmul
    return 2 * fwd + Flops(trainable, lora_mm)


def eval_flops(shape: ModelShape, seq_len: int, batch: int = 1, **forward_kwargs: Any) -> Flops:
    """Evaluation (loss over a batch, no gradients) is one forward pass: ``forward_flops``."""
    return forward_flops(shape, seq_len, batch, **forward_kwargs)


def generate_flops(
    shape: ModelShape,
    prompt_len: int,
    new_tokens: int,
    batch: int = 1,
    kv_cache: bool = True,
    **forward_kwargs: Any,
) -> Flops:
    """FLOPs of generating ``new_tokens`` tokens after a ``prompt_len``-token prompt (greedy).

    Convention: the forward over the prompt (prefill) yields the logits of new token 1. New token
    ``i`` (i = 1 .. new_tokens-1) is then fed back to produce token i+1:

    * ``kv_cache=True``: a 1-position forward attending to ``prompt_len + i`` positions;
    * ``kv_cache=False``: a full forward over all ``prompt_len + i`` positions.

    So ``new_tokens - 1`` steps follow the prefill, and ``new_tokens=1`` costs exactly the prefill.
    The last generated token is never fed back. ``forward_kwargs`` go to every forward
    (``logits_len=1`` counts only the last position's logits, as ``generate`` computes them).
    """
    if not isinstance(new_tokens, int) or isinstance(new_tokens, bool) or new_tokens < 1:
        raise ValueError(f"new_tokens must be a positive int, got {new_tokens!r}")
    total = forward_flops(shape, prompt_len, batch, **forward_kwargs)
    for i in range(1, new_tokens):
        context = prompt_len + i
        if kv_cache:
            step = forward_flops(shape, 1, batch, kv_len=context, **forward_kwargs)
        else:
            step = forward_flops(shape, context, batch, **forward_kwargs)
        total = total + step
    return total
