"""The ``lvdata`` command line: simulate, inspect and encode trajectory files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from lvdata.codec import LLMTimeCodec
from lvdata.errors import DataError
from lvdata.simulate import MODELS, simulate
from lvdata.split import split
from lvdata.trajectories import Trajectories, load_trajectories
from lvdata.windows import tokenize_steps

__all__ = ["load_tokenizer", "main"]

PERCENTILES = (1, 50, 90, 95, 99)


def _load(path: str) -> Trajectories:
    try:
        return load_trajectories(path)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None


def load_tokenizer(spec: str) -> Any:
    """A Hugging Face tokenizer from a hub id, a local directory or a ``.gguf`` file.

    transformers is imported here, lazily; a ``.gguf`` file also needs the ``gguf`` package.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise click.ClickException(
            "--tokenizer needs the transformers package (and gguf for .gguf files): "
            "pip install transformers gguf"
        ) from None
    path = Path(spec)
    try:
        if path.suffix == ".gguf":
            if not path.is_file():
                raise click.ClickException(f"{spec}: no such GGUF file")
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoTokenizer.from_pretrained(spec)
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(f"cannot load tokenizer {spec!r}: {exc}") from None


@click.group()
def main() -> None:
    """Lotka-Volterra / Rosenzweig-MacArthur data: generate, inspect, encode as LLMTime text."""


@main.command("simulate")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="HDF5 file.")
@click.option("--n-systems", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--n-steps", default=100, show_default=True, type=click.IntRange(min=2))
@click.option(
    "--t-end", default=200.0, show_default=True, type=click.FloatRange(min=0, min_open=True)
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--model",
    default="rosenzweig-macarthur",
    show_default=True,
    type=click.Choice(sorted(MODELS)),
)
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def simulate_cmd(
    out: str, n_systems: int, n_steps: int, t_end: float, seed: int, model: str, force: bool
) -> None:
    """Generate a data set in the coursework format and write it to --out."""
    if Path(out).exists() and not force:
        raise click.ClickException(f"{out} exists; pass --force to overwrite it")
    t0 = time.perf_counter()
    try:
        traj = simulate(n_systems, n_steps, t_end, seed, model)  # type: ignore[arg-type]
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    path = traj.save(out)
    click.echo(
        f"wrote {path}: trajectories float32 {traj.values.shape}, time float64 ({traj.n_steps},) "
        f"= linspace(0, {t_end:g}, {n_steps}); model {model}, seed {seed} "
        f"({time.perf_counter() - t0:.1f} s)"
    )


@main.command("inspect")
@click.argument("file", type=click.Path())
def inspect_cmd(file: str) -> None:
    """Print shapes, dtypes, value ranges and percentiles of a trajectories file."""
    traj = _load(file)
    v, t = traj.values, traj.time
    click.echo(f"file: {file}")
    click.echo(f"trajectories: {v.dtype} {v.shape} (series, steps, [prey, predator])")
    click.echo(f"time: {t.dtype} {t.shape}, {t[0]:g} .. {t[-1]:g}")
    uniform = np.allclose(t, np.linspace(t[0], t[-1], t.shape[0]))
    click.echo(f"time grid: {'uniform' if uniform else 'non-uniform'}, step {np.diff(t).mean():g}")
    for j, name in enumerate(("prey", "predator")):
        x = v[..., j]
        click.echo(
            f"{name}: min {x.min():.4g}, max {x.max():.4g}, mean {x.mean():.4g}; "
            f"t=0 range {x[:, 0].min():.4g} .. {x[:, 0].max():.4g}"
        )
    pct = np.percentile(v, PERCENTILES)
    shown = ", ".join(f"p{p} {q:.4g}" for p, q in zip(PERCENTILES, pct, strict=True))
    click.echo(f"pooled percentiles: {shown}")
    for k, val in traj.attrs.items():
        click.echo(f"attr {k}: {val}")


@main.command("encode")
@click.argument("file", type=click.Path())
@click.option("--index", "index", required=True, type=int, help="Series to encode.")
@click.option("--decimals", default=2, show_default=True, type=click.IntRange(0, 12))
@click.option("--steps", default=None, type=click.IntRange(min=1), help="First K steps only.")
@click.option("--alpha", default=None, type=float, help="Use this alpha instead of fitting it.")
@click.option(
    "--tokenizer",
    "tokenizer_spec",
    default=None,
    help="Hub id, local directory or .gguf file; prints token ids and tokens per step.",
)
def encode_cmd(
    file: str,
    index: int,
    decimals: int,
    steps: int | None,
    alpha: float | None,
    tokenizer_spec: str | None,
) -> None:
    """Print the LLMTime text of one series.

    alpha is fitted (LLMTimeCodec.fit, default rule) on the train split of FILE
    (split(n, (0.8, 0.1, 0.1), seed=0)) unless --alpha is given.
    """
    traj = _load(file)
    if not 0 <= index < traj.n_series:
        raise click.ClickException(f"--index {index} out of range: {file} has {traj.n_series}")
    if alpha is None:
        parts = split(traj.n_series, seed=0)
        codec = LLMTimeCodec.fit(traj.values[parts.train], decimals=decimals)
        how = f"fitted on the train split ({len(parts.train)} series, seed 0)"
    else:
        try:
            codec = LLMTimeCodec(alpha=alpha, decimals=decimals)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        how = "given"
    series = traj.values[index] if steps is None else traj.values[index, :steps]
    text = codec.encode(series)
    click.echo(f"# series {index}, {len(series)} steps, alpha {codec.alpha:g} ({how})", err=True)
    click.echo(text)
    if tokenizer_spec is not None:
        tok = load_tokenizer(tokenizer_spec)
        ids, starts = tokenize_steps(text, tok, codec.time_sep)
        per_step = np.diff([*starts, len(ids)])
        click.echo(f"token ids ({len(ids)}): {ids}")
        sizes, freq = np.unique(per_step, return_counts=True)
        counts = {int(k): int(c) for k, c in zip(sizes, freq, strict=True)}
        click.echo(
            f"tokens per step: mean {per_step.mean():.2f}, min {per_step.min()}, "
            f"max {per_step.max()}; counts {counts}"
        )
