"""The causal-LM loss without the whole logits: the LM head and cross-entropy fused, chunk by chunk.

transformers' loss takes the model's (batch x positions x 151,936) logits, in bf16 on a GPU, and
upcasts all of them to float32 before the softmax: at 4 x 768 that is 0.93 GB of bf16 logits and
1.87 GB of float32 beside them, and autograd keeps them for the backward pass. Here the decoder's
last hidden states go through the head and the cross-entropy a chunk of positions at a time, and
each chunk's gradient with respect to the hidden states (and the head bias) is computed at once,
as Liger-Kernel's fused linear cross-entropy does: nothing of size positions x vocabulary outlives
its chunk (`CHUNK_BYTES` of float32 logits). The head weight is frozen in LoRA, so only the
hidden states and the float32 bias receive gradients; the arithmetic is the reference's (bf16
matmul, float32 softmax, the logits' gradient cast to the weight's dtype for the matmul back), so
loss and gradients equal transformers' within float tolerance (tests/lvmodel/test_loss.py).

Why hand-written: Liger-Kernel (`LigerFusedLinearCrossEntropyLoss`) is Triton, CUDA only, and not
installed on the machines this project is checked on; torch 2.13 has no fused linear
cross-entropy. This is the torch path everywhere. Measured with
`command time -v python benchmarks/gpu_check.py --layers 2 --batch 4 --seq-len 768 --steps 1
--warmup 1 --skip-forecast` (CPU, bf16): see docs/gpu.md.

The head bias is added to float32 logits (`lvmodel.lora`), so its updates act at float32
resolution even in a bf16 model.
"""

from __future__ import annotations

from typing import Any

import torch

from lvmodel.lora import head_bias, lm_head

IGNORE_INDEX = -100
CHUNK_BYTES = 256 * 2**20  # float32 logits held at once (about 440 positions at vocab 151,936)


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over valid positions of CE(hidden @ weight.T + bias, label), gradients in the forward."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        want_grad = ctx.needs_input_grad[0] or (bias is not None and ctx.needs_input_grad[2])
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        grad_bias = torch.zeros_like(bias) if want_grad and bias is not None else None
        for lo in range(0, hidden.shape[0], chunk):
            h, y = hidden[lo : lo + chunk], labels[lo : lo + chunk]
            logits = (h @ weight.T).float()
            if bias is not None:
                logits += bias
            valid = y != IGNORE_INDEX
            target = torch.where(valid, y, 0)
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, target[:, None]).squeeze(1)
            total += ((lse - picked) * valid).sum()
            if not want_grad:
                continue
            # d loss / d logits = softmax - onehot, on valid rows only; in place over the logits.
            grad = logits.sub_(lse[:, None]).exp_()
            grad[torch.arange(len(y), device=y.device), target] -= 1.0
            grad *= valid[:, None]
            assert grad_hidden is not None
            grad_hidden[lo : lo + chunk] = grad.to(weight.dtype) @ weight
            if grad_bias is not None:
                grad_bias += grad.sum(0)
        ctx.save_for_backward(grad_hidden, grad_bias)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, grad_bias = ctx.saved_tensors
        gh = grad_hidden * grad_out.to(grad_hidden.dtype) if ctx.needs_input_grad[0] else None
        gb = grad_bias * grad_out if grad_bias is not None and ctx.needs_input_grad[2] else None
        return gh, None, gb, None, None


def decoder_of(model: Any) -> Any:
    """The decoder stack (embeddings, layers, final norm; no head) of a (PEFT-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> torch.Tensor:
    """Summed cross-entropy of `hidden @ weight.T (+ bias)` against `labels` (-100 ignored).

    `hidden` is (N, d) in the model's dtype, `weight` the frozen (V, d) head, `bias` a float32
    (V,) vector or None; the logits are float32 only `chunk_bytes` at a time.
    """
    if weight.requires_grad:
        raise ValueError("linear_cross_entropy trains no head weight (LoRA freezes it)")
    chunk = max(1, chunk_bytes // (4 * weight.shape[0]))
    return _LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk)


def causal_lm_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    decoder: Any = None,
) -> torch.Tensor:
    """The next-token loss of a (PEFT-wrapped) Qwen2-style causal LM, summed over valid labels.

    Runs the decoder (the model's own, or `decoder`: the same module compiled) without its head
    and without a KV cache, then `linear_cross_entropy` over positions 0..T-2 against labels
    1..T-1. The sum stays on the device; divide by the number of valid labels, counted on the
    host from the host's copy (no device read).
    """
    decoder = decoder_of(model) if decoder is None else decoder
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = out.last_hidden_state[:, :-1]
    head = lm_head(model)
    return linear_cross_entropy(
        hidden.reshape(-1, hidden.shape[-1]),
        head.weight,
        labels[:, 1:].reshape(-1),
        head_bias(model),
        chunk_bytes,
    )
