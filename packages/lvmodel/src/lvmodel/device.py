"""Where the model's arithmetic runs: the CPU's threading and denormal modes, a model's device.

A module of its own, below everything that loads, trains or runs a model (`lvmodel.base`,
`lvmodel.tiny`, `lvmodel.decode`, `lvmodel.forecast`), so that none of them imports another for it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["fix_cpu_arithmetic", "flush_denormals", "model_device"]


def fix_cpu_arithmetic() -> None:
    """Make the CPU's arithmetic the same in every process, whatever ran in it before: a fixed
    number of threads for MKL (`torch.set_num_threads` at torch's current count), and denormals
    flushed on every thread (`flush_denormals`). `load_base` calls it first.

    Until a process calls `torch.set_num_threads`, MKL runs in its dynamic mode, where it picks
    its own threading per call; torch's call turns that off (torch issue 13757). The two modes
    give results that differ in the last bits: measured, the gradients of PyTorch's CPU flash
    attention backward (the tiny model's GQA shape, `tests/lvmodel/test_device.py`) and so the
    tiny preset's LoRA loss from about step 30 on. The README's main job from an empty cache
    pretrains the tiny base first, which sets the threads, and scored val/test MSE 0.165 / 0.163
    at seed 0; the same command with the base already cached never set them and scored 0.179 /
    0.205. With the count set here, every path computes alike.
    """
    torch.set_num_threads(torch.get_num_threads())
    flush_denormals()


def flush_denormals() -> None:
    """CPU arithmetic flushes denormal floats to zero (x86 FTZ/DAZ; GPUs flush in most kernels),
    on the calling thread and on every one of torch's OpenMP worker threads.

    Measured on the tiny preset's LoRA step on 2 cores: 311 -> 214 ms (`benchmarks/denormals.py`;
    310-430 -> 160 ms a step inside `fit`, timed as 60 steps less 10). Its attention
    logits reach about 70, and the backward of PyTorch's CPU flash attention then computes
    exp() far below float32's normal range, where x86 takes a slow path (the backward alone:
    50 ms -> 10 ms a layer; `benchmarks/denormals.py`). Values below 1.2e-38 become 0; nothing the
    project computes is that small on purpose.

    The mode is a register of each thread: `torch.set_flush_denormal` sets only the caller's, and
    a worker thread takes it from the thread that starts it. A process that ran a parallel torch
    operation before this call (a test, a notebook, a search worker) keeps workers that do not
    flush, and then each thread computes its share of an operation in its own mode: the tiny
    base pretrained so came out with other weights under the same seed (its loss parts from
    step 370 on). So the mode is also set inside one OpenMP parallel region of all the threads
    (`_on_every_omp_thread`); torch offers no call for it.
    """
    if torch.set_flush_denormal(True):
        _on_every_omp_thread(lambda: torch.set_flush_denormal(True))


def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch loaded (GNU libgomp, or Intel's libiomp5, which exports the same
    `GOMP_parallel`), found among the process's mapped files; None where there is none (another
    parallel backend, or a system without /proc)."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    fields = (line.split(maxsplit=5) for line in lines)  # address ... inode path
    files = (f[5] for f in fields if len(f) == 6)
    found = [f for f in files if Path(f).name.startswith(("libgomp", "libiomp5"))]
    return ctypes.CDLL(found[0]) if found else None


def _on_every_omp_thread(fn: Callable[[], Any]) -> None:
    """Run `fn` once on each of torch's intra-op threads: one `GOMP_parallel` region as wide as
    `torch.get_num_threads()`, which reuses the runtime's pooled worker threads (each call
    takes the GIL in turn). Does nothing where no OpenMP runtime is loaded."""
    runtime = _openmp_runtime()
    if runtime is None:
        return
    region = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    body = region(lambda _data: fn())  # kept referenced until the region has ended
    runtime.GOMP_parallel.argtypes = [region, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    runtime.GOMP_parallel.restype = None
    runtime.GOMP_parallel(body, None, torch.get_num_threads(), 0)


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")
