"""How many series a forecast batch may hold: generation memory against a memory budget.

One series of a batch holds, while it is decoded, ``num_samples`` rows; each row holds its KV
cache (keys and values of every layer over the prompt and the new tokens, in the model's dtype)
and the float32 logits of its last position. The prompt's prefill is run once per series (its
samples share it, see :mod:`lvmodel.decode`); its widest transient is the MLP of one layer: the
gate and up projections and their product, ``3 x intermediate`` values per prompt token. So

    series_bytes = num_samples * (kv_per_token * (prompt + new) + vocab * 4)
                   + prompt * 3 * intermediate * dtype_bytes
    kv_per_token = 2 * layers * kv_heads * head_dim * dtype_bytes

and a batch holds ``budget // series_bytes`` series (at least 1). The budget
(:func:`memory_budget`) is a fraction of the free accelerator memory on CUDA, the weights being
already loaded (the rest is left to the per-step transients: the attention's scores, sampling's
sort over the vocabulary, and the allocator's fragmentation), and a fixed 2 GiB on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch

from lvflops import ModelShape

__all__ = [
    "CPU_BUDGET_BYTES",
    "CUDA_FREE_FRACTION",
    "memory_budget",
    "row_bytes",
    "series_bytes",
    "series_per_batch",
]

CPU_BUDGET_BYTES = 2 * 1024**3
"""Generation memory a CPU forecast batch may use (2 GiB)."""

CUDA_FREE_FRACTION = 0.5
"""Share of the free CUDA memory (``torch.cuda.mem_get_info``) a forecast batch may use."""

LOGITS_BYTES = 4
"""Bytes of one logit: the decoder keeps the last position's logits in float32."""


def row_bytes(shape: ModelShape, tokens: int, dtype_bytes: int) -> int:
    """Bytes one decoded row holds: its KV cache over ``tokens`` positions (prompt + new) in
    ``dtype_bytes``, and the float32 logits of its last position."""
    kv_per_token = 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * dtype_bytes
    return kv_per_token * tokens + shape.vocab_size * LOGITS_BYTES


def series_bytes(
    shape: ModelShape, prompt_len: int, new_tokens: int, num_samples: int, dtype_bytes: int
) -> int:
    """Bytes one series of a batch needs: ``num_samples`` rows (:func:`row_bytes`) and its
    prompt's prefill transient (``prompt_len x 3 x intermediate`` values)."""
    rows = num_samples * row_bytes(shape, prompt_len + new_tokens, dtype_bytes)
    return rows + prompt_len * 3 * shape.intermediate_size * dtype_bytes


def series_per_batch(
    shape: ModelShape,
    prompt_len: int,
    new_tokens: int,
    num_samples: int,
    budget_bytes: int,
    dtype_bytes: int,
) -> int:
    """The most series whose generation fits ``budget_bytes`` (at least 1): ``prompt_len`` the
    longest (padded) prompt, ``new_tokens`` the most tokens a row may generate."""
    need = series_bytes(shape, prompt_len, new_tokens, num_samples, dtype_bytes)
    return max(1, int(budget_bytes) // need)


def memory_budget(device: Any) -> int:
    """Bytes a forecast batch may use on ``device``: :data:`CUDA_FREE_FRACTION` of the free
    memory on CUDA, :data:`CPU_BUDGET_BYTES` elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_FRACTION)
    return CPU_BUDGET_BYTES
