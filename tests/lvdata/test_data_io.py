"""Loading, validating and saving trajectory files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from lvdata import DataError, Trajectories, load_trajectories, validate


def _write(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def _good() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(0.1, 3.0, (4, 5, 2)).astype(np.float32), np.linspace(0.0, 8.0, 5)


def test_coursework_file(coursework: Trajectories) -> None:
    assert coursework.values.shape == (1000, 100, 2)
    assert coursework.values.dtype == np.float32
    assert coursework.time.dtype == np.float64
    assert coursework.n_series == 1000 and coursework.n_steps == 100
    np.testing.assert_allclose(coursework.time, np.linspace(0, 200, 100), rtol=0, atol=1e-12)
    assert coursework.params is None


def _bad_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    v, t = _good()
    nan = v.copy()
    nan[1, 2, 0] = np.nan
    inf = v.copy()
    inf[2, 3, 1] = np.inf
    neg = v.copy()
    neg[0, 4, 1] = -0.5
    t_bad = t.copy()
    t_bad[3] = t_bad[2]
    text = tmp_path / "text.h5"
    text.write_text("prey,predator\n1,2\n")
    return {
        "missing": (tmp_path / "nope.h5", "no such file"),
        "text": (text, "not an HDF5 file"),
        "no_trajectories": (_write(tmp_path / "a.h5", time=t), "'trajectories'"),
        "no_time": (_write(tmp_path / "b.h5", trajectories=v), "'time'"),
        "rank": (_write(tmp_path / "c.h5", trajectories=v[0], time=t), "shape"),
        "last_dim": (_write(tmp_path / "d.h5", trajectories=v[..., :1], time=t), "shape"),
        "time_len": (_write(tmp_path / "e.h5", trajectories=v, time=t[:4]), "4 entries"),
        "nan": (_write(tmp_path / "f.h5", trajectories=nan, time=t), "1 non-finite"),
        "inf": (_write(tmp_path / "g.h5", trajectories=inf, time=t), "(2, 3, 1)"),
        "negative": (_write(tmp_path / "h.h5", trajectories=neg, time=t), "negative"),
        "time_order": (_write(tmp_path / "i.h5", trajectories=v, time=t_bad), "increasing"),
    }


CASES = [
    "missing",
    "text",
    "no_trajectories",
    "no_time",
    "rank",
    "last_dim",
    "time_len",
    "nan",
    "inf",
    "negative",
    "time_order",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_files_raise_data_error(tmp_path: Path, case: str) -> None:
    path, expected = _bad_cases(tmp_path)[case]
    with pytest.raises(DataError) as info:
        load_trajectories(path)
    msg = str(info.value)
    assert str(path) in msg
    assert expected in msg
    assert info.value.__cause__ is None  # no chained h5py/numpy traceback


def test_nan_message_gives_first_index(tmp_path: Path) -> None:
    path, _ = _bad_cases(tmp_path)["nan"]
    with pytest.raises(DataError, match=r"1 non-finite.*\(1, 2, 0\)"):
        load_trajectories(path)


def test_validate_in_memory() -> None:
    v, t = _good()
    values, time = validate(v.astype(np.float64), t, source="mine")
    assert values.dtype == np.float32 and time.dtype == np.float64
    with pytest.raises(DataError, match=r"^mine:"):
        validate(v, t[::-1], source="mine")
    with pytest.raises(DataError):
        Trajectories(v, t[:3])


def test_save_load_round_trip_and_format(tmp_path: Path) -> None:
    v, t = _good()
    traj = Trajectories(v, t, {"r": np.arange(4.0)}, {"model": "test", "seed": 3})
    path = traj.save(tmp_path / "sub" / "out.h5")
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["time", "trajectories"]
        assert f["trajectories"].dtype == np.float32
        assert f["time"].dtype == np.float64
        assert f.attrs["seed"] == 3
    back = load_trajectories(path)
    np.testing.assert_array_equal(back.values, v)
    np.testing.assert_array_equal(back.time, t)
    assert back.params is None
    assert back.attrs == {"model": "test", "seed": 3}


def test_subset_keeps_params() -> None:
    v, t = _good()
    traj = Trajectories(v, t, {"r": np.arange(4.0)})
    sub = traj.subset([3, 1])
    np.testing.assert_array_equal(sub.values, v[[3, 1]])
    assert sub.params is not None
    np.testing.assert_array_equal(sub.params["r"], [3.0, 1.0])
    assert len(sub) == 2
