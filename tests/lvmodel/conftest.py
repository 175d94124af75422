"""Shared fixtures of the lvmodel tests.

- `tiny_base_path` (session): the folder of the pretrained tiny base (`lvmodel.tiny`), built once
  into the cache (`$LV_CACHE_DIR`, else `~/.cache/lv-forecast`, so later sessions reuse it; the
  first build takes a few minutes on 2 cores). Load a private copy with
  `lvmodel.base.load_base(str(tiny_base_path))` when a test trains or wraps the model.
- `tiny_base` (session): `(model, tokenizer)` of the pretrained tiny base via `load_base("tiny")`,
  float32 on CPU, eval mode. Shared by the whole session: treat it as read-only (no training, no
  PEFT wrapping in place; use `tiny_base_path` for that).
- `random_tiny` (function): `(model, tokenizer)` with the tiny architecture (Qwen2, GQA, tied
  embeddings, vocab 128) and random weights (seed 0): instant, fresh per test, safe to mutate; for
  plumbing tests that do not need a model that can forecast.
- `lv_data_path` (session): the coursework `lotka_volterra_data.h5` (`$LV_DATA`, `data/`, or
  `../shared/data/`), or None when absent; tests needing it should skip on None.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lvmodel.base import load_base
from lvmodel.tiny import ensure_tiny_base, random_tiny

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_base_path() -> Path:
    return ensure_tiny_base()


@pytest.fixture(scope="session")
def tiny_base(tiny_base_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return load_base("tiny", dtype=torch.float32, device="cpu")


@pytest.fixture(name="random_tiny")
def random_tiny_fixture() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return random_tiny(seed=0)


@pytest.fixture(scope="session")
def lv_data_path() -> Path | None:
    candidates = [
        os.environ.get("LV_DATA"),
        REPO / "data" / "lotka_volterra_data.h5",
        REPO.parent / "shared" / "data" / "lotka_volterra_data.h5",
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None
