"""The report's figures: fan charts of a sampled forecast and the error against the step ahead."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from lvtrack.plots import plot_fan, plot_step_errors


def _fan_inputs(n: int, k: int = 50, h: int = 5):
    rng = np.random.default_rng(0)
    time = np.linspace(0, 200, 100)[: k + h]
    histories = rng.uniform(0.5, 2.0, (n, k, 2))
    truth = rng.uniform(0.5, 2.0, (n, h, 2))
    quantiles = np.sort(rng.uniform(0.5, 2.0, (n, h, 2, 3)), axis=-1)
    return time, histories, truth, quantiles, quantiles[..., 1]


def _bands(ax) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


@pytest.mark.parametrize(("n", "panels"), [(2, 2), (4, 4), (9, 6)])
def test_fan_has_one_panel_per_shown_series_with_a_band_per_variable(n, panels):
    time, histories, truth, quantiles, median = _fan_inputs(n)
    fig = plot_fan(time, histories, truth, quantiles, median, title="fan")
    used = [ax for ax in fig.axes if ax.axison]
    assert len(used) == panels
    for i, ax in enumerate(used):
        bands = _bands(ax)
        assert len(bands) == 2  # prey, predator
        # history, median, truth for each variable (the axvline is the 7th line)
        assert len(ax.lines) == 2 * 3 + 1
        # The band spans the 10% to the 90% quantile of the horizon.
        ys = np.concatenate([b.get_paths()[0].vertices[:, 1] for b in bands])
        lo, hi = quantiles[i, ..., 0].min(), quantiles[i, ..., 2].max()
        assert ys.min() == pytest.approx(lo) and ys.max() == pytest.approx(hi)
    # The median drawn is the one given (dashed), not the middle quantile recomputed.
    dashed = [ln for ln in used[0].lines if ln.get_linestyle() == "--"]
    assert np.allclose(dashed[0].get_ydata(), median[0, :, 0])


def test_fan_refuses_quantiles_of_the_wrong_shape():
    time, histories, truth, quantiles, median = _fan_inputs(2)
    with pytest.raises(ValueError, match="quantiles"):
        plot_fan(time, histories, truth, quantiles[..., :2], median)


def test_step_errors_draws_one_line_per_forecaster_llm_highlighted_on_a_log_scale():
    errors = {
        "LLM final (ctx 128)": [1e-3, 2e-3, 4e-3, 6e-3, 9e-3],
        "persistence": [0.05, 0.1, 0.2, 0.3, 0.35],
        "var": [1e-3, 3e-3, 5e-3, 7e-3, 8e-3],
    }
    fig = plot_step_errors(errors, metric="MSE")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in ax.lines}
    assert set(lines) == set(errors)
    for name, values in errors.items():
        assert list(lines[name].get_xdata()) == [1, 2, 3, 4, 5]
        assert list(lines[name].get_ydata()) == values
    llm = lines["LLM final (ctx 128)"]
    assert all(llm.get_linewidth() > lines[r].get_linewidth() for r in ("persistence", "var"))
    assert llm.get_zorder() > lines["persistence"].get_zorder()
    assert "MSE" in ax.get_ylabel()


def test_the_report_figures_are_not_kept_by_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figures = [plot_fan(*_fan_inputs(3)), plot_step_errors({"LLM": [1.0, 2.0], "var": [2.0, 3.0]})]
    assert all(f.axes for f in figures)
    assert plt.get_fignums() == before
