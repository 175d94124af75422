"""Shared fixtures of the lvdata tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lvdata

QWEN_PAD = 151643


@pytest.fixture(scope="session")
def simulated_1000() -> lvdata.Trajectories:
    return lvdata.simulate(1000, seed=0)


class FakeQwenTokenizer:
    """Qwen2's rule for printable ASCII: one token per character, id = ord(c) - 33."""

    pad_token_id: int | None = QWEN_PAD

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, Any]:
        assert add_special_tokens is False
        self.calls += 1
        return {"input_ids": [ord(c) - 33 for c in text]}


@pytest.fixture
def fake_tokenizer() -> FakeQwenTokenizer:
    return FakeQwenTokenizer()


@pytest.fixture
def small_series() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(0.01, 5.0, size=(30, 2))
