"""Grid pipeline against search pipeline at the same budget and seed (issue 12, item 4).

Runs `python -m projects.pipeline --method grid` and `--method search` for one preset (default
`tiny`), each into a tracking store and checkpoint folder of its own under `--out`, on the same
data file (generated once by the first pipeline's `data` step and passed to the second), and
prints one table:

| method | final val MSE h5 | final test MSE h5 | search share | budget used | wall s |

- final val / test MSE h5: the `final` run's `val_mse_h5` / `test_mse_h5` (original units);
- search share: what the settings search spent (`sweep` + `context` runs, or the `search`
  trials) over the budget (the reference study: about 55%);
- budget used: every budgeted run's charge in the ledger (`lvtrack.ledger`) over the budget;
- wall s: the whole pipeline process.

Targets: search beats grid on val and on test, with at most 30% on search and at least 97% of the
budget used. Figures measured are quoted in docs/search.md.

Usage: python benchmarks/search_vs_grid.py [--preset tiny] [--out DIR] [--method grid --method
       search] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS_PHASES = {"grid": ("sweep", "context"), "search": ("search",)}


def run_pipeline(method: str, preset: str, out: Path, data_file: Path) -> float:
    """One pipeline in its own store; returns its wall time (s)."""
    root = out / method
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_EXPERIMENT_NAME": f"compare-{method}",
        "LV_CHECKPOINT_DIR": str(root / "checkpoints"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": str(REPO),
        # MLproject commands say `python`: this interpreter's (a venv's) first on PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [
        sys.executable, "-m", "projects.pipeline", "--preset", preset, "--method", method,
        "--data-file", str(data_file),
    ]  # fmt: skip
    t0 = time.monotonic()
    with open(root / "pipeline.log", "wb") as log:
        done = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        tail = (root / "pipeline.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{method} pipeline failed (exit {done.returncode}):\n{tail}")
    return wall


def figures(method: str, out: Path, budget: float) -> dict[str, float]:
    """The final run's metrics and the ledger's shares, read back from the method's store."""
    from mlflow.tracking import MlflowClient

    from lvtrack.ledger import read_ledger

    client = MlflowClient(f"sqlite:///{out / method / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"compare-{method}")
    assert experiment is not None
    exp_id = experiment.experiment_id
    ledger = read_ledger(client, exp_id, int(budget))
    phases = ledger.by_phase()
    finals = client.search_runs(
        [exp_id],
        filter_string="tags.phase = 'final' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    final = next(r for r in finals if "test_mse_h5" in r.data.metrics)
    searched = sum(phases.get(p, (0, 0))[1] for p in SETTINGS_PHASES[method])
    return {
        "val_mse_h5": final.data.metrics["val_mse_h5"],
        "test_mse_h5": final.data.metrics["test_mse_h5"],
        "final_steps": final.data.metrics.get("steps_run", float("nan")),
        "final_lr": float(final.data.params["lr"]),
        "final_rank": float(final.data.params["rank"]),
        "final_context": float(final.data.params["context_length"]),
        "search_share": searched / budget,
        "budget_used": (ledger.spent + ledger.reserved) / budget,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--out", type=Path, default=Path("/tmp/lv-search-vs-grid"))
    ap.add_argument("--method", action="append", choices=sorted(SETTINGS_PHASES))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from lvtrack.presets import get_preset

    budget = get_preset(args.preset).budget
    args.out.mkdir(parents=True, exist_ok=True)
    data_file = args.out / "lotka_volterra_data.h5"  # the first `data` step generates it
    rows = {}
    for method in args.method or ["grid", "search"]:
        wall = run_pipeline(method, args.preset, args.out, data_file)
        rows[method] = {**figures(method, args.out, budget), "wall_s": wall}
        print(f"{method}: {json.dumps(rows[method])}", file=sys.stderr)
    print(f"preset {args.preset}, budget {budget:.3e} FLOPs, data {data_file}\n")
    print("| method | final val MSE h5 | final test MSE h5 | search share | budget used | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, r in rows.items():
        print(
            f"| {method} | {r['val_mse_h5']:.4f} | {r['test_mse_h5']:.4f} | "
            f"{r['search_share']:.1%} | {r['budget_used']:.1%} | {r['wall_s']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
