"""GPU check of the engine: LoRA training throughput and MFU, batched forecasting, memory, NVML.

Runs lvmodel's own code paths on the exact Qwen2.5-0.5B-Instruct architecture (lvflops'
QWEN2_5_0_5B shape: 24 layers, hidden 896, 14 heads, 2 KV heads, MLP 4864, vocab 151936, tied
embeddings, rope theta 1e6, RMSNorm eps 1e-6) with random weights, or with real weights from
`--gguf FILE`; bf16 weights on CUDA, fp32 on the CPU. Needs only torch, transformers, peft, numpy,
scipy, h5py and the project's packages (put on sys.path from packages/*/src by this script): no
mlflow, no network, nothing from projects/. Prints, each part with its wall time:

- peak: an n x n torch.matmul timed in the dtype the training step's matrix products really run
  in (CUDA events on GPU): lvmodel.train runs the step under `autocast_for(device)`, which is bf16
  autocast on CUDA whatever the weights' dtype (so `--dtype fp32` on CUDA still trains in bf16,
  and the peak is measured in bf16: an fp32 peak would let MFU read above 100%), and no autocast
  on the CPU (the weights' dtype). Beside it, the spec-sheet dense bf16 peak of the GPU named by
  torch.cuda.get_device_name (H100 SXM 989, H100 PCIe 756, H200 989, A100 312 TFLOP/s; "unknown"
  for any other device, or when the step does not run in bf16/fp16).
- train: `lvmodel.train.fit` with `apply_lora(LoraSettings(rank=4))` (q_proj/v_proj, lm_head bias)
  on LLMTime windows of `--batch` x `--seq-len` tokens, `--warmup` + `--steps` steps, timed
  through fit's own logging protocol: `on_metrics(rows)` fires at logging points only (fit reads
  the device once there; a step makes no device read), here once right after the warm-up
  (`log_every = --warmup`; the callback then turns step logging off, as a real run whose
  `log_seconds` spans many steps) and once after the last step. Seconds per step = (time of the
  last callback - time of the warm-up callback) / `--steps`, each stamp taken after a device
  synchronize; tokens/s (positions computed, padding included) from it, and fit's own tokens/s
  (unpadded tokens) beside it. MFU = executed FLOPs per second / peak, against both the measured
  and the spec-sheet peak. Executed FLOPs = lvflops.executed_train_step_flops (forward +
  input-gradient backward + the adapters' and the bias's weight gradients, grouped-query attention
  counted as it runs: k/v at 2 KV heads); the budgeted FLOPs per step (lvflops.train_step_flops:
  3 x forward, GQA counted as MHA as the coursework allows) are printed beside it, never used for
  MFU. `--compile on` trains with `TrainConfig(compile=True)` (torch.compile of the decoder; CUDA
  only, so ignored on the CPU), `--compile both` runs the same steps eager and then compiled on
  the same LoRA model and reports both step times and the speed-up (the `train_*` figures are then
  the compiled run's, the eager run's are `train_eager_*`); graphs compiled during the timed steps
  are counted (0 expected: a recompile there would be in the step time). Peak memory. Target on
  one H200: MFU >= 35%.
- forecast: `lvmodel.forecast.forecast` (batched, grammar-constrained, KV cache) on `--series`
  histories of 50 steps (batch `--batch-size`, context `--context`, horizon `--horizon`) after a
  small warm-up call, against `naive_generate_forecast` (one series at a time, unconstrained) on
  `--naive-series` of them: forecasts/s, the ratio (target on one H200: >= 20x), invalid rates, the
  torch.compile graphs and seconds each call caused (transformers' `generate` compiles the forward
  by itself on CUDA when the KV cache is static; 0 expected otherwise), peak memory; and the same
  series sampled, `--samples` continuations each at temperature 1 (what `final` and the report
  score with): series/s and its time against greedy's.
- rates (`--rates`): the wall-time plan's rates of this machine (`lvmodel.walltime.Rates`, the
  figures `python -m projects.plan --rates FILE` predicts each pipeline step's wall time from):
  a fresh model saved to a folder and loaded back with `lvmodel.base.load_base` (timed), LoRA
  r=4 on q/v with the head bias, the training split's windows tokenized (timed) and `fit` of
  `--warmup` + `--steps` steps of `--batch` of them at each of `--rates-contexts` (the qwen
  preset's 128, 512, 768), a validation-loss pass over 64
  windows, forecasts of 16 and 64 series (`--rates-series`) at each context and each of
  `--rates-samples` (1 and 10); the data step (1000 series generated) and the reference forecasters on this host's CPU;
  an entry point's process start without mlflow. The MLflow layer's figures (a run's open and
  close, logging an evaluation, registering, `mlflow run` per step, mlflow's import) cannot be
  measured without mlflow: they are ASSUMED_TRACKING below (measured on the project's CPU),
  listed in the JSON under `rates.measured.assumed`. The rates go into the JSON as `rates`.
  This script needs no mlflow, so it does not add up the pipeline itself: on a machine with
  mlflow, `python -m projects.plan --preset qwen --method search --rates gpu_check.json` prints
  each step's predicted wall time and the total against the 10-minute target (this script runs
  that itself when mlflow is importable here).
- nvml: whether `import pynvml` (nvidia-ml-py) works, and on CUDA one reading of GPU memory,
  utilisation and power with the calls MLflow's system-metrics GPU monitor makes, on the NVML
  device found by the CUDA device's PCI bus id (NVML's indices ignore CUDA_VISIBLE_DEVICES, so the
  CUDA index may name another GPU), else by its UUID.

With random weights the forecasts are noise (the naive baseline's invalid rate is then ~100%): only
speed, compile counts and memory mean something. The tokenizer is the real Qwen2.5 one when it can
be had (the GGUF file's, `--tokenizer SPEC`, or Qwen/Qwen2.5-0.5B-Instruct in the local HF cache),
else lvmodel's tiny tokenizer, whose ids for digits, ",", "." and ";" are Qwen2's (`ord(c) - 33`),
so prompts have the same ids and lengths.

The last line printed is a one-line JSON summary of every figure; it is also written (after each
part, so a run cut short keeps what it measured) to `--json FILE`, else to $OUT/gpu_check.json when
$OUT is set.

Examples:
  python benchmarks/gpu_check.py                               # full settings (GPU: ~1-2 minutes)
  python benchmarks/gpu_check.py --compile both --skip-forecast  # torch.compile's effect on a step
  python benchmarks/gpu_check.py --layers 2 --batch 1 --seq-len 128 --steps 2 --warmup 1 \\
      --series 4 --naive-series 1                              # a quick CPU smoke run
  python benchmarks/gpu_check.py --gguf qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
  python benchmarks/gpu_check.py --rates --skip-train --skip-forecast  # the wall-time rates only
  benchmarks/gpu_check.sh engine [ARGS]    # the same through the wrapper
  benchmarks/gpu_check.sh pipeline         # the whole qwen pipeline with MLflow (see the wrapper)
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _src in sorted((ROOT / "packages").glob("*/src"), reverse=True):
    if str(_src) not in sys.path:
        sys.path.insert(0, str(_src))  # the project's packages without installing them

HISTORY_STEPS = 50  # the protocol's history: the first 50 steps of each series
MFU_TARGET, SPEEDUP_TARGET = 0.35, 20.0
# Dense (no sparsity) bf16 tensor-core peaks of NVIDIA's data sheets, TFLOP/s, looked up in
# torch.cuda.get_device_name (upper case): (every word that must be in it, words that must not,
# the name reported, TFLOP/s); the first match wins. The NVL boards (lower clocks) and GH200 are
# left out: "unknown". H100 SXM reports itself as e.g. "NVIDIA H100 80GB HBM3".
SPEC_BF16_TFLOPS: tuple[tuple[tuple[str, ...], tuple[str, ...], str, float], ...] = (
    (("H100", "PCIE"), (), "H100 PCIe", 756.0),
    (("H100",), ("NVL",), "H100 SXM", 989.0),
    (("H200",), ("NVL", "GH200"), "H200", 989.0),
    (("A100",), (), "A100", 312.0),
)
T0 = time.perf_counter()


def say(message: str) -> None:
    """A progress line, with the seconds since start."""
    print(f"[gpu_check {time.perf_counter() - T0:6.1f}s] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gpu_check.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "part",
        nargs="?",
        default="engine",
        choices=["engine"],
        help="what to check (engine; the pipeline part is `benchmarks/gpu_check.sh pipeline`)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:N, cpu")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bf16", "fp32"],
        help="base model dtype (auto: bf16 on CUDA, fp32 on CPU); trainables stay float32",
    )
    p.add_argument("--gguf", metavar="FILE", help="real Qwen2.5 weights and tokenizer (a .gguf)")
    p.add_argument(
        "--tokenizer",
        metavar="SPEC",
        help="a tokenizer folder or hub id (default: the GGUF's, else the HF cache's, else tiny)",
    )
    p.add_argument("--layers", type=int, help="keep only the first N decoder layers (CPU smoke)")
    p.add_argument("--batch", type=int, default=4, help="training windows per step (default 4)")
    p.add_argument("--seq-len", type=int, default=768, help="tokens per window (default 768)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3, >= 1)")
    p.add_argument("--series", type=int, default=128, help="series forecast batched (default 128)")
    p.add_argument("--batch-size", type=int, default=64, help="forecast batch (default 64)")
    p.add_argument("--naive-series", type=int, default=8, help="series forecast naively (8)")
    p.add_argument("--context", type=int, default=512, help="prompt token limit (default 512)")
    p.add_argument("--horizon", type=int, default=5, help="steps forecast (default 5)")
    p.add_argument(
        "--samples", type=int, default=10, help="sampled continuations per series (10; 1: skip)"
    )
    p.add_argument("--peak-n", type=int, help="matmul size for the peak (8192 CUDA, 2048 CPU)")
    p.add_argument("--peak-reps", type=int, help="timed matmuls for the peak (100 CUDA, 5 CPU)")
    p.add_argument(
        "--compile",
        default="off",
        choices=["off", "on", "both"],
        help="train with TrainConfig(compile=...): torch.compile of the decoder (CUDA only; "
        "ignored on the CPU); both: eager then compiled, and the speed-up (default off)",
    )
    p.add_argument(
        "--gen-compile",
        default="auto",
        choices=["auto", "off"],
        help="off: set generation_config.disable_compile (transformers' auto-compile) first",
    )
    p.add_argument(
        "--rates",
        action="store_true",
        help="also measure the wall-time plan's rates (lvmodel.walltime.Rates) into the JSON",
    )
    p.add_argument(
        "--rates-contexts", default="128,512,768", help="contexts of the rates (the qwen preset's)"
    )
    p.add_argument("--rates-samples", default="1,10", help="sample counts of the rates (1,10)")
    p.add_argument(
        "--rates-series", default="16,64", help="series of the two timed forecasts (16,64)"
    )
    p.add_argument("--skip-train", action="store_true", help="skip the training part")
    p.add_argument("--skip-forecast", action="store_true", help="skip the forecasting part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--json", metavar="FILE", help="write the summary here (default: $OUT/gpu_check.json)"
    )
    args = p.parse_args(argv)
    for name in ("batch", "seq_len", "steps", "warmup", "series", "batch_size", "naive_series"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.layers is not None and args.layers < 1:
        p.error("--layers must be at least 1")
    if args.samples < 1:
        p.error("--samples must be at least 1 (1: no sampled forecast)")
    if args.naive_series > args.series:
        p.error("--naive-series cannot exceed --series (the naive series are the first ones)")
    if args.gguf and not Path(args.gguf).is_file():
        p.error(f"--gguf: no file at {args.gguf}")
    return args


# -- set-up ----------------------------------------------------------------------------------------


def versions(device: Any) -> dict[str, Any]:
    import numpy
    import peft
    import torch
    import transformers

    out: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "numpy": numpy.__version__,
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
        out["device_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    else:
        out["device_name"] = platform.processor() or platform.machine()
    return out


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: Any, dtype: Any, n: int, reps: int) -> tuple[float, int]:
    """(FLOP/s, n) of an n x n @ n x n torch.matmul (counted n*n*(2n-1)) in `dtype`: the
    measured MFU denominator. Pass the dtype the step's products run in (`train_compute_dtype`).

    On CUDA 10 untimed products first (clocks up), then `reps` timed between CUDA events. On the
    CPU n is halved while one product would take over 5 s (bf16 on a CPU without AVX512-BF16/AMX
    runs at about 1 GFLOP/s).
    """
    import torch

    if device.type == "cpu":
        probe = torch.randn(512, 512, dtype=dtype)
        probe @ probe
        t0 = time.perf_counter()
        probe @ probe
        rate = 2 * 512**3 / max(time.perf_counter() - t0, 1e-9)
        while n > 512 and 2 * n**3 / rate > 5.0:
            n //= 2
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(10 if device.type == "cuda" else 3):
        torch.matmul(a, b, out=out)
    sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        seconds = time.perf_counter() - t0
    del a, b, out
    return reps * n * n * (2 * n - 1) / seconds, n


def train_compute_dtype(device: Any, model_dtype: Any) -> tuple[Any, str]:
    """(dtype, why) of the training step's matrix products: lvmodel.train runs every step under
    `autocast_for(device)`; where that enables autocast (bf16 on CUDA) its dtype, else the model's
    weights' dtype. Asked of autocast_for itself, so it follows train.py."""
    import torch

    from lvmodel.train import autocast_for

    with autocast_for(device):
        if torch.is_autocast_enabled(device.type):
            dtype = torch.get_autocast_dtype(device.type)
            return dtype, f"{dtype_name(dtype)} autocast of lvmodel.train.autocast_for"
    return model_dtype, "the weights' dtype (lvmodel.train uses no autocast here)"


