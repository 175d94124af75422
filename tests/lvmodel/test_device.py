"""lvmodel.device: the denormal flush reaches every torch worker thread, and a process computes
alike whatever ran in it before (fix_cpu_arithmetic)."""

from __future__ import annotations

import subprocess
import sys

# In a fresh process: a parallel torch operation starts the OpenMP workers first (as a test, a
# notebook or a search worker does before loading a base), then the flush, then an operation
# whose every element is a denormal (1e-40) unless flushed, split across two threads.
CHILD = """
import torch
torch.set_num_threads(2)
x = torch.full((4_000_000,), 1e-38)  # parallel: the workers exist from here on
{flush}
y = x * 0.01
print(int((y != 0).sum()), y.numel())
"""


def _child(code: str) -> str:
    """What a fresh Python process running `code` prints."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def _unflushed(flush: str) -> tuple[int, int]:
    out = _child(CHILD.format(flush=flush)).split()
    return int(out[0]), int(out[1])


def test_the_flush_reaches_workers_started_before_it() -> None:
    left, n = _unflushed("from lvmodel.device import flush_denormals; flush_denormals()")
    assert n == 4_000_000
    assert left == 0


def test_torch_alone_flushes_only_the_calling_thread() -> None:
    """Why flush_denormals does more than torch.set_flush_denormal: the worker's share (half
    the elements on two threads) stays denormal."""
    left, n = _unflushed("torch.set_flush_denormal(True)")
    assert 0 < left < n


# In a fresh process: the backward of PyTorch's CPU flash attention at the tiny model's GQA shape
# (batch 8, 4 query and 2 KV heads, 256 positions, head dim 32), after `before`; the gradients'
# digest. MKL computes it with other rounding in its dynamic mode (a process that never called
# torch.set_num_threads) than in its fixed mode (after such a call: the tiny base's pretraining).
ATTENTION = """
import hashlib, torch
{before}
from lvmodel.device import {fix}; {fix}()
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(8, h, 256, 32, generator=g, requires_grad=True) for h in (4, 2, 2))
out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
out.backward(torch.randn(out.shape, generator=g))
print(hashlib.sha256(b"".join(t.grad.numpy().tobytes() for t in (q, k, v))).hexdigest())
"""


def _attention_digest(before: str, fix: str = "fix_cpu_arithmetic") -> str:
    return _child(ATTENTION.format(before=before, fix=fix)).strip()


def test_a_process_computes_alike_whether_or_not_threads_were_set_before() -> None:
    """The README's main job scored test MSE 0.163 from an empty cache (the base's pretraining
    sets the threads first) and 0.205 with the base cached, at the same seed, until load_base
    fixed the mode itself (fails with `flush_denormals` alone in place of fix_cpu_arithmetic)."""
    fresh = _attention_digest("")
    after_a_build = _attention_digest("torch.set_num_threads(torch.get_num_threads())")
    assert len(fresh) == 64
    assert fresh == after_a_build
