"""``Flops.matmul`` against the matrix products torch actually runs in a Qwen2 forward.

A dispatch mode records the operand shapes of every aten matrix product and sums m*p*(2n-1).
torch's own ``FlopCounterMode`` (which counts 2*m*n*p) cross-checks that nothing was missed.
Eager attention repeats the KV heads, so attention products run over num_heads heads while
k_proj/v_proj run at the true KV width: ``gqa_as_mha=False`` must match exactly, and the default
``gqa_as_mha=True`` exceeds it by exactly the k/v projection difference.
"""

import pytest

from lvflops import QWEN2_5_0_5B, ModelShape, forward_flops, generate_flops, static_cache_len

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

aten = torch.ops.aten
_MATMUL_OPS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}


class MatmulRecorder(TorchDispatchMode):
    """Records (batch, m, n, p) of every mm / addmm / bmm / baddbmm."""

    def __init__(self):
        super().__init__()
        self.products: list[tuple[int, int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet in _MATMUL_OPS:
            a, b = (args[1], args[2]) if packet in (aten.addmm, aten.baddbmm) else args[:2]
            if a.dim() == 2:
                (m, n), p = a.shape, b.shape[1]
                self.products.append((1, m, n, p))
            else:
                nb, m, n = a.shape
                self.products.append((nb, m, n, b.shape[2]))
        else:
            name = str(packet)
            assert not any(s in name for s in ("mm", "matmul", "linear", "dot")), name
        return func(*args, **(kwargs or {}))


def build(shape: ModelShape, device: str):
    """A randomly initialised eager-attention Qwen2ForCausalLM of ``shape``."""
    config = transformers.Qwen2Config(
        **{k: v for k, v in shape.to_hf_config().items() if k != "qkv_bias"},
        attn_implementation="eager",
    )
    with torch.device(device):
        model = transformers.Qwen2ForCausalLM(config)
    return model.eval()


def measure(shape: ModelShape, seq_len: int, batch: int, device: str, model=None, **inputs) -> int:
    """Sum of m*p*(2n-1) over the matrix products of one eager forward of ``shape``."""
    model = build(shape, device) if model is None else model
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device=device)
    recorder, counter = MatmulRecorder(), FlopCounterMode(display=False)
    with torch.no_grad(), counter, recorder:
        logits = model(input_ids=ids, **inputs).logits
    assert tuple(logits.shape) == (batch, seq_len, shape.vocab_size)  # logits at every position
    # Outer products (inner dim 1) could only be RoPE frequency tables, which are free.
    products = [t for t in recorder.products if t[2] > 1]
    assert counter.get_total_flops() == sum(2 * nb * m * n * p for nb, m, n, p in recorder.products)
    return sum(nb * m * p * (2 * n - 1) for nb, m, n, p in products)


def kv_difference(shape: ModelShape, seq_len: int, batch: int) -> int:
    """Extra k_proj + v_proj matmul FLOPs of counting all heads instead of the KV heads."""
    extra_width = (shape.num_heads - shape.num_kv_heads) * shape.head_dim
    per_proj = seq_len * extra_width * (2 * shape.hidden_size - 1)
    return batch * shape.num_layers * 2 * per_proj


TINY = ModelShape(8, 2, 2, 1, 4, 16, 11, True)


@pytest.mark.parametrize(("seq_len", "batch"), [(3, 1), (5, 2)])
def test_tiny_qwen2_matmul_matches_torch(seq_len, batch):
    measured = measure(TINY, seq_len, batch, "cpu")
    assert forward_flops(TINY, seq_len, batch, gqa_as_mha=False).matmul == measured
    mha = forward_flops(TINY, seq_len, batch, gqa_as_mha=True).matmul
    assert mha - measured == kv_difference(TINY, seq_len, batch) > 0


def test_tiny_kv_cache_decode_step_matches_torch():
    model = build(TINY, "cpu")
    with torch.no_grad():
        out = model(input_ids=torch.zeros(2, 4, dtype=torch.long), use_cache=True)
    cache = out["cache"] if "cache" in out else out["past_key_values"]  # renamed in transformers 5
    measured = measure(TINY, 1, 2, "cpu", model=model, cache=cache, use_cache=True)
    # one new position per sequence attending to 4 cached + 1 new positions
    assert forward_flops(TINY, 1, 2, kv_len=5, gqa_as_mha=False).matmul == measured
    assert forward_flops(TINY, 1, 2, kv_len=5).matmul - measured == kv_difference(TINY, 1, 2)


def test_tiny_mha_shape_matches_in_both_modes():
    mha_shape = ModelShape(8, 1, 2, 2, 4, 16, 11, False)
    measured = measure(mha_shape, 4, 1, "cpu")
    assert forward_flops(mha_shape, 4, gqa_as_mha=True).matmul == measured
    assert forward_flops(mha_shape, 4, gqa_as_mha=False).matmul == measured


def test_qwen2_5_0_5b_on_meta_matches_torch():
    measured = measure(QWEN2_5_0_5B, 512, 1, "meta")
    assert measured == 528_032_268_288
    assert forward_flops(QWEN2_5_0_5B, 512, gqa_as_mha=False).matmul == measured
    mha = forward_flops(QWEN2_5_0_5B, 512).matmul
    assert (
        mha - measured
        == kv_difference(QWEN2_5_0_5B, 512, 1)
        == 24 * 2 * 512 * 768 * 1791
        == 33_803_993_088
    )


def static_generate(model, prompt_width: int, new: int, **kwargs):
    """Greedy static-cache generate on a left-padded batch of 2; returns (output, recorder)."""
    ids = torch.ones(2, prompt_width, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # the first prompt is 2 tokens shorter: left padding
    recorder = MatmulRecorder()
    with torch.no_grad(), recorder:
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
            cache_implementation="static",
            return_dict_in_generate=True,
            **kwargs,
        )
    assert out.sequences.shape == (2, prompt_width + new)
    return out, recorder


def allocated_len(out) -> int:
    """Key slots the static cache of a generate output really holds, checked on every layer."""
    cache = out["cache"] if "cache" in out else out["past_key_values"]  # renamed in transformers 5
    assert type(cache).__name__ == "StaticCache"
    (length,) = {layer.keys.shape[-2] for layer in cache.layers} | {
        layer.values.shape[-2] for layer in cache.layers
    }
    return length


def test_static_cache_len_is_what_generate_allocates_and_attends_over():
    model = build(TINY, "cpu")
    width, new = 6, 4
    out, recorder = static_generate(model, width, new)
    assert allocated_len(out) == static_cache_len(width, new) == width + new - 1 == 9
    # Every attention-score product (query x head_dim)(head_dim x keys), in the prefill and each
    # of the 3 decode steps, runs over all 9 slots (eager attention, 2 sequences x 2 heads).
    scores = [t for t in recorder.products if t[2] == TINY.head_dim and t[0] == 2 * 2]
    assert [(m, p) for _, m, _, p in scores] == [(width, 9)] * 2 + [(1, 9)] * (2 * (new - 1))
    products = [t for t in recorder.products if t[2] > 1]
    measured = sum(nb * m * p * (2 * n - 1) for nb, m, n, p in products)
    expected = generate_flops(TINY, width, new, 2, cache_len=9, logits_len=1, gqa_as_mha=False)
    assert expected.matmul == measured


def test_static_cache_keeps_the_longest_length_of_earlier_calls():
    """generate sizes the cache max(W + M - 1, earlier calls' length, generation max_cache_len)."""
    model = build(TINY, "cpu")
    first, _ = static_generate(model, 8, 4)
    assert allocated_len(first) == static_cache_len(8, 4) == 11
    shorter, recorder = static_generate(model, 5, 3)  # needs only 7 slots
    assert allocated_len(shorter) == 11  # _previous_max_cache_length of the same model object
    assert {p for _, _, n, p in recorder.products if n == TINY.head_dim} == {11}
    fresh = build(TINY, "cpu")
    assert allocated_len(static_generate(fresh, 5, 3)[0]) == static_cache_len(5, 3) == 7
    ceiling, _ = static_generate(build(TINY, "cpu"), 5, 3, max_cache_len=20)
    assert allocated_len(ceiling) == 20
