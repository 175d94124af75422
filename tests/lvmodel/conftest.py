"""Shared fixtures of the lvmodel tests.

- `tiny_base_path` (session): the folder of the pretrained tiny base (`lvmodel.tiny`), built once
  into the cache (`$LV_CACHE_DIR`, else `~/.cache/lv-forecast`, so later sessions reuse it; the
  first build takes a few minutes on 2 cores). Load a private copy with
  `lvmodel.base.load_base(str(tiny_base_path))` when a test trains or wraps the model.
- `tiny_base` (session): `(model, tokenizer)` of the pretrained tiny base via `load_base("tiny")`,
  float32 on CPU, eval mode. Shared by the whole session: treat it as read-only (no training, no
  PEFT wrapping in place; use `tiny_base_path` for that).
- `one_thread` (module; `pytestmark = pytest.mark.usefixtures("one_thread")`): torch on one
  thread for the module's tests.
- `random_tiny` (function): `(model, tokenizer)` with the tiny architecture (Qwen2, GQA, tied
  embeddings, vocab 128) and random weights (seed 0): instant, fresh per test, safe to mutate; for
  plumbing tests that do not need a model that can forecast.

The coursework data come from the repository-wide fixtures in `tests/conftest.py` (`coursework`,
`coursework_file`: skip when the file is absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import lvdata
from lvmodel.base import load_base
from lvmodel.tiny import ensure_tiny_base, random_tiny


@pytest.fixture(scope="session")
def tiny_base_path() -> Path:
    return ensure_tiny_base()


@pytest.fixture(scope="session")
def tiny_base(tiny_base_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return load_base("tiny", dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: one thread is faster and immune to oversubscription on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(name="random_tiny")
def random_tiny_fixture() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return random_tiny(seed=0)


@pytest.fixture(scope="module")
def toy_data() -> tuple[np.ndarray, np.ndarray, lvdata.LLMTimeCodec]:
    """(train, val, codec): 10 + 2 generated 30-step series and the codec of the 10, for training
    tests on the toy model (`tests/lvmodel/_toy.py`)."""
    traj = lvdata.simulate(n_systems=12, n_steps=30, seed=1)
    codec = lvdata.LLMTimeCodec.fit(traj.values[:10])
    return traj.values[:10], traj.values[10:], codec
