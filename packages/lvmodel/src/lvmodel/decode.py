"""Grammar-constrained decoding of a left-padded batch: each prompt prefilled once, its samples
decoded together, and no host synchronisation per token.

:class:`Decoder` runs the model itself rather than through transformers' ``generate``:

1. **One prefill per prompt.** ``generate(num_return_sequences=S)`` repeats every prompt S times
   before its prefill. Here the prompts are prefilled once, then the KV cache, the attention
   mask and the last logits are repeated to the ``S`` samples (rows ``b * S + s``, the order
   ``generate`` uses), and decoding continues over ``B x S`` rows.
2. **No per-token host sync.** ``generate`` reads the device every token to stop
   (``unfinished_sequences.max() == 0``; transformers 5.24 defers that read on MPS only). The
   grammar bounds a continuation between :func:`~lvmodel.grammar.min_new_tokens_for` and
   :func:`~lvmodel.grammar.max_new_tokens_for` tokens, so this loop asks whether every row is
   done only from the shortest length on, and then every ``check_every`` tokens (every token on
   the CPU, where reading a tensor costs nothing; every 4 on an accelerator).
3. **A static KV cache on every device.** ``generate`` compiles the forward when the cache is
   static on CUDA (once per padded shape, tens of seconds); this loop never compiles, so every
   device gets the static cache: no per-step concatenation of keys and values, and no per-step
   read of the padding mask (transformers 5.24's ``create_causal_mask`` reads it, through
   ``_ignore_causal_mask_sdpa``, at every 1-token step of a dynamic cache, but only at the
   prefill of a static one).

Measured with ``benchmarks/generation.py`` (tiny base, 100 generated series, history 50,
horizon 5, context 256, 1 CPU thread, batches of 16 series): 10 samples per series went from
4.0 series/s with ``generate`` to 9.4 (3.9x fewer FLOPs: the 256-token prefill once instead of
10 times); greedy is unchanged (31.5 and 27.8 series/s, within the shared machine's noise: the
same passes run, and reading a CPU tensor costs nothing). Points 2 and 3 are what an accelerator
gains (no idle device between tokens, no compilation); they cannot be measured on the CPU.

Rows that finished keep being computed (the grammar makes them write the pad token) until every
row is done: the caller charges ``new`` tokens for every row, where ``new`` is the length this
loop returns. Greedy decoding computes what ``generate`` computes (same inputs, masks, positions
and processors), so its tokens are the same. Sampling draws ``torch.multinomial`` once per step
over the ``B x S`` rows, as ``generate`` does; only the prefill runs over ``B`` rows instead of
``B x S``, so the same seed gives ``generate``'s samples wherever those two prefills give the
same bits (tests/lvmodel/test_decode.py; seen on the CPU for tiny and for a real Qwen2.5 0.5B).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import StaticCache, TemperatureLogitsWarper, TopPLogitsWarper

from lvflops import static_cache_len
from lvmodel.device import model_device
from lvmodel.grammar import LLMTimeGrammar, LLMTimeLogitsProcessor

__all__ = ["Decoder", "repeat_cache_rows"]

ACCELERATOR_CHECK_EVERY = 4
"""Tokens between two "is every row done?" reads on an accelerator (each read waits for it)."""


def repeat_cache_rows(cache: Any, repeats: int) -> None:
    """Repeat every row of ``cache`` ``repeats`` times in place (row ``b`` becomes rows
    ``b * repeats .. b * repeats + repeats - 1``).

    transformers' ``Cache.batch_repeat_interleave`` does this for dynamic layers only (its
    static layers have no such method), so the layers' keys and values are repeated here.
    """
    if repeats == 1:
        return
    for layer in cache.layers:
        if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
            continue
        layer.keys = layer.keys.repeat_interleave(repeats, dim=0)
        layer.values = layer.values.repeat_interleave(repeats, dim=0)
        if hasattr(layer, "batch_size"):
            layer.batch_size = layer.keys.shape[0]


class Decoder:
    """Constrained decoding of one forecast's batches (see the module docstring).

    Args:
        model: a HF causal LM (or a PeftModel around one), in eval mode, under inference mode.
        grammar: the LLMTime grammar (its pad id fills finished rows).
        horizon: time steps each row writes.
        max_new: the most new tokens (the grammar's longest continuation).
        min_new: the fewest new tokens a complete continuation has.
        num_samples: rows per prompt; 1 = greedy (argmax), more = sampling.
        temperature, top_p: sampling settings, applied after the grammar's mask (as
            ``generate`` applies its warpers after the caller's processors).
        check_every: tokens between "is every row done?" reads once ``min_new`` tokens are out
            (None: 1 on the CPU, :data:`ACCELERATOR_CHECK_EVERY` elsewhere).
    """

    def __init__(
        self,
        model: Any,
        grammar: LLMTimeGrammar,
        horizon: int,
        max_new: int,
        min_new: int,
        num_samples: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        check_every: int | None = None,
    ) -> None:
        self.model, self.grammar, self.horizon = model, grammar, horizon
        self.max_new, self.min_new, self.num_samples = max_new, min(min_new, max_new), num_samples
        base = getattr(model, "get_base_model", lambda: model)()
        self.config = base.config
        params = inspect.signature(base.forward).parameters
        # transformers >= 5.2x names the cache `cache` (the old name warns); older ones
        # `past_key_values`, and want `cache_position`.
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.pass_cache_position = "cache_position" in params
        self.device = model_device(model)
        if check_every is None:
            check_every = 1 if self.device.type == "cpu" else ACCELERATOR_CHECK_EVERY
        self.check_every = check_every
        self.warpers: list[Any] = []
        if num_samples > 1:
            if temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(temperature))
            if top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p))

    def cache_len(self, width: int) -> int:
        """Slots of the static cache of a batch whose prompts are padded to ``width``."""
        return static_cache_len(width, self.max_new)

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor, cache: Any, at: int
    ) -> torch.Tensor:
        """The float32 logits of the last position, the KV cache updated in place."""
        kwargs: dict[str, Any] = {self.cache_arg: cache}
        if self.pass_cache_position:
            kwargs["cache_position"] = torch.arange(at, at + ids.shape[1], device=ids.device)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        return out.logits[:, -1].to(dtype=torch.float32, copy=True)

    def _done(self, seps: torch.Tensor, new: int) -> bool:
        """Whether to stop after ``new`` tokens; reads the device only when it may be true."""
        if new >= self.max_new:
            return True
        due = new >= self.min_new and (new - self.min_new) % self.check_every == 0
        return due and bool((seps >= self.horizon).all())

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Tokens generated after each left-padded prompt of ``ids`` (B x W, ``mask`` its
        attention mask): ``(B * num_samples, new)`` on the CPU, rows ``b * S + s``, finished
        rows padded. Run it under the caller's seed (sampling draws from the global RNG)."""
        dev, samples = self.device, self.num_samples
        ids, mask = ids.to(dev), mask.to(dev)
        width = ids.shape[1]
        full_mask = torch.ones(ids.shape[0], width + self.max_new, dtype=mask.dtype, device=dev)
        full_mask[:, :width] = mask
        position = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = StaticCache(config=self.config, max_cache_len=self.cache_len(width))
        logits = self._forward(ids, full_mask[:, :width], position, cache, 0)
        last = position[:, -1:]
        if samples > 1:  # the prompt's prefill, shared by its samples
            repeat_cache_rows(cache, samples)
            full_mask = full_mask.repeat_interleave(samples, dim=0)
            logits = logits.repeat_interleave(samples, dim=0)
            last = last.repeat_interleave(samples, dim=0)
        processor = LLMTimeLogitsProcessor(self.grammar, self.horizon)
        rows = full_mask.shape[0]
        out = torch.full((rows, self.max_new), self.grammar.pad_token_id, device=dev)
        seps = torch.zeros(rows, dtype=torch.long, device=dev)
        new = 0
        while True:
            seen = out[:, :new]
            scores = processor(seen, logits)
            for warper in self.warpers:
                scores = warper(seen, scores)
            if samples > 1:
                token = torch.multinomial(scores.softmax(dim=-1), num_samples=1).squeeze(1)
            else:
                token = scores.argmax(dim=-1)
            out[:, new] = token
            new += 1
            seps += token == self.grammar.time_sep_id
            if self._done(seps, new):
                break
            logits = self._forward(
                token[:, None], full_mask[:, : width + new], last + new, cache, width + new - 1
            )
        return out[:, :new].cpu()