def dtype_name(dtype: Any) -> str:
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}.get(
        str(dtype), str(dtype).removeprefix("torch.")
    )


def spec_peak(device: Any, compute: Any) -> tuple[float | None, str]:
    """(FLOP/s or None, what): the spec-sheet dense bf16 peak of the named GPU (SPEC_BF16_TFLOPS),
    None ("unknown ...") on the CPU, for another GPU, or when the step does not run in bf16/fp16
    (these GPUs' fp16 dense peak equals their bf16 one)."""
    import torch

    if device.type != "cuda":
        return None, "unknown (not a CUDA device)"
    name = torch.cuda.get_device_name(device)
    if dtype_name(compute) not in ("bf16", "fp16"):
        return None, f"unknown ({name}: the step runs in {dtype_name(compute)}, not bf16)"
    upper = name.upper()
    for must, must_not, label, tflops in SPEC_BF16_TFLOPS:
        if all(w in upper for w in must) and not any(w in upper for w in must_not):
            return tflops * 1e12, f"{label} ({name}), dense bf16 {tflops:.0f} TFLOP/s"
    return None, f"unknown ({name} is not in the spec table)"


def rate(flops_per_s: float) -> str:
    """FLOP/s in TFLOP/s at or above 1e12, else GFLOP/s."""
    if flops_per_s >= 1e12:
        return f"{flops_per_s / 1e12:.1f} TFLOP/s"
    return f"{flops_per_s / 1e9:.1f} GFLOP/s"


