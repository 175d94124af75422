"""Where the model's arithmetic runs: the CPU's denormal mode and a model's device.

A module of its own, below everything that loads, trains or runs a model (`lvmodel.base`,
`lvmodel.tiny`, `lvmodel.decode`, `lvmodel.forecast`), so that none of them imports another for it.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["flush_denormals", "model_device"]


def flush_denormals() -> None:
    """CPU arithmetic flushes denormal floats to zero (x86 FTZ/DAZ; GPUs flush in most kernels).

    Measured on the tiny preset's LoRA step on 2 cores: 311 -> 214 ms (`benchmarks/denormals.py`;
    310-430 -> 160 ms a step inside `fit`, timed as 60 steps less 10). Its attention
    logits reach about 70, and the backward of PyTorch's CPU flash attention then computes
    exp() far below float32's normal range, where x86 takes a slow path (the backward alone:
    50 ms -> 10 ms a layer; `benchmarks/denormals.py`). torch's worker threads
    inherit the mode from the thread that starts them: call this before the first parallel
    torch operation of the process (`load_base` and `lvmodel.tiny.build_tiny_base` do, first).
    Values below 1.2e-38 become 0; nothing the project computes is that small on purpose.
    """
    torch.set_flush_denormal(True)


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")
