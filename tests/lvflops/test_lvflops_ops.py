"""A tiny random Qwen2ForCausalLM counted aten op by aten op under the coursework rules.

Independent of lvflops' formulas: a dispatch mode prices every aten op that produces a floating
tensor by the rules (add, subtract, multiply, divide, negate, compare = 1; exp, log, sqrt = 10;
(m x n)(n x p) = m*p*(2n - 1); indexing, memory, views, copies, casts, embedding = 0), from the
shapes torch really ran. The sum must equal ``forward_flops(..., gqa_as_mha=False)`` exactly, for
a plain forward, with LoRA and the lm_head bias, with the loss (where the two differ only by the
terms :func:`loss_difference` derives), and for generation with a dynamic and a static KV cache.
An op that is not in the tables fails the test, so nothing computed goes uncounted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from lvflops import ModelShape, forward_flops, generate_flops, static_cache_len

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402

aten = torch.ops.aten

# Primitive costs of the coursework rules.
ADD = SUB = MUL = DIV = NEG = INV = CMP = 1
EXP = LOG = SQRT = 10

IGNORE_INDEX = -100


def _mm(m: int, n: int, p: int) -> int:
    return m * p * (2 * n - 1)


def _rows(x: Any, dim: int) -> tuple[int, int]:
    """(number of rows, row length) of a reduction of ``x`` over ``dim``."""
    n = x.shape[dim]
    return x.numel() // n, n


def _reduced(x: Any, out: Any) -> tuple[int, int]:
    """(rows, row length) of a reduction of ``x`` into ``out`` (keepdim or not)."""
    rows = out.numel()
    return rows, x.numel() // rows


def _elementwise(cost: int) -> Callable[..., int]:
    def price(args: tuple, kwargs: dict, out: Any) -> int:
        assert kwargs.get("alpha", 1) == 1, "add/sub with alpha would be one more multiply"
        return cost * out.numel()

    return price


def _mm_cost(args: tuple, kwargs: dict, out: Any) -> int:
    (m, n), p = args[0].shape, args[1].shape[1]
    return _mm(m, n, p)


def _addmm_cost(args: tuple, kwargs: dict, out: Any) -> int:
    assert kwargs.get("beta", 1) == 1 and kwargs.get("alpha", 1) == 1
    (m, n), p = args[1].shape, args[2].shape[1]
    return _mm(m, n, p) + m * p * ADD  # the product, then the bias added to every output


def _bmm_cost(args: tuple, kwargs: dict, out: Any) -> int:
    nb, m, n = args[0].shape
    return nb * _mm(m, n, args[1].shape[2])


def _pow_cost(args: tuple, kwargs: dict, out: Any) -> int:
    assert args[1] == 2, f"only x**2 (one multiply) is priced, got exponent {args[1]}"
    return MUL * out.numel()


def _mean_cost(args: tuple, kwargs: dict, out: Any) -> int:
    rows, n = _reduced(args[0], out)
    return rows * ((n - 1) * ADD + DIV)


def _sum_cost(args: tuple, kwargs: dict, out: Any) -> int:
    rows, n = _reduced(args[0], out)
    return rows * (n - 1) * ADD


def _softmax_cost(args: tuple, kwargs: dict, out: Any) -> int:
    rows, n = _rows(args[0], args[1])
    # max, subtract it, exp, sum, divide every entry by the sum
    return rows * ((n - 1) * CMP + n * SUB + n * EXP + (n - 1) * ADD + n * DIV)


def _log_softmax_cost(args: tuple, kwargs: dict, out: Any) -> int:
    rows, n = _rows(args[0], args[1])
    # max, subtract it, exp, sum, log of the sum, subtract it from every entry
    return rows * ((n - 1) * CMP + n * SUB + n * EXP + (n - 1) * ADD + LOG + n * SUB)


def _nll_loss_cost(args: tuple, kwargs: dict, out: Any) -> int:
    _, target, weight, reduction, ignore_index = args[:5]
    assert weight is None, "class weights would add a multiply per row"
    kept = int((target != ignore_index).sum())  # the count of targets: integer bookkeeping
    negate = kept * NEG  # picking the target's log-probability is indexing
    if reduction == 0:  # none
        return negate
    if reduction == 1:  # mean: kept - 1 adds, 1 divide
        return negate + (kept - 1) * ADD + DIV
    return negate + (kept - 1) * ADD  # sum


#: Price of each aten op (overload packet) that computes floating-point values.
COSTS: dict[Any, Callable[..., int]] = {
    aten.mm: _mm_cost,
    aten.addmm: _addmm_cost,
    aten.bmm: _bmm_cost,
    aten.add: _elementwise(ADD),
    aten.sub: _elementwise(SUB),
    aten.mul: _elementwise(MUL),
    aten.div: _elementwise(DIV),
    aten.neg: _elementwise(NEG),
    aten.exp: _elementwise(EXP),
    aten.log: _elementwise(LOG),
    aten.sqrt: _elementwise(SQRT),
    aten.cos: _elementwise(10),
    aten.sin: _elementwise(10),
    aten.rsqrt: _elementwise(SQRT + INV),  # 1/sqrt(x): a square root and an inverse
    aten.silu: _elementwise(NEG + EXP + ADD + DIV),  # x / (1 + exp(-x))
    aten.pow: _pow_cost,
    aten.mean: _mean_cost,
    aten.sum: _sum_cost,
    aten._softmax: _softmax_cost,
    aten._log_softmax: _log_softmax_cost,
    aten.nll_loss_forward: _nll_loss_cost,
}

#: Ops that only move, view, select, cast or create values: free under the rules. ``where``
#: selects between two values (HF builds the float causal mask with it); ``embedding`` is a lookup.
FREE = {
    aten.view,
    aten._unsafe_view,
    aten.reshape,
    aten.t,
    aten.transpose,
    aten.permute,
    aten.unsqueeze,
    aten.squeeze,
    aten.expand,
    aten.slice,
    aten.select,
    aten.cat,
    aten.clone,
    aten.copy_,
    aten._to_copy,
    aten.alias,
    aten.detach,
    aten.lift_fresh,
    aten.embedding,
    aten.where,
    aten.zeros,
    aten.zero_,
    aten.fill_,
    aten.scalar_tensor,
    aten.empty,
    aten.full,
    aten.index,
    aten.index_copy_,
    aten.index_put_,
}


class CourseworkCounter(TorchDispatchMode):
    """Sums the coursework cost of every aten op on floating tensors.

    Ops that produce no floating tensor (integer position arithmetic, boolean mask comparisons)
    are index bookkeeping: free, recorded in ``integer_ops``. While ``free_depth > 0`` (inside
    the rotary embedding, which computes the cos/sin tables) costs go to ``tables`` instead of
    ``total``; while ``enabled`` is False (generate's own work between forwards) nothing counts.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.tables = 0
        self.by_op: Counter[str] = Counter()
        self.integer_ops: Counter[str] = Counter()
        self.free_depth = 0
        self.enabled = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.enabled:
            return out
        packet = func._overloadpacket
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not any(t.is_floating_point() for t in outs):
            self.integer_ops[str(packet)] += 1
            return out
        if packet in FREE:
            return out
        assert packet in COSTS, f"no coursework cost for {func} (shapes {[t.shape for t in outs]})"
        main = next(t for t in outs if t.is_floating_point())
        cost = COSTS[packet](args, kwargs, main)
        if self.free_depth:
            self.tables += cost
        else:
            self.total += cost
            self.by_op[str(packet)] += cost
        return out


def mark_tables_free(model: Any, counter: CourseworkCounter) -> None:
    """Computing the RoPE cos/sin tables is free: count the rotary embedding apart."""
    (rotary,) = [m for name, m in model.named_modules() if name.endswith("rotary_emb")]

    def enter(*_: Any) -> None:
        counter.free_depth += 1

    def leave(*_: Any) -> None:
        counter.free_depth -= 1

    rotary.register_forward_pre_hook(enter)
    rotary.register_forward_hook(leave)


# 2 layers, 4 query heads over 2 KV heads (GQA) of width 16, MLP 96, vocab 1000: 126,016 params.
SHAPE = ModelShape(
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=96,
    vocab_size=1000,
    tie_word_embeddings=True,
)


def build(lm_head_bias: bool = False, lora_rank: int | None = None) -> Any:
    config = transformers.Qwen2Config(
        **{k: v for k, v in SHAPE.to_hf_config().items() if k != "qkv_bias"},
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert sum(p.numel() for p in model.parameters()) == SHAPE.n_params() == 126_016
    if lm_head_bias:
        model.lm_head.bias = torch.nn.Parameter(0.01 * torch.randn(SHAPE.vocab_size))
    if lora_rank is not None:
        peft = pytest.importorskip("peft")
        lora = peft.LoraConfig(
            r=lora_rank, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]
        )
        model = peft.get_peft_model(model, lora)
        # make the adapters non-zero (B starts at 0); it changes no shape, only the values
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.02)
    return model.eval()


