"""The LLMTime codec."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvdata import LLMTimeCodec, Trajectories, count_invalid_steps, split

SMALL = np.array([[0.25, 1.50], [0.27, 1.47]])


def test_encode_exact() -> None:
    codec = LLMTimeCodec(alpha=1.0)
    assert codec.encode(SMALL) == "0.25,1.50;0.27,1.47"
    assert codec.encode_prompt(SMALL) == "0.25,1.50;0.27,1.47;"
    assert LLMTimeCodec(alpha=0.5).encode(SMALL) == "0.50,3.00;0.54,2.94"
    assert LLMTimeCodec(alpha=1.0, decimals=0).encode([[3.4, 12.6]]) == "3,13"


def test_encode_clips_and_never_scientific() -> None:
    codec = LLMTimeCodec(alpha=1.0)
    assert codec.encode([[-0.001, 1e-9], [123456789.0, 0.0]]) == "0.00,0.00;123456789.00,0.00"
    with pytest.raises(ValueError):
        codec.encode([[np.nan, 1.0]])
    with pytest.raises(ValueError):
        codec.encode(np.zeros((3, 3)))


def test_decode_exact() -> None:
    codec = LLMTimeCodec(alpha=0.5)
    np.testing.assert_allclose(codec.decode("0.50,3.00;0.54,2.94"), SMALL)
    np.testing.assert_allclose(codec.decode("0.50,3.00;0.54,2.94;"), SMALL)
    out = codec.decode("0.50,3.00")
    assert out.dtype == np.float64 and out.shape == (1, 2)


@pytest.mark.parametrize(
    "text, nan_mask",
    [
        ("0.25,1.50;0.27,1.", [[0, 0], [0, 1]]),  # truncated final number
        ("0.25,1.50;0.27,1.4", [[0, 0], [0, 1]]),  # truncated: too few decimals
        ("0.25,1.50;0.27", [[0, 0], [0, 1]]),  # missing field
        ("0.25,1.50;0.27,", [[0, 0], [0, 1]]),  # empty field
        ("0.25,1.50,2.00;0.27,1.47", [[1, 1], [0, 0]]),  # extra field
        ("0.25,abc;0.27,1.47", [[0, 1], [0, 0]]),  # letters
        ("1.2.3,1.50;0.27,1.47", [[1, 0], [0, 0]]),  # two points
        ("-0.25,1.50;;0.27,1.47", [[1, 0], [1, 1], [0, 0]]),  # sign, empty step
        ("hello world", [[1, 1]]),  # garbage
    ],
)
def test_decode_malformed_gives_nan(text: str, nan_mask: list[list[int]]) -> None:
    out = LLMTimeCodec(alpha=1.0).decode(text)
    mask = np.asarray(nan_mask, dtype=bool)
    np.testing.assert_array_equal(np.isnan(out), mask)
    assert not np.any(out[~mask] == 0)  # nothing zero-filled
    assert count_invalid_steps(out) == int(mask.any(axis=1).sum())


def test_decode_empty_text() -> None:
    codec = LLMTimeCodec(alpha=1.0)
    assert codec.decode("").shape == (0, 2)
    out = codec.decode("", steps=3)
    assert out.shape == (3, 2) and np.all(np.isnan(out))
    assert count_invalid_steps(out) == 3


def test_decode_steps_truncate_and_pad() -> None:
    codec = LLMTimeCodec(alpha=1.0)
    text = "0.25,1.50;0.27,1.47;0.31,1.42"
    np.testing.assert_allclose(codec.decode(text, steps=2), [[0.25, 1.50], [0.27, 1.47]])
    out = codec.decode("0.25,1.50;0.27,1.47;", steps=4)
    assert out.shape == (4, 2)
    np.testing.assert_allclose(out[:2], [[0.25, 1.50], [0.27, 1.47]])
    assert np.all(np.isnan(out[2:]))
    assert codec.decode(text, steps=0).shape == (0, 2)


def test_decode_lenient_mode() -> None:
    codec = LLMTimeCodec(alpha=1.0)
    np.testing.assert_allclose(codec.decode("0.2,1.5", strict=False), [[0.2, 1.5]])
    assert np.isnan(codec.decode("0.2,1.", strict=False)[0, 1])


def test_round_trip_whole_coursework_file(coursework: Trajectories) -> None:
    parts = split(coursework.n_series, seed=0)
    codec = LLMTimeCodec.fit(coursework.values[parts.train])
    bound = 0.5 * 10.0**-codec.decimals * codec.alpha + 1e-9
    worst = 0.0
    for series in coursework.values:
        back = codec.decode(codec.encode(series), steps=len(series))
        assert not np.any(np.isnan(back))
        worst = max(worst, float(np.abs(back - series).max()))
    assert worst <= bound


def test_fit_rule(coursework: Trajectories) -> None:
    train = coursework.values[split(coursework.n_series, seed=0).train]
    codec = LLMTimeCodec.fit(train)
    assert np.mean(train / codec.alpha < 10.0) >= 0.99
    # one alpha from the training values only: the held-out series do not change it
    assert LLMTimeCodec.fit(train).alpha == codec.alpha
    assert 0.5 < codec.alpha < 0.7


def test_fit_rule_synthetic() -> None:
    rng = np.random.default_rng(0)
    train = rng.lognormal(0.0, 1.0, size=(50, 40, 2))
    for p in (90.0, 99.0, 99.9):
        codec = LLMTimeCodec.fit(train, percentile=p)
        assert np.mean(train / codec.alpha < 10.0) >= p / 100 - 1e-12
    with pytest.raises(ValueError):
        LLMTimeCodec.fit(np.zeros((3, 2)))


def test_dict_round_trip() -> None:
    codec = LLMTimeCodec(alpha=0.596, decimals=3)
    d = json.loads(json.dumps(codec.to_dict()))
    assert LLMTimeCodec.from_dict(d) == codec
    with pytest.raises(ValueError):
        LLMTimeCodec.from_dict({**d, "beta": 1.0})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0.0},
        {"alpha": float("nan")},
        {"alpha": 1.0, "decimals": -1},
        {"alpha": 1.0, "time_sep": ","},
        {"alpha": 1.0, "var_sep": "."},
    ],
)
def test_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LLMTimeCodec(**kwargs)  # type: ignore[arg-type]
