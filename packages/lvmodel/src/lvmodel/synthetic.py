"""Generic synthetic two-variable series in LLMTime text, the pretraining corpus of the tiny base.

The tiny base (`lvmodel.tiny`) must *know the format and how series continue* before any LoRA run, like
a real pretrained LLM does, without ever seeing Lotka-Volterra data (that is what fine-tuning is for).
So it learns from generic families: sines (the second variable phase-shifted), damped oscillations,
AR(1) and AR(2) processes, random walks, sometimes with a trend, a monotone warp (exp, which gives
spiky peaks over flat troughs) or observation noise. Each variable is rescaled to a random positive
range, mostly within 0-10 (a fifth of them peak at 10-25, so 2-digit integer parts are seen too:
the coursework prey peaks at about 22 once scaled).

The text follows the coursework encoding: 2 decimals, "," between the two variables of one time step,
";" between steps, no spaces (`0.25,1.50;0.27,1.47`). `format_series` is a local f-string formatter on
purpose: the format is this simple, and the pretraining corpus should not depend on `lvdata`'s codec.
"""

from __future__ import annotations

import numpy as np

FAMILIES = ("sine", "damped", "ar1", "ar2", "walk")
# Smooth, deterministic shapes dominate (the series people forecast with LLMTime mostly are);
# the noisy processes teach that not everything is predictable.
FAMILY_WEIGHTS = (0.35, 0.25, 0.1, 0.15, 0.15)


def format_series(values: np.ndarray, decimals: int = 2) -> str:
    """`[[0.25, 1.5], [0.27, 1.47]]` -> `"0.25,1.50;0.27,1.47"` (values assumed non-negative)."""
    return ";".join(",".join(f"{v:.{decimals}f}" for v in row) for row in np.asarray(values))


def _sine(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    period = np.exp(rng.uniform(np.log(6.0), np.log(90.0)))
    phase = rng.uniform(0, 2 * np.pi)
    shift = rng.uniform(0.2, 2 * np.pi - 0.2)  # the second variable lags/leads the first
    w = 2 * np.pi / period
    x = np.sin(w * t + phase)
    y = np.sin(w * t + phase + shift)
    if rng.random() < 0.3:  # a harmonic makes the shape less regular
        a2, p2 = rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
        x = x + a2 * np.sin(2 * w * t + p2)
        y = y + a2 * np.sin(2 * w * t + p2 + 2 * shift)
    return np.stack([x, y], axis=1)


def _damped(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    osc = _sine(rng, t)
    tau = np.exp(rng.uniform(np.log(15.0), np.log(300.0)))
    env = np.exp(-t / tau)
    if rng.random() < 0.2:  # a few grow instead (towards a limit cycle)
        env = 1.0 - 0.9 * env
    return osc * env[:, None]


def _ar1(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    n = len(t)
    phi = rng.uniform(0.5, 0.995, size=2)
    rho = rng.uniform(-0.8, 0.8)  # correlated innovations
    eps = rng.standard_normal((n, 2))
    eps[:, 1] = rho * eps[:, 0] + np.sqrt(1 - rho**2) * eps[:, 1]
    x = np.zeros((n, 2))
    x[0] = eps[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    return x


def _ar2(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    # Complex roots r*exp(+-i*omega): quasi-periodic, noisy oscillations.
    n = len(t)
    r = rng.uniform(0.85, 0.995)
    omega = 2 * np.pi / np.exp(rng.uniform(np.log(6.0), np.log(60.0)))
    phi1, phi2 = 2 * r * np.cos(omega), -(r**2)
    eps = rng.standard_normal((n, 2))
    x = np.zeros((n, 2))
    for i in range(2, n):
        x[i] = phi1 * x[i - 1] + phi2 * x[i - 2] + eps[i]
    if rng.random() < 0.5:  # couple the second variable to the first, with a lag
        lag = int(rng.integers(1, 8))
        x[:, 1] = 0.5 * x[:, 1] + np.roll(x[:, 0], lag)
    return x


def _walk(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    n = len(t)
    drift = rng.normal(0, 0.05, size=2)
    steps = rng.standard_normal((n, 2)) + drift
    return np.cumsum(steps, axis=0)


def _smooth(x: np.ndarray, keep: float) -> np.ndarray:
    """Exponential smoothing applied twice (forward): a noisy path becomes a smooth random curve."""
    out = x.copy()
    for _ in range(2):
        for i in range(1, len(out)):
            out[i] = keep * out[i - 1] + (1 - keep) * out[i]
    return out


_GENERATORS = {"sine": _sine, "damped": _damped, "ar1": _ar1, "ar2": _ar2, "walk": _walk}


def _to_range(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Affinely map one variable onto a random positive range, mostly inside 0-10."""
    lo_x, hi_x = float(x.min()), float(x.max())
    z = (x - lo_x) / (hi_x - lo_x) if hi_x > lo_x else np.zeros_like(x)
    low = rng.uniform(0.0, 3.0) if rng.random() < 0.7 else rng.uniform(0.0, 0.3)
    if rng.random() < 0.2:  # peaks above 10: integer parts of two digits must not confuse it
        high = rng.uniform(10.0, 25.0)
    else:
        high = min(low + np.exp(rng.uniform(np.log(0.2), np.log(10.0))), 9.9)
    return low + z * max(high - low, 0.05)


def synthetic_series(
    rng: np.random.Generator, n_steps: int, family: str | None = None
) -> np.ndarray:
    """One series of shape (n_steps, 2), positive, drawn from `family` (random if None)."""
    family = family or FAMILIES[int(rng.choice(len(FAMILIES), p=FAMILY_WEIGHTS))]
    t = np.arange(n_steps, dtype=np.float64)
    x = _GENERATORS[family](rng, t)
    if family in ("ar1", "ar2", "walk") and rng.random() < 0.5:  # smooth random curves
        x = _smooth(x, rng.uniform(0.3, 0.8))
    if rng.random() < 0.3:  # a linear trend
        x = x + rng.normal(0, 1.5, size=2) * (t / n_steps)[:, None] * x.std(axis=0)
    if rng.random() < 0.5:  # monotone warp: spiky peaks, flat troughs
        z = (x - x.min(axis=0)) / np.maximum(np.ptp(x, axis=0), 1e-9)
        x = np.exp(rng.uniform(1.0, 4.0) * z)
    if rng.random() < 0.25:  # observation noise
        x = x + rng.normal(0, rng.uniform(0.002, 0.03), size=x.shape) * np.ptp(x, axis=0)
    out = np.stack([_to_range(x[:, j], rng) for j in range(2)], axis=1)
    return np.clip(out, 0.0, None)


def synthetic_text(rng: np.random.Generator, n_steps: int, decimals: int = 2) -> str:
    """A random synthetic series rendered in the LLMTime coursework format."""
    return format_series(synthetic_series(rng, n_steps), decimals)
