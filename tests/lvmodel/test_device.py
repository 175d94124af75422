"""lvmodel.device.flush_denormals reaches every torch worker thread, whatever ran before it."""

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


def _unflushed(flush: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(flush=flush)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
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
