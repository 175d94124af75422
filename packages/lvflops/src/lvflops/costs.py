"""Costs of whole workloads built from forward passes: training steps, evaluation, generation.

Budget rule of the coursework: backpropagation costs exactly 2x the forward pass, so one training
step costs 3x its forward pass, the cross-entropy loss included (:func:`train_step_flops`). That is
the figure charged to the budget. A validation-loss pass (:func:`eval_flops`) is one forward with
the loss; generation (:func:`generate_flops`) computes no loss. :func:`executed_train_step_flops` estimates the FLOPs actually executed, which is what an
MFU figure should use: with a frozen base (LoRA) no weight gradients are formed for the base
weights, so a step is about 2x forward plus the weight gradients of the trainable parts, and
grouped-query attention is counted as executed (k/v at ``num_kv_heads``), not as multi-head.
"""

from __future__ import annotations

from typing import Any

from lvflops.flops import Flops
from lvflops.forward import forward_flops
from lvflops.shape import ModelShape

#: Training step = forward + backward, backward = 2 x forward (coursework rule).
TRAIN_STEP_MULTIPLIER = 3


def _with_loss(forward_kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    """``forward_kwargs`` with ``loss=True``; refuses ``loss=False`` (``what`` always has a loss)."""
    if forward_kwargs.get("loss", True) is not True:
        raise ValueError(
            f"{what} always computes the cross-entropy loss: loss={forward_kwargs['loss']!r} is "
            "not allowed (use forward_flops for a forward without loss)"
        )
    return {**forward_kwargs, "loss": True}


def train_step_flops(
    shape: ModelShape, seq_len: int, batch: int = 1, **forward_kwargs: Any
) -> Flops:
    """Budgeted FLOPs of one training step: 3 x ``forward_flops(..., loss=True)``.

    A training step always includes its loss (forward + loss, then backward = 2 x that), so the
    ``loss`` component is always counted: ``loss=True`` may be passed, ``loss=False`` raises
    ValueError. Other ``forward_kwargs`` go to ``forward_flops`` (``lora_rank``,
    ``lm_head_bias``, ...).
    """
    kwargs = _with_loss(forward_kwargs, "a training step")
    return TRAIN_STEP_MULTIPLIER * forward_flops(shape, seq_len, batch, **kwargs)


def executed_train_step_flops(
    shape: ModelShape,
    seq_len: int,
    batch: int = 1,
    frozen_base: bool = True,
    gqa_as_mha: bool = False,
    **forward_kwargs: Any,
) -> Flops:
    """Estimated FLOPs actually executed by one training step (for MFU, not for the budget).

    The forward includes the loss (as in :func:`train_step_flops`; ``loss=False`` raises).
    With ``frozen_base`` (LoRA): forward + input-gradient backward (1 x forward) + weight
    gradients of the trainable parts only (1 x the ``lora`` and ``lm_head_bias`` components).
    Without it (full fine-tuning) this is 3 x the forward, as :func:`train_step_flops`.

    ``gqa_as_mha`` defaults to False here, unlike the budget's count: what runs is grouped-query
    attention, so k_proj/v_proj (their biases, LoRA adapters on them) and RoPE on keys are
    counted at the true ``num_kv_heads`` (for Qwen2.5-0.5B at 512-768 tokens the MHA count is
    about 6% more). Pass True only to reproduce the budget's convention.
    """
    forward_kwargs = _with_loss(forward_kwargs, "a training step")
    forward_kwargs["gqa_as_mha"] = gqa_as_mha
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
    """A validation-loss pass (no gradients): one ``forward_flops(..., loss=True)``.

    Like :func:`train_step_flops` it always counts the loss (``loss=False`` raises ValueError).
    """
    kwargs = _with_loss(forward_kwargs, "a validation-loss pass")
    return forward_flops(shape, seq_len, batch, **kwargs)


def static_cache_len(prompt_len: int, max_new_tokens: int) -> int:
    """Key/value slots of the static cache HF ``generate`` allocates: ``prompt_len + max_new_tokens - 1``.

    ``prompt_len`` is the padded prompt width W of the batch (``input_ids.shape[1]``),
    ``max_new_tokens`` the M passed to ``generate``. The last generated token is never fed back,
    so W + M - 1 positions must fit. See :func:`generate_flops` for the source and for the two
    cases where transformers allocates more (an explicit ``generation_config.max_cache_len``, or
    an earlier ``generate`` call on the same model object with a longer cache).
    """
    for name, value in (("prompt_len", prompt_len), ("max_new_tokens", max_new_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return prompt_len + max_new_tokens - 1


def generate_flops(
    shape: ModelShape,
    prompt_len: int,
    new_tokens: int,
    batch: int = 1,
    kv_cache: bool = True,
    cache_len: int | None = None,
    num_samples: int = 1,
    **forward_kwargs: Any,
) -> Flops:
    """FLOPs of generating ``new_tokens`` tokens after each of ``batch`` ``prompt_len``-token
    prompts, ``num_samples`` continuations per prompt.

    Convention: the forward over the prompts (prefill, ``batch`` rows) yields the logits of new
    token 1; with ``num_samples > 1`` the prompt is prefilled once and its KV cache and last
    logits are shared by its samples, so every later step runs over ``batch * num_samples``
    rows. New token ``i`` (i = 1 .. new_tokens-1) is then fed back to produce token i+1:

    * ``kv_cache=True``, ``cache_len=None`` (dynamic KV cache, HF's default): a 1-position
      forward attending to ``prompt_len + i`` positions; the prefill attends to ``prompt_len``;
    * ``kv_cache=True``, ``cache_len=C`` (a static cache of C slots): the prefill and every
      1-position step attend over all C keys (``kv_len=C``), the unused slots masked;
    * ``kv_cache=False``: a full forward over all ``prompt_len + i`` positions.

    So ``new_tokens - 1`` steps follow the prefill, and ``new_tokens=1`` costs exactly the prefill
    (of ``batch`` rows, whatever ``num_samples``).
    The last generated token is never fed back. ``forward_kwargs`` go to every forward
    (``logits_len=1`` counts only the last position's logits, as ``generate`` computes them);
    generation has no loss, so ``loss=True`` raises ValueError.

    The static cache in transformers 5.24 (``cache_implementation="static"``):

    * ``generation/utils.py``, ``GenerationMixin.generate``: after ``_prepare_generated_length``
      set ``generation_config.max_length = max_new_tokens + input_ids.shape[1]``, it passes
      ``max_cache_length = generation_config.max_length - 1`` to ``_prepare_cache_for_generation``,
      which raises it to ``generation_config.max_cache_len`` if that is set (and larger) and calls
      ``_prepare_static_cache``; that builds ``StaticCache(max_cache_len=max(max_cache_len,
      self._previous_max_cache_length))``, the largest length of any earlier static-cache
      ``generate`` call on the same model object (kept to avoid recompiling).
    * ``cache_utils.py``, ``StaticLayer``: ``lazy_initialization`` allocates keys and values of
      ``[batch, kv_heads, max_cache_len, head_dim]``; ``update`` writes the new positions in place
      and returns the whole ``max_cache_len`` tensors, and ``get_mask_sizes`` returns
      ``kv_length = max_cache_len``, which ``masking_utils._preprocess_mask_arguments`` uses to
      size the sdpa/eager mask. So every forward, the prefill included, attends over
      ``max_cache_len`` keys.

    For a batch with padded prompt width W and ``max_new_tokens=M`` on a fresh model the cache
    length is ``static_cache_len(W, M) = W + M - 1``; pass ``cache_len`` the length really
    allocated (``cache.layers[0].max_cache_len``, or ``model._previous_max_cache_length`` after
    the call) when earlier calls or ``max_cache_len`` may have made it larger. ``cache_len`` must
    be at least ``prompt_len + new_tokens - 1`` (the positions that must fit).
    """
    for name, value in (("new_tokens", new_tokens), ("num_samples", num_samples)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if forward_kwargs.get("loss"):
        raise ValueError("generation computes no loss: loss=True is not allowed")
    if "kv_len" in forward_kwargs:
        raise ValueError("generate_flops sets kv_len itself: use cache_len for a static cache")
    if cache_len is not None:
        if not kv_cache:
            raise ValueError("cache_len (a static KV cache) contradicts kv_cache=False")
        needed = prompt_len + new_tokens - 1
        if not isinstance(cache_len, int) or isinstance(cache_len, bool) or cache_len < needed:
            raise ValueError(
                f"cache_len must be an int of at least prompt_len + new_tokens - 1 = {needed} "
                f"(the positions that must fit in the static cache), got {cache_len!r}"
            )
    total = forward_flops(shape, prompt_len, batch, kv_len=cache_len, **forward_kwargs)
    rows = batch * num_samples
    for i in range(1, new_tokens):
        context = prompt_len + i
        if not kv_cache:
            step = forward_flops(shape, context, rows, **forward_kwargs)
        else:
            kv_len = context if cache_len is None else cache_len
            step = forward_flops(shape, 1, rows, kv_len=kv_len, **forward_kwargs)
        total = total + step
    return total