def qwen_config(layers: int | None) -> Any:
    """Qwen2.5-0.5B-Instruct's config from lvflops' shape (the hub's values for the rest)."""
    from transformers import Qwen2Config

    from lvflops import QWEN2_5_0_5B

    hf: dict[str, Any] = QWEN2_5_0_5B.to_hf_config()
    hf.pop("qkv_bias")  # Qwen2 always has q/k/v biases; not a Qwen2Config key
    if layers is not None:
        hf["num_hidden_layers"] = layers
    hf.update(
        hidden_act="silu",
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        max_position_embeddings=32768,
        use_sliding_window=False,
        bos_token_id=151643,
        eos_token_id=151645,
        attn_implementation="sdpa",
    )
    return Qwen2Config(**hf)


def _cut_layers(model: Any, layers: int) -> None:
    import torch

    inner = model.model
    if layers < len(inner.layers):
        inner.layers = torch.nn.ModuleList(list(inner.layers)[:layers])
        model.config.num_hidden_layers = layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:layers]


def real_tokenizer(spec: str | None) -> tuple[Any, str] | None:
    """The real Qwen2.5 tokenizer from `spec`, else from the local HF cache, else None."""
    from transformers import AutoTokenizer

    from lvmodel.base import DEFAULT_BASE

    if spec:
        return AutoTokenizer.from_pretrained(spec), f"{spec} (real)"
    try:
        tok = AutoTokenizer.from_pretrained(DEFAULT_BASE, local_files_only=True)
    except Exception:  # not in the cache (no network here): fall back to the tiny tokenizer
        return None
    return tok, f"{DEFAULT_BASE} from the local HF cache (real)"


def build_model(args: argparse.Namespace, device: Any, dtype: Any) -> tuple[Any, Any, str, str]:
    """(model, tokenizer, weights, tokenizer source), ready as lvmodel.base.load_base leaves them."""
    import torch
    from transformers import Qwen2ForCausalLM

    from lvmodel.base import load_base, make_ready
    from lvmodel.tiny_tokenizer import build_tiny_tokenizer

    if args.gguf:
        say(f"loading {args.gguf} ({dtype}; about a minute on a CPU)")
        model, tok = load_base(args.gguf, dtype=dtype, device=device)
        if args.layers is not None:
            _cut_layers(model, args.layers)
        return model, tok, f"gguf:{Path(args.gguf).name}", "the GGUF file's (real)"
    cfg = qwen_config(args.layers)
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    model.to(dtype).eval()
    found = real_tokenizer(args.tokenizer)
    if found is None:
        tok, source = build_tiny_tokenizer(), "lvmodel tiny tokenizer (Qwen2 ids for ASCII)"
    else:
        tok, source = found
    make_ready(model, tok)
    return model, tok, "random (exact Qwen2.5-0.5B shape)", source


