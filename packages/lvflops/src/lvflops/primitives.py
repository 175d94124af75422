"""Primitive costs of the coursework FLOPs rules and the per-operation formulas built on them.

Every function returns an exact Python ``int``. Costs per primitive:

* add, subtract, negate, multiply, divide, inverse, ReLU, abs, compare = 1
* exp, log, sqrt, sin, cos = 10
* a product of an (m x n) and an (n x p) matrix = m * p * (2n - 1)
* indexing, memory movement and tokenization = 0

A comparison (used by the max of a numerically stable softmax) is counted like ReLU/abs: 1.
"""

from __future__ import annotations

ADD = SUB = NEG = MUL = DIV = INV = RELU = ABS = CMP = 1
EXP = LOG = SQRT = SIN = COS = 10


def matmul(m: int, n: int, p: int) -> int:
    """FLOPs of an (m x n) @ (n x p) product: m*p dot products, each n mults and n-1 adds."""
    if min(m, n, p) < 0:
        raise ValueError(f"matrix dimensions must be non-negative, got {(m, n, p)}")
    if m == 0 or p == 0:
        return 0
    return m * p * (2 * n - 1)


def rmsnorm_token(d: int) -> int:
    """RMSNorm of one vector of width ``d``: ``w * x / sqrt(mean(x^2) + eps)``.

    square (d MUL), sum (d-1 ADD), divide by d (1 DIV), add eps (1 ADD), sqrt (10),
    inverse of the root (1 INV), scale x by it (d MUL), multiply by the weight (d MUL).
    Total 4d + 12.
    """
    return d * MUL + (d - 1) * ADD + DIV + ADD + SQRT + INV + d * MUL + d * MUL


def silu_element() -> int:
    """SiLU of one element, ``x / (1 + exp(-x))``: NEG + EXP + ADD + DIV = 13."""
    return NEG + EXP + ADD + DIV


def swiglu_element() -> int:
    """SwiGLU activation of one hidden element, ``silu(gate) * up``: 13 + 1 MUL = 14."""
    return silu_element() + MUL


def softmax_row(n: int) -> int:
    """Numerically stable softmax over a row of length ``n``: 14n - 2.

    max (n-1 CMP), subtract the max (n SUB), exp (10n), sum (n-1 ADD), normalise (n DIV).
    """
    return (n - 1) * CMP + n * SUB + n * EXP + (n - 1) * ADD + n * DIV


def cross_entropy_row(n: int) -> int:
    """Cross-entropy of one position over ``n`` logits, ``-log_softmax(x)[t]``: 13n + 10.

    A numerically stable log-softmax, evaluated only where the loss needs it:
    max (n-1 CMP), subtract the max (n SUB), exp (10n), sum (n-1 ADD), log of the sum (10 LOG),
    pick the target's shifted logit (indexing: free), subtract the log-sum from it (1 SUB),
    negate (1 NEG). So (n-1) + n + 10n + (n-1) + 10 + 1 + 1 = 13n + 10.

    torch's ``log_softmax`` writes the whole row of n log-probabilities (n SUB of the log-sum
    instead of 1); only the picked one enters the loss, so the rules count 1. Averaging the rows
    is :func:`mean_reduction`, not part of this figure.
    """
    if n <= 0:
        raise ValueError(f"cross-entropy needs at least one logit, got {n}")
    return (n - 1) * CMP + n * SUB + n * EXP + (n - 1) * ADD + LOG + SUB + NEG


def mean_reduction(count: int) -> int:
    """Mean of ``count`` values: ``count - 1`` ADD for the sum and 1 DIV = ``count`` (0 if none).

    Being exactly one FLOP per value, the mean over all rows of a batch is the sum of one FLOP
    per row of every sequence, so it scales exactly with the batch (``Flops * batch``).
    """
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    return (count - 1) * ADD + DIV if count else 0


def rope_vector(head_dim: int) -> int:
    """Applying RoPE to one head vector of width ``head_dim`` (tables cos/sin are free): 3.5 hd.

    ``x * cos + rotate_half(x) * sin``: rotate_half negates hd/2 elements (hd/2 NEG),
    x * cos (hd MUL), rotate_half(x) * sin (hd MUL), the sum (hd ADD).
    Not a dense matmul.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    return (head_dim // 2) * NEG + head_dim * MUL + head_dim * MUL + head_dim * ADD


def lora_token(d_in: int, d_out: int, rank: int) -> tuple[int, int]:
    """One token through a LoRA adapter: ``base + (x A) B * (alpha / r)``.

    Returns ``(total, matmul_part)``: x A is (1 x d_in)(d_in x r), then (1 x r)(r x d_out);
    the scaling by alpha/r is 1 MUL per output element and adding to the base output 1 ADD per
    output element. Dropout on the adapter input is not counted (identity at lora_dropout = 0).
    """
    mm = matmul(1, d_in, rank) + matmul(1, rank, d_out)
    return mm + d_out * MUL + d_out * ADD, mm
