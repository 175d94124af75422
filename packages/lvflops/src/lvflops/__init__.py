"""lvflops: analytic FLOPs of Qwen2-style decoders under the coursework rules.

Pure Python (no torch, no numpy). Forward passes by component (the cross-entropy loss on request),
training steps (3 x (forward + loss)), validation-loss passes, generation with a dynamic or static
KV cache or without one, and a FLOPs :class:`Budget`.
"""

from lvflops.budget import DEFAULT_BUDGET, Budget, BudgetExceededError, Charge
from lvflops.costs import (
    TRAIN_STEP_MULTIPLIER,
    eval_flops,
    executed_train_step_flops,
    generate_flops,
    static_cache_len,
    train_step_flops,
)
from lvflops.flops import COMPONENTS, Flops
from lvflops.forward import DEFAULT_LORA_TARGETS, decode_step_flops, forward_flops
from lvflops.shape import LORA_MODULES, QWEN2_5_0_5B, SHAPES, ModelShape

__all__ = [
    "COMPONENTS",
    "DEFAULT_BUDGET",
    "DEFAULT_LORA_TARGETS",
    "LORA_MODULES",
    "QWEN2_5_0_5B",
    "SHAPES",
    "TRAIN_STEP_MULTIPLIER",
    "Budget",
    "BudgetExceededError",
    "Charge",
    "Flops",
    "ModelShape",
    "decode_step_flops",
    "eval_flops",
    "executed_train_step_flops",
    "forward_flops",
    "generate_flops",
    "static_cache_len",
    "train_step_flops",
]

__version__ = "0.1.0"