def compile_stats() -> dict[str, float]:
    """torch._dynamo's running totals: graphs compiled, frames compiled, seconds compiling."""
    try:
        from torch._dynamo.utils import compilation_time_metrics, counters
    except Exception:
        return {"graphs": float("nan"), "frames": float("nan"), "seconds": float("nan")}
    return {
        "graphs": float(counters["stats"]["unique_graphs"]),
        "frames": float(counters["frames"]["ok"]),
        "seconds": float(sum(compilation_time_metrics.get("_compile.compile_inner", []))),
    }


def compile_delta(before: dict[str, float]) -> dict[str, float]:
    after = compile_stats()
    return {k: after[k] - before[k] for k in before}


def reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: Any) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


# -- parts -----------------------------------------------------------------------------------------


def nvml_check(device: Any) -> dict[str, Any]:
    """`import pynvml` and, on CUDA, the readings MLflow's GPUMonitor takes (memory, util, power)."""
    out: dict[str, Any] = {}
    try:
        import pynvml
    except ImportError as err:
        out["pynvml_import"] = False
        out["pynvml_error"] = f"{err} (pip install nvidia-ml-py)"
        return out
    out["pynvml_import"] = True
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        out["nvml_init_error"] = str(err)
        return out
    try:
        out["nvml_gpus"] = pynvml.nvmlDeviceGetCount()
        if device.type != "cuda":
            return out  # no CUDA device to read: the import and the count only
        handle, out["nvml_device_by"] = nvml_handle(pynvml, device)
        out["nvml_device_name"] = pynvml.nvmlDeviceGetName(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        out["nvml_memory_usage_percentage"] = round(memory.used / memory.total * 100, 1)
        out["nvml_memory_usage_megabytes"] = memory.used / 1e6
        out["nvml_utilization_percentage"] = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        power = pynvml.nvmlDeviceGetPowerUsage(handle)
        limit = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)
        out["nvml_power_usage_watts"] = power / 1000
        out["nvml_power_usage_percentage"] = power / limit * 100
    except pynvml.NVMLError as err:
        out["nvml_error"] = str(err)
    finally:
        pynvml.nvmlShutdown()
    return out


def nvml_handle(pynvml: Any, device: Any) -> tuple[Any, str]:
    """(NVML handle, how it was found) of CUDA `device`. NVML numbers the GPUs its own way (PCI
    order, ignoring CUDA_VISIBLE_DEVICES), so the CUDA index is the last resort: the PCI bus id
    from torch's device properties first, then the UUID."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    pci = [getattr(props, f"pci_{k}_id", None) for k in ("domain", "bus", "device")]
    if None not in pci:
        bus_id = f"{pci[0]:08x}:{pci[1]:02x}:{pci[2]:02x}.0"
        return pynvml.nvmlDeviceGetHandleByPciBusId(bus_id), f"PCI bus id {bus_id}"
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        return pynvml.nvmlDeviceGetHandleByUUID(uuid), f"UUID {uuid}"
    return pynvml.nvmlDeviceGetHandleByIndex(index), f"CUDA index {index} (no PCI id, no UUID)"


def make_data(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Generated series (the coursework's generator): train, val, forecast histories, codec."""
    import lvdata

    n_train = max(8, args.batch)
    traj = lvdata.simulate(n_systems=n_train + 4 + args.series, seed=1000 + args.seed)
    values = traj.values
    codec = lvdata.LLMTimeCodec.fit(values[:n_train])
    train, val = values[:n_train], values[n_train : n_train + 4]
    histories = values[n_train + 4 :, :HISTORY_STEPS]
    return train, val, histories, codec


def compile_modes(args: argparse.Namespace, device: Any) -> list[str]:
    """The training runs `--compile` asks for: ["off"], ["on"] or ["off", "on"]. lvmodel.train
    compiles on CUDA only, so on the CPU every choice is one eager run."""
    if device.type != "cuda":
        return ["off"]
    return ["off", "on"] if args.compile == "both" else [args.compile]


