"""Training checkpoints in safetensors and JSON only (nothing is unpickled on resume).

A checkpoint directory `step-000123/` holds:

- `trainable.safetensors`: every trainable tensor (LoRA weights, lm_head bias) by parameter name;
- `optimizer.safetensors` + `optimizer.json`: AdamW's per-parameter tensors, and its param groups;
- `scheduler.json`: the LR scheduler's counters (its lambdas are rebuilt from the config);
- `rng.safetensors`: torch CPU (and CUDA) generator states;
- `state.json`: step, data position, FLOPs so far, metrics history, the training config;
- `adapter/`: the adapter in PEFT format, ready for `PeftModel.from_pretrained`.

Directories are written under a temporary name and renamed, so a run killed while saving never
leaves a half-written checkpoint for `latest_checkpoint` to pick up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lvmodel.lora import LoraSettings, load_trainable_state, save_adapter, trainable_state

PREFIX = "step-"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors = {
        f"{idx}.{key}": value.detach().cpu().contiguous()
        for idx, per_param in sd["state"].items()
        for key, value in per_param.items()
        if isinstance(value, torch.Tensor)
    }
    scalars = {
        str(idx): {k: v for k, v in per_param.items() if not isinstance(v, torch.Tensor)}
        for idx, per_param in sd["state"].items()
    }
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    meta = json.loads((directory / "optimizer.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    root: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
    lora: LoraSettings,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint `root/step-{state['step']:06d}` atomically; keep the newest `keep_last`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state['step']:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    tensors, meta = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    (tmp / "scheduler.json").write_text(json.dumps(sched))
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["torch_cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    save_adapter(model, tmp / "adapter", lora)  # type: ignore[arg-type]
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = [p for p in root.glob(f"{PREFIX}*") if (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from `directory`; return its `state.json`.

    `directory` may be a checkpoint or a root holding `step-*` checkpoints (the newest is used).
    """
    directory = Path(directory)
    if not (directory / "state.json").is_file():
        latest = latest_checkpoint(directory)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {directory} (expected {PREFIX}*/state.json)")
        directory = latest
    load_trainable_state(model, load_file(str(directory / "trainable.safetensors")))
    _restore_optimizer(optimizer, directory)
    sched = json.loads((directory / "scheduler.json").read_text())
    scheduler.load_state_dict({**sched, "lr_lambdas": [None] * len(optimizer.param_groups)})
    rng = load_file(str(directory / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["torch_cuda"])
    state: dict[str, Any] = json.loads((directory / "state.json").read_text())
    state["checkpoint"] = str(directory)
    return state
