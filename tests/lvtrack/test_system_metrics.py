"""Budgeted runs log MLflow system metrics, GPU utilisation and memory included where NVML sees a GPU.

No machine here has a GPU, so NVML (the `pynvml` module of nvidia-ml-py, which MLflow's GPU monitor
calls) is replaced by a fake that reports one device; everything else is the real MLflow monitor
started by `lvtrack.runs.budgeted_run`.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from lvtrack.presets import get_preset
from lvtrack.runs import budgeted_run


def test_the_project_installs_nvml_bindings_and_psutil():
    # MLflow's system metrics need psutil (CPU, memory) and nvidia-ml-py (GPU); both are
    # requirements of the project, so a CUDA machine gets GPU metrics with no extra install.
    import psutil  # noqa: F401
    import pynvml

    assert hasattr(pynvml, "nvmlDeviceGetUtilizationRates")


class _FakeNvml:
    """What MLflow's GPUMonitor calls, for one device at 37% utilisation and 2 of 8 GB used."""

    class NVMLError(Exception):
        pass

    def nvmlInit(self) -> None:  # NVML's names, as MLflow calls them
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=2e9, total=8e9)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=37)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 100_000

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return 400_000

    def __getattr__(self, name: str):
        raise self.NVMLError(f"{name} not faked")


def test_a_budgeted_run_logs_gpu_utilisation_and_memory(tracking_uri, monkeypatch):
    from mlflow.system_metrics.metrics import gpu_monitor

    monkeypatch.setattr(gpu_monitor, "pynvml", _FakeNvml(), raising=False)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", gpu_monitor.pynvml)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    wanted = {"system/gpu_0_utilization_percentage", "system/gpu_0_memory_usage_megabytes"}
    preset = get_preset("micro")
    with budgeted_run("sysmetrics", "train", preset, 1, lambda: None, False, None) as (run, _):
        run_id = run.info.run_id
        deadline = (
            time.monotonic() + 120
        )  # the monitor thread logs every 0.05 s; poll, no sleep-sync
        while not wanted <= set(MlflowClient().get_run(run_id).data.metrics):
            if time.monotonic() > deadline:
                pytest.fail("no GPU system metrics logged within 120 s")
            time.sleep(0.05)
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["system/gpu_0_utilization_percentage"] == 37
    assert metrics["system/gpu_0_memory_usage_megabytes"] == pytest.approx(2000.0)
    assert "system/cpu_utilization_percentage" in metrics
    assert mlflow.active_run() is None
