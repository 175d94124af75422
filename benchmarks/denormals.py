"""A tiny-preset LoRA training step on the CPU with and without denormals flushed to zero.

The tiny base's attention logits reach about 70; the backward of PyTorch's CPU flash attention
then computes exp() far below float32's normal range, where x86 takes a slow path.
`lvmodel.device.flush_denormals` (called first by `load_base` and the tiny base's pretraining)
sets FTZ/DAZ on every torch worker thread; the mode outlives the call, so each variant runs in a
fresh process. Prints the median milliseconds of a step (batch 8 x 256 tokens,
LoRA rank 16 on the seven linear layers: the tiny preset's settings) for each.

    python benchmarks/denormals.py [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def child(flush: bool, steps: int, threads: int) -> None:
    import torch

    import lvdata
    import lvmodel.base
    import lvmodel.device
    from lvmodel.config import TrainConfig
    from lvmodel.lora import LoraSettings, apply_lora
    from lvmodel.train import Batches, batch_loss, fit_data

    if not flush:
        lvmodel.device.flush_denormals = lambda: None  # load_base then leaves the mode alone
    torch.set_num_threads(threads)
    traj = lvdata.simulate(n_systems=120, n_steps=100, seed=0)
    codec = lvdata.LLMTimeCodec.fit(traj.values[:100])
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora = LoraSettings(rank=16, targets=targets)
    base, tok = lvmodel.base.load_base("tiny", device="cpu")
    torch.manual_seed(0)
    model = apply_lora(base, lora).train()
    config = TrainConfig(context_length=256, batch_size=8)
    batches = Batches(
        fit_data(tok, codec, traj.values[:100], traj.values[100:], config).train, 8, 0
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    times = []
    for _ in range(steps + 3):
        t0 = time.perf_counter()
        loss, n = batch_loss(model, batches.next(), torch.device("cpu"))
        (loss / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    print(f"{statistics.median(times[3:]) * 1e3:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=["flush", "keep"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child == "flush", args.steps, args.threads)
        return
    out = {}
    for mode in ("keep", "flush"):
        cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps),
               "--threads", str(args.threads)]  # fmt: skip
        run = subprocess.run(cmd, check=True, capture_output=True, text=True)
        out[mode] = float(run.stdout.strip().splitlines()[-1])
    print(
        f"tiny LoRA step, batch 8 x 256, {args.threads} threads: denormals kept "
        f"{out['keep']:.0f} ms, flushed {out['flush']:.0f} ms ({out['keep'] / out['flush']:.1f}x)"
    )


if __name__ == "__main__":
    main()