def timed_fit(args, model, tok, codec, train, val, lora, device, compile_on: bool) -> dict:
    """One `fit` of `--warmup` + `--steps` steps, timed between its warm-up and last logging points.

    fit hands rows to `on_metrics` at logging points only, after one device read of every pending
    step's loss and gradient norm, which waits for the stream to reach it. `log_every = warmup`
    makes the first point fire right after the warm-up; the callback then sets `log_every = 0`
    (with `log_seconds = 0`, the only point left is the last step's): the timed steps run as in a
    real run whose logging interval spans them, with no device read in between. Each stamp is
    taken after a device synchronize, so the window holds exactly the `--steps` timed steps.
    """
    from lvmodel.config import TrainConfig
    from lvmodel.train import fit

    n_steps = args.warmup + args.steps
    config = TrainConfig(
        steps=n_steps,
        lr=1e-4,
        batch_size=args.batch,
        context_length=args.seq_len,
        schedule="constant",
        eval_every=0,
        eval_windows=args.batch,
        forecast_series=0,
        evaluate_at_end=False,  # no evaluation: the last logging point is the last step's
        checkpoint_every=0,
        checkpoint_seconds=0.0,
        log_every=args.warmup,
        log_seconds=0.0,
        compile=compile_on,
        seed=args.seed,
    )
    points: list[dict[str, Any]] = []

    def on_metrics(rows: list[tuple[int, dict[str, float]]]) -> None:
        sync(device)
        stamp = time.perf_counter()
        step, metrics = rows[-1]
        points.append({"t": stamp, "step": step, "metrics": metrics, "compile": compile_stats()})
        if step == args.warmup:
            config.log_every = 0  # warm-up over: the next logging point is the last step's
        loss = metrics.get("train_loss", float("nan"))
        say(f"  logging point at step {step}/{n_steps} ({len(rows)} rows): loss {loss:.4f}")

    before = compile_stats()
    reset_peak(device)
    t0 = time.perf_counter()
    result = fit(model, tok, codec, train, val, config, lora, on_metrics=on_metrics, progress=False)
    sync(device)
    wall = time.perf_counter() - t0
    steps_seen = [p["step"] for p in points]
    start = next((p for p in points if p["step"] == args.warmup), None)
    if result.steps != n_steps or start is None or steps_seen[-1] != n_steps:
        raise RuntimeError(
            f"fit ran {result.steps} of {n_steps} steps ({result.stopped}) with logging points at "
            f"steps {steps_seen}: expected one at the warm-up's end ({args.warmup}) and one at "
            f"{n_steps}"
        )
    end = points[-1]
    seconds = end["t"] - start["t"]
    warm = {k: start["compile"][k] - before[k] for k in before}
    timed = {k: end["compile"][k] - start["compile"][k] for k in before}
    return {
        "seconds": seconds,
        "seconds_per_step": seconds / args.steps,
        "log_points_timed": len(points) - points.index(start) - 1,
        "fit_tokens_per_s": end["metrics"].get("tokens_per_s"),
        "final_loss": end["metrics"].get("train_loss"),
        "peak_memory_gib": peak_gib(device),
        "warmup_compiled_graphs": warm["graphs"],
        "warmup_compile_s": warm["seconds"],
        "timed_compiled_graphs": timed["graphs"],
        "wall_s": wall,
    }


def train_part(args, model, tok, codec, train, val, peaks, device) -> tuple[Any, dict]:
    """LoRA training through lvmodel.train.fit, timed by its logging points (`timed_fit`), once
    per `--compile` mode; MFU from lvflops' executed FLOPs (GQA as run) against both peaks.

    `peaks` = (measured FLOP/s, spec-sheet FLOP/s or None).
    """
    import lvdata
    from lvflops import executed_train_step_flops, train_step_flops
    from lvmodel.lora import LoraSettings, apply_lora, parameter_counts
    from lvmodel.run_plan import model_shape
    from lvmodel.train import Batches

    measured, spec = peaks
    lora = LoraSettings(rank=4)  # q_proj, v_proj, alpha = rank, the lm_head bias
    peft_model = apply_lora(model, lora)
    trainable, total = parameter_counts(peft_model)
    dtypes = sorted(
        {str(p.dtype).removeprefix("torch.") for p in peft_model.parameters() if p.requires_grad}
    )
    n_steps = args.warmup + args.steps
    # The micro-batches fit will draw (same windows, same seed, same order; each fit starts
    # afresh): their shapes give the FLOPs and the tokens of the timed steps.
    windows = lvdata.make_windows([codec.encode(s) for s in train], tok, args.seq_len)
    draws = Batches(windows, args.batch, args.seed)
    shapes = [tuple(draws.next()["input_ids"].shape) for _ in range(n_steps)][args.warmup :]
    fkw = lora.flops_kwargs()
    shape = model_shape(peft_model)
    executed = sum(executed_train_step_flops(shape, s, b, **fkw).total for b, s in shapes)
    executed_mha = sum(
        executed_train_step_flops(shape, s, b, gqa_as_mha=True, **fkw).total for b, s in shapes
    )
    budgeted = sum(train_step_flops(shape, s, b, **fkw).total for b, s in shapes)
    tokens = sum(b * s for b, s in shapes)
    out: dict[str, Any] = {
        "train_batch": args.batch,
        "train_seq_len": args.seq_len,
        "train_warmup_steps": args.warmup,
        "train_timed_steps": args.steps,
        "train_trainable_params": trainable,
        "train_trainable_dtypes": dtypes,
        "train_executed_flops_per_step": executed / args.steps,
        "train_executed_flops_gqa_as_mha_per_step": executed_mha / args.steps,
        "train_budgeted_flops_per_step": budgeted / args.steps,
    }
    modes = compile_modes(args, device)
    if args.compile != "off" and device.type != "cuda":
        say(f"train: --compile {args.compile} ignored: lvmodel.train compiles on CUDA only")
    runs: dict[str, dict[str, Any]] = {}
    for mode in modes:
        say(
            f"train [compile {mode}]: fit() {n_steps} steps ({args.warmup} warm-up, {args.steps} "
            f"timed) of {args.batch} x {args.seq_len} tokens; {trainable:,} trainable "
            f"({'/'.join(dtypes)}) of {total:,}"
        )
        run = timed_fit(args, peft_model, tok, codec, train, val, lora, device, mode == "on")
        seconds = run.pop("seconds")
        run.update(
            tokens_per_s=tokens / seconds,
            achieved_flops_per_s=executed / seconds,
            mfu=executed / seconds / measured,
            mfu_spec=executed / seconds / spec if spec else None,
        )
        runs[mode] = run
        say(
            f"  [compile {mode}] {run['seconds_per_step'] * 1e3:.1f} ms/step, "
            f"{run['tokens_per_s']:.0f} tokens/s, MFU {run['mfu']:.1%} of the measured peak, "
            + (f"{run['mfu_spec']:.1%} of the spec peak" if spec else "spec peak unknown")
            + f"; graphs compiled in warm-up {run['warmup_compiled_graphs']:.0f} "
            f"({run['warmup_compile_s']:.1f} s), in the timed steps "
            f"{run['timed_compiled_graphs']:.0f}; wall {run['wall_s']:.1f} s"
        )
        if run["timed_compiled_graphs"]:
            say("  WARNING: graphs were compiled during the timed steps: raise --warmup")
        gc.collect()
    out["train_compile"] = modes[-1]
    out.update({f"train_{k}": v for k, v in runs[modes[-1]].items()})
    if len(modes) == 2:
        out.update({f"train_eager_{k}": v for k, v in runs["off"].items()})
        speedup = runs["off"]["seconds_per_step"] / runs["on"]["seconds_per_step"]
        out["train_compile_speedup"] = speedup
    return peft_model, out