def count_forward(model: Any, **inputs: Any) -> tuple[CourseworkCounter, Any]:
    counter = CourseworkCounter()
    mark_tables_free(model, counter)
    with torch.no_grad(), counter:
        out = model(**inputs)
    assert counter.tables > 0  # the cos/sin tables were computed, and left out
    return counter, out


def loss_difference(labels: Any, vocab: int) -> int:
    """What torch's cross-entropy computes beyond lvflops' ``loss`` component, term by term.

    HF's loss shifts the labels (the last position of every sequence gets -100) and calls
    ``cross_entropy`` on all B*S rows: ``_log_softmax`` then ``nll_loss_forward`` (mean).

    * ``_log_softmax`` writes all V log-probabilities of every row (V subtractions of the
      log-sum); the loss uses only the picked one, which lvflops counts as 1 subtraction:
      torch does V - 1 more per row.
    * ``nll_loss`` negates and averages only the kept rows (labels != -100); lvflops, which sees
      no labels, counts the negation and the mean's 1 FLOP for every row: 2 fewer per ignored row.
    """
    rows = labels.numel()
    kept = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return rows * (vocab - 1) - 2 * (rows - kept)


def test_forward_op_by_op_matches_exactly():
    ids = torch.randint(0, SHAPE.vocab_size, (2, 7))
    counter, out = count_forward(build(), input_ids=ids)
    assert tuple(out.logits.shape) == (2, 7, SHAPE.vocab_size)
    expected = forward_flops(SHAPE, 7, 2, gqa_as_mha=False)
    assert counter.total == expected.total, counter.by_op
    matmuls = sum(counter.by_op[op] for op in ("aten.mm", "aten.bmm", "aten.addmm"))
    bias_adds = 2 * 7 * SHAPE.num_layers * (SHAPE.q_width + 2 * SHAPE.kv_width)  # in addmm
    assert matmuls - bias_adds == expected.matmul
    assert "aten.le" in counter.integer_ops  # the causal mask's comparisons, on positions
    assert forward_flops(SHAPE, 7, 2).total > counter.total  # GQA counted as MHA: more


