"""The coursework pipeline on the real Qwen2.5 0.5B, on a CPU: `qwen` preset, cut by parameters.

Opt-in (`nox -s qwen-pipeline`, or `LV_QWEN_GGUF=FILE pytest -m qwen_pipeline tests/realmodel -s`):
the real Qwen2.5 architecture and tokenizer from the GGUF file that `../shared/tools/qwen-gguf`
assembles, through `mlflow run . -e pipeline -P preset=qwen -P base_model=FILE`, with the preset's
own code path (LoRA r=4 on q/v plus the lm_head bias, contexts 128/512/768, batch 4, 1e17 budget)
and only the step counts, the grid and the evaluation series cut by parameters (`LV_QWEN_CUTS`,
default below). Never part of CI: it loads a 0.5B model nine times and trains at 768 tokens.

It checks that every phase FINISHED, that the budget table adds up, that `final` was scored by
sampling (CRPS, coverage), that the report left no cell of its table empty, and that the champion
loads from the registry in a fresh process and forecasts held-out test series; and it prints the
wall time, every phase's validation MSE at horizon 5, the budget table, the champion's forecast
and the report's table.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GGUF = os.environ.get("LV_QWEN_GGUF", "")
# One lr x one rank, two optimizer steps per training run, two series per evaluation (the final
# model and the report sample 10 continuations of each): 36 min of pipeline on 2 cores.
DEFAULT_CUTS = "steps=2 lrs=0.0001 ranks=4 eval_series=2 method=grid"  # the grid: cut by lrs/ranks
PHASES = (
    "data",
    "reference",
    "baseline",
    "initial",
    "sweep",
    "context",
    "final",
    "promote",
    "report",
)

pytestmark = [
    pytest.mark.qwen_pipeline,
    pytest.mark.skipif(
        not GGUF or not Path(GGUF).is_file(),
        reason="set LV_QWEN_GGUF to the Qwen2.5 GGUF file (../shared/tools/qwen-gguf DIR)",
    ),
]


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: int = 3600):
    print("$", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_the_qwen_pipeline_runs_end_to_end_on_the_real_model(tmp_path, coursework_file):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "LV_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    cuts = os.environ.get("LV_QWEN_CUTS", DEFAULT_CUTS).split()
    upgrade = _run([sys.executable, "-m", "mlflow", "db", "upgrade", uri], env, REPO)
    assert upgrade.returncode == 0, upgrade.stderr[-2000:]
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "pipeline"]
    cmd += ["--env-manager", "local", "--experiment-name", "qwen-cpu"]
    for param in ["preset=qwen", f"base_model={GGUF}", f"data_file={coursework_file}", *cuts]:
        cmd += ["-P", param]
    start = time.perf_counter()
    done = _run(cmd, env, tmp_path)
    wall = time.perf_counter() - start
    (tmp_path / "pipeline.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-4000:]

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["qwen-cpu"], output_format="list")
    assert set(PHASES) <= {r.data.tags.get("phase") for r in runs}
    assert all(r.info.status == "FINISHED" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs if r.info.status != "FINISHED"
    ]
    budgeted = [r for r in runs if "lv.flops_planned" in r.data.tags]
    report = next(r for r in runs if r.info.run_name == "budget")
    spent = sum(r.data.metrics["flops_total"] for r in budgeted)
    assert report.data.metrics["flops_spent"] == spent
    assert 0 < spent <= 1e17
    final = next(r for r in budgeted if r.data.tags["phase"] == "final")
    assert final.data.params["base_model"] == GGUF and final.data.params["rank"] == "4"
    assert final.data.params["lora_targets"] == "q_proj,v_proj"
    assert final.data.params["lm_head_bias"] == "True"
    assert int(final.data.params["trainable_params"]) == 270_336 + 151_936  # LoRA r=4 + bias
    client = MlflowClient()
    champion = client.get_model_version_by_alias("lv-forecaster", "champion")
    assert champion.run_id == final.info.run_id
    # final is scored by sampling (the preset's eval_samples): CRPS and coverage beside MSE.
    assert {"test_crps_h5", "test_coverage80_h5"} <= set(final.data.metrics)
    # The report: every cell of the table measured or filled (its fills are budgeted runs, so
    # they are in `spent` above).
    (rep,) = [
        r for r in runs if r.data.tags.get("phase") == "report" and r.info.run_name == "report"
    ]
    assert rep.data.metrics["cells_empty"] == 0
    report_md = mlflow.artifacts.load_text(f"{rep.info.artifact_uri}/report.md")
    (tmp_path / "report.md").write_text(report_md)

    # The champion in a fresh process: held-out test series, first 50 steps in, 5 out.
    script = textwrap.dedent(
        f"""
        import json, mlflow, numpy as np, pandas as pd, lvdata
        mlflow.set_tracking_uri({uri!r})
        traj = lvdata.load_trajectories({str(coursework_file)!r})
        parts = lvdata.split(traj.n_series, seed=0)
        series = traj.values[parts.test][:4]
        df = pd.DataFrame({{"prey": [s[:50, 0].tolist() for s in series],
                            "predator": [s[:50, 1].tolist() for s in series]}})
        model = mlflow.pyfunc.load_model("models:/lv-forecaster@champion")
        out = model.predict(df, params={{"horizon": 5}})
        pred = np.stack([np.stack([np.asarray(a), np.asarray(b)], -1)
                         for a, b in zip(out["prey"], out["predator"])])
        truth = series[:, 50:55]
        last = series[:, 49:50]
        print(json.dumps({{"mse": float(np.nanmean((pred - truth) ** 2)),
                          "persistence_mse": float(np.mean((last - truth) ** 2)),
                          "invalid": int(np.isnan(pred).sum()),
                          "first": pred[0].round(3).tolist(), "truth": truth[0].round(3).tolist()}}))
        """
    )
    served = _run([sys.executable, "-c", script], env, tmp_path, timeout=1200)
    assert served.returncode == 0, served.stderr[-3000:]
    forecast = json.loads(served.stdout.strip().splitlines()[-1])
    assert forecast["invalid"] == 0

    table = _run(
        [sys.executable, "-m", "projects.budget", "--preset", "qwen"],
        {**env, "MLFLOW_EXPERIMENT_NAME": "qwen-cpu"},
        REPO,
    )
    lines = [f"qwen pipeline on this CPU: {wall:.0f} s wall ({' '.join(cuts)})"]
    for r in sorted(budgeted, key=lambda r: r.info.start_time):
        mse = r.data.metrics.get("val_mse_h5", float("nan"))
        secs = (r.info.end_time - r.info.start_time) / 1000
        lines.append(
            f"  {r.data.tags['phase']:<9} {r.info.run_name:<22} val_mse_h5 {mse:.4g}  "
            f"flops {r.data.metrics['flops_total']:.3e}  {secs:.0f} s"
        )
    lines.append(f"champion on 4 test series: {json.dumps(forecast)}")
    lines.append(table.stdout)
    lines.append(report_md)
    summary = "\n".join(lines)
    (tmp_path / "summary.txt").write_text(summary)
    print(summary)