def forecast_part(args, model, tok, codec, histories, device) -> dict[str, Any]:
    """Batched constrained forecasting against naive one-at-a-time generation."""
    from lvmodel.forecast import forecast, naive_generate_forecast
    from lvmodel.lora import LoraSettings

    # The LoRA wrap train_part made, for the FLOPs count (none for the bare base: --skip-train)
    kw: dict[str, Any] = (
        {"lora": LoraSettings(rank=4)} if getattr(model, "peft_config", None) else {}
    )
    if args.gen_compile == "off":
        base = getattr(model, "get_base_model", lambda: model)()
        base.generation_config.disable_compile = True
    out: dict[str, Any] = {"forecast_gen_compile": args.gen_compile}
    reset_peak(device)
    t_part = time.perf_counter()

    say(f"forecast: warm-up call on {min(2, len(histories))} series")
    before = compile_stats()
    warm = forecast(
        model, tok, codec, histories[:2], args.horizon, context_length=args.context, **kw
    )
    d = compile_delta(before)
    out.update(
        forecast_warmup_s=warm.seconds,
        forecast_warmup_compiled_graphs=d["graphs"],
        forecast_warmup_compile_s=d["seconds"],
    )

    say(
        f"forecast: {len(histories)} series, batch {args.batch_size}, context {args.context}, "
        f"horizon {args.horizon} (batched, constrained)"
    )
    batched = functools.partial(
        forecast,
        model,
        tok,
        codec,
        histories,
        args.horizon,
        context_length=args.context,
        batch_size=args.batch_size,
        **kw,
    )
    before = compile_stats()
    fast = batched()
    d = compile_delta(before)
    n, m = len(histories), args.naive_series
    fixed = max(fast.generated_tokens // n + 16, 12 * args.horizon)
    out.update(
        forecast_series=n,
        forecast_batch_size=args.batch_size,
        forecast_context=args.context,
        forecast_horizon=args.horizon,
        forecast_prompt_tokens_mean=fast.prompt_tokens / n,
        forecast_generated_tokens_mean=fast.generated_tokens / n,
        forecast_seconds=fast.seconds,
        forecast_per_s=n / fast.seconds,
        forecast_invalid_rate=fast.invalid_rate,
        forecast_compiled_graphs=d["graphs"],
        forecast_compiled_frames=d["frames"],
        forecast_compile_s=d["seconds"],
    )
    say(
        f"  batched: {n / fast.seconds:.2f} forecasts/s ({fast.seconds:.2f} s), invalid "
        f"{fast.invalid_rate:.1%}, compiled graphs {d['graphs']:.0f} ({d['seconds']:.1f} s)"
    )
    if args.samples > 1:
        say(
            f"forecast: the same {n} series sampled, {args.samples} continuations each at "
            f"temperature 1 (what `final` and the report score with: eval_samples)"
        )
        before = compile_stats()
        sampled = batched(num_samples=args.samples, seed=args.seed)
        d = compile_delta(before)
        out.update(
            sampled_samples=args.samples,
            sampled_seconds=sampled.seconds,
            sampled_per_s=n / sampled.seconds,
            sampled_sequences_per_s=n * args.samples / sampled.seconds,
            sampled_invalid_rate=sampled.invalid_rate,
            sampled_compiled_graphs=d["graphs"],
            sampled_vs_greedy_time=sampled.seconds / fast.seconds,
        )
        say(
            f"  sampled: {n / sampled.seconds:.2f} series/s ({sampled.seconds:.2f} s, "
            f"{out['sampled_vs_greedy_time']:.1f}x greedy's time), invalid "
            f"{sampled.invalid_rate:.1%}"
        )
    say(f"forecast: naive, {m} series one at a time, max_new_tokens {fixed}")
    before = compile_stats()
    naive = naive_generate_forecast(
        model,
        tok,
        codec,
        histories[:m],
        args.horizon,
        max_new_tokens=fixed,
        context_length=args.context,
        **kw,
    )
    d = compile_delta(before)
    out.update(
        naive_series=m,
        naive_max_new_tokens=fixed,
        naive_seconds=naive.seconds,
        naive_per_s=m / naive.seconds,
        naive_invalid_rate=naive.invalid_rate,
        naive_compiled_graphs=d["graphs"],
        forecast_speedup=(n / fast.seconds) / (m / naive.seconds),
        forecast_peak_memory_gib=peak_gib(device),
        forecast_wall_s=time.perf_counter() - t_part,
    )
    say(
        f"  naive: {m / naive.seconds:.2f} forecasts/s ({naive.seconds:.2f} s), invalid "
        f"{naive.invalid_rate:.1%}; speedup {out['forecast_speedup']:.1f}x"
    )
    return out


# Figures of the MLflow layer that this machine cannot measure (no mlflow here), in seconds:
# measured on the project's 2-core CPU with a SQLite store by `python -m projects.plan --preset
# tiny --method search --measure-rates` (lvtrack.rates_probe; docs/gpu.md "Wall-time plan").
# `mlflow_layer_import_s` is what an entry point's imports add there beyond torch, transformers,
# peft and lvmodel (10.7 s against 6.3 s), added to the process start measured here;
# `register_pyfunc_s` is added to a base load (registering loads the logged model back and
# forecasts once); `process_start_by_step` are the entry points that import no torch.
ASSUMED_TRACKING: dict[str, Any] = {
    "run_fixed_s": 1.16,
    "eval_log_s": 0.76,
    "register_pyfunc_s": 1.03,
    "mlflow_layer_import_s": 4.4,
    "process_start_by_step": {"data": 3.6, "promote": 2.9, "pipeline": 2.4},
    "steps_s": {
        "promote": 0.12,
        "budget": 0.01,
        "report": 1.17,
        "search": 1.61,
        "mlflow_run": 1.78,
    },
}


def rates_part(args: argparse.Namespace, device: Any, dtype: Any) -> dict:
    """lvmodel.walltime.Rates of this machine for the qwen preset's runs: a fresh model
    (`build_model`) saved to a folder and loaded back with lvmodel.base.load_base (timed), LoRA
    r=4 on q/v with the head bias, `fit` at each of --rates-contexts (batch --batch), the
    validation loss over 64 windows, forecasts of --rates-series series at each context and
    --rates-samples; the data step (1000 series generated) and the reference forecasters timed
    on this host's CPU; the MLflow layer's figures from ASSUMED_TRACKING (listed in the rates'
    `measured.assumed`)."""
    import tempfile

    import lvdata
    from lvmodel.base import load_base
    from lvmodel.lora import LoraSettings
    from lvmodel.walltime import measure_process_start, measure_rates, measure_reference

    contexts = [int(c) for c in args.rates_contexts.split(",")]
    samples = [int(s) for s in args.rates_samples.split(",")]
    sizes = [int(n) for n in args.rates_series.split(",")]
    t = time.perf_counter()
    traj = lvdata.simulate(n_systems=1000, seed=args.seed)
    data_s = time.perf_counter() - t
    parts = lvdata.split(1000, seed=0)
    codec = lvdata.LLMTimeCodec.fit(traj.values[parts.train])
    train, val, test = (traj.values[getattr(parts, k)] for k in ("train", "val", "test"))
    say(f"rates: data generated in {data_s:.1f} s; timing the reference forecasters")
    reference = measure_reference(train, traj.time, [val, test], HISTORY_STEPS, args.horizon)
    with tempfile.TemporaryDirectory(prefix="gpu-check-base-") as folder:
        model, tok, _, _ = build_model(args, device, dtype)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        del model
        rates = measure_rates(
            lambda: load_base(folder, dtype=dtype, device=device),
            codec,
            train,  # all 700: `windows_s` is the training split's tokenization
            val,
            contexts=contexts,
            samples=samples,
            batch_size=args.batch,
            lora=LoraSettings(rank=4),
            eval_windows=64,
            forecast_sizes=(sizes[0], sizes[1]),
            history_steps=HISTORY_STEPS,
            horizon=args.horizon,
            train_steps=args.steps,
            warmup_steps=args.warmup,
            device=f"{device} ({versions(device)['device_name']}, {dtype_name(dtype)})",
            base="Qwen2.5-0.5B shape" + (f", {args.layers} layers" if args.layers else ""),
            say=lambda m: say(f"rates: {m}"),
        )
    src = [str(s) for s in sorted((ROOT / "packages").glob("*/src"))]
    start = measure_process_start(
        ["torch", "transformers", "peft", "lvmodel.train", "lvmodel.forecast"], path=src
    )
    a = ASSUMED_TRACKING
    rates.process_start_s = start + a["mlflow_layer_import_s"]
    rates.process_start_by_step = dict(a["process_start_by_step"])
    rates.run_fixed_s, rates.eval_log_s = a["run_fixed_s"], a["eval_log_s"]
    rates.register_s = rates.load_base_s + a["register_pyfunc_s"]
    # As lvtrack.rates_probe counts them: the data run with its figure; five reference runs,
    # each logging a val and a test evaluation.
    data_s += a["run_fixed_s"] + a["eval_log_s"]
    reference_s = sum(reference.values()) + len(reference) * 2 * a["eval_log_s"]
    rates.steps_s = {**a["steps_s"], "data": data_s, "reference": reference_s}
    rates.measured.update(
        reference_s=reference, process_start_without_mlflow_s=start, assumed=ASSUMED_TRACKING
    )
    say(
        "rates: training positions/s "
        + ", ".join(f"{c}: {r:.0f}" for c, r in rates.train_positions_per_s.items())
        + "; forecast series/s "
        + ", ".join(f"{k}: {r:.1f}" for k, r in rates.forecast_series_per_s.items())
        + f"; base load {rates.load_base_s:.1f} s, process start {start:.1f} s (+ mlflow's)"
    )
    return {"rates": rates.to_dict()}


def pipeline_plan(args: argparse.Namespace) -> None:
    """The qwen pipeline's predicted wall time by step from the rates just measured: printed by
    `projects.plan` where mlflow is importable, else the command that prints it elsewhere."""
    import importlib.util
    import subprocess

    target = args.json or (
        str(Path(os.environ["OUT"]) / "gpu_check.json")
        if os.environ.get("OUT")
        else "gpu_check.json"
    )
    command = [sys.executable, "-m", "projects.plan", "--preset", "qwen", "--method", "search",
               "--rates", target]  # fmt: skip
    if importlib.util.find_spec("mlflow") is None or not (args.json or os.environ.get("OUT")):
        say(
            "rates: no mlflow here (or no JSON written); on a machine with mlflow, `python -m "
            "projects.plan --preset qwen --method search --rates gpu_check.json` prints the qwen "
            "pipeline's predicted wall time by step"
        )
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *(str(s) for s in sorted((ROOT / "packages").glob("*/src")))]
    )}  # fmt: skip
    subprocess.run(command, cwd=ROOT, env=env, check=False)