def test_forward_with_lora_and_lm_head_bias_op_by_op():
    ids = torch.randint(0, SHAPE.vocab_size, (3, 5))
    counter, _ = count_forward(build(lm_head_bias=True, lora_rank=2), input_ids=ids)
    expected = forward_flops(SHAPE, 5, 3, lora_rank=2, lm_head_bias=True, gqa_as_mha=False)
    assert expected.by_component["lora"] > 0 and expected.by_component["lm_head_bias"] > 0
    assert counter.total == expected.total, counter.by_op


@pytest.mark.parametrize("lm_head_bias", [False, True])
def test_forward_with_loss_op_by_op(lm_head_bias):
    batch, seq = 3, 6
    ids = torch.randint(0, SHAPE.vocab_size, (batch, seq))
    labels = ids.clone()
    labels[0, :3] = IGNORE_INDEX  # a masked prompt
    labels[2, 4:] = IGNORE_INDEX  # right padding
    counter, out = count_forward(build(lm_head_bias=lm_head_bias), input_ids=ids, labels=labels)
    assert out.loss is not None and math.isfinite(float(out.loss))
    kw = {"gqa_as_mha": False, "lm_head_bias": lm_head_bias}
    with_loss = forward_flops(SHAPE, seq, batch, loss=True, **kw)
    plain = forward_flops(SHAPE, seq, batch, **kw)
    # 18 rows, 18 - 3 (last positions) - 2 (prompt) - 2 (padding) = 11 kept
    assert loss_difference(labels, SHAPE.vocab_size) == 18 * 999 - 2 * 7
    assert counter.total == with_loss.total + loss_difference(labels, SHAPE.vocab_size)
    loss_ops = counter.by_op["aten._log_softmax"] + counter.by_op["aten.nll_loss_forward"]
    assert counter.total - loss_ops == plain.total  # everything before the loss: exact
    assert with_loss.matmul == plain.matmul


def test_generate_op_by_op_dynamic_and_static_cache():
    """Greedy generate, counting only inside the model's forwards (the argmax is not counted)."""
    model = build()
    model.generation_config.pad_token_id = 0
    ids = torch.randint(1, SHAPE.vocab_size, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding of the second prompt
    new = 4
    for implementation in ("dynamic", "static"):
        counter = CourseworkCounter()
        counter.enabled = False
        mark_tables_free(model, counter)
        forwards = []

        def enter(module, args, kwargs, counter=counter, forwards=forwards):
            counter.enabled = True
            forwards.append(tuple(kwargs["input_ids"].shape))

        def leave(module, args, output, counter=counter):
            counter.enabled = False

        hooks = [
            model.register_forward_pre_hook(enter, with_kwargs=True),
            model.register_forward_hook(leave),
        ]
        with torch.no_grad(), counter:
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                cache_implementation=implementation,
                return_dict_in_generate=True,
            )
        for hook in hooks:
            hook.remove()
        assert out.sequences.shape == (2, 6 + new)
        assert forwards == [(2, 6)] + [(2, 1)] * (new - 1)
        cache_len = static_cache_len(6, new) if implementation == "static" else None
        expected = generate_flops(
            SHAPE, 6, new, 2, cache_len=cache_len, logits_len=1, gqa_as_mha=False
        )
        assert counter.total == expected.total, (implementation, counter.by_op)
        model._previous_max_cache_length = -1  # fresh sizing for any later static call