# -- main ------------------------------------------------------------------------------------------


def write_summary(summary: dict[str, Any], path: str | None) -> None:
    target = path or (
        str(Path(os.environ["OUT"]) / "gpu_check.json") if os.environ.get("OUT") else None
    )
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(summary, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch
    except ImportError:
        print("gpu_check: needs torch, transformers and peft (pip install torch transformers peft)")
        return 2
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("gpu_check: --device cuda but torch sees no CUDA device", file=sys.stderr)
            return 2
    name = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[name]
    summary: dict[str, Any] = versions(device)
    summary.update(dtype=name, mlflow_imported="mlflow" in sys.modules)
    say(
        f"torch {summary['torch']}, transformers {summary['transformers']}, peft "
        f"{summary['peft']}; device {device} ({summary['device_name']}), {name}"
    )
    summary.update(nvml_check(device))
    say(
        f"pynvml: {'importable' if summary['pynvml_import'] else summary.get('pynvml_error')}"
        + (
            f"; device {summary['nvml_device_name']} by {summary['nvml_device_by']}"
            if "nvml_device_by" in summary
            else ""
        )
    )

    # The MFU denominators: a matmul measured in the dtype the step's products run in, and the
    # spec sheet's dense bf16 peak of the named GPU.
    compute, why = train_compute_dtype(device, dtype)
    if compute != dtype:
        say(
            f"train step matrix products run in {dtype_name(compute)} ({why}), not in the "
            f"weights' {name}: the peak is measured in {dtype_name(compute)}"
        )
    n = args.peak_n or (8192 if device.type == "cuda" else 2048)
    reps = args.peak_reps or (100 if device.type == "cuda" else 5)
    t = time.perf_counter()
    peak, n = matmul_peak(device, compute, n, reps)
    spec, spec_what = spec_peak(device, compute)
    summary.update(
        train_compute_dtype=dtype_name(compute),
        train_compute_dtype_why=why,
        matmul_dtype=dtype_name(compute),
        matmul_n=n,
        matmul_reps=reps,
        matmul_peak_flops_per_s=peak,
        matmul_wall_s=time.perf_counter() - t,
        spec_peak_flops_per_s=spec,
        spec_peak=spec_what,
    )
    say(f"matmul peak measured ({dtype_name(compute)}, {n}^2 x {reps}): {rate(peak)}")
    say(
        f"spec-sheet peak: {spec_what}" + (f"; measured / spec = {peak / spec:.1%}" if spec else "")
    )

    t = time.perf_counter()
    model, tok, weights, tok_source = build_model(args, device, dtype)
    from lvmodel.run_plan import model_shape

    shape = model_shape(model)
    summary.update(
        weights=weights,
        tokenizer=tok_source,
        layers=shape.num_layers,
        tie_word_embeddings=shape.tie_word_embeddings,
        n_params=sum(p.numel() for p in model.parameters()),
        model_wall_s=time.perf_counter() - t,
    )
    say(
        f"model: {weights}, {shape.num_layers} layers, {summary['n_params']:,} parameters "
        f"({summary['model_wall_s']:.1f} s); tokenizer: {tok_source}"
    )
    train, val, histories, codec = make_data(args)
    write_summary(summary, args.json)

    if not args.skip_train:
        model, figures = train_part(args, model, tok, codec, train, val, (peak, spec), device)
        summary.update(figures)
        summary.update({f"after_train_{k}": v for k, v in nvml_check(device).items()})
        f = figures
        mfu_spec = f"{f['train_mfu_spec']:.1%}" if spec else "unknown"
        say(
            f"train [compile {f['train_compile']}]: {f['train_tokens_per_s']:.0f} tokens/s, "
            f"{f['train_seconds_per_step'] * 1e3:.1f} ms/step; MFU {f['train_mfu']:.1%} of the "
            f"measured {dtype_name(compute)} peak ({rate(peak)}), {mfu_spec} of the spec peak"
            + (f" ({rate(spec)})" if spec else "")
        )
        say(
            f"  FLOPs/step: executed {f['train_executed_flops_per_step']:.4g} (GQA as run; "
            f"{f['train_executed_flops_gqa_as_mha_per_step']:.4g} with GQA counted as MHA), "
            f"budgeted {f['train_budgeted_flops_per_step']:.4g} (3 x forward, GQA as MHA); "
            f"{rate(f['train_achieved_flops_per_s'])} executed; fit's own "
            f"{f['train_fit_tokens_per_s']:.0f} unpadded tokens/s; wall {f['train_wall_s']:.1f} s"
        )
        if "train_compile_speedup" in f:
            say(
                f"  torch.compile: {f['train_eager_seconds_per_step'] * 1e3:.1f} -> "
                f"{f['train_seconds_per_step'] * 1e3:.1f} ms/step, speed-up "
                f"{f['train_compile_speedup']:.2f}x (MFU {f['train_eager_mfu']:.1%} -> "
                f"{f['train_mfu']:.1%} of the measured peak)"
            )
        write_summary(summary, args.json)
    if not args.skip_forecast:
        summary.update(forecast_part(args, model, tok, codec, histories, device))
        write_summary(summary, args.json)
    if args.rates:
        del model  # the rates load a fresh copy
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        summary.update(rates_part(args, device, dtype))
        write_summary(summary, args.json)
        pipeline_plan(args)

    if device.type == "cuda":  # the targets are for one H200-class GPU
        if "train_mfu" in summary:
            ok = summary["train_mfu_target_met"] = summary["train_mfu"] >= MFU_TARGET
            line = f"target MFU >= {MFU_TARGET:.0%}: {'met' if ok else 'NOT met'} (measured peak)"
            if summary.get("train_mfu_spec") is not None:
                ok = summary["train_mfu_spec_target_met"] = summary["train_mfu_spec"] >= MFU_TARGET
                line += f", {'met' if ok else 'NOT met'} (spec peak)"
            say(line)
        if "forecast_speedup" in summary:
            ok = summary["forecast_speedup"] >= SPEEDUP_TARGET
            summary["forecast_speedup_target_met"] = ok
            say(f"target forecast speedup >= {SPEEDUP_TARGET:.0f}x: {'met' if ok else 'NOT met'}")
    summary["total_wall_s"] = time.perf_counter() - T0
    write_summary(summary, args.json)
    print(json.dumps(summary, default=str, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
