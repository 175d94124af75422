"""Throughput benchmark: forecasting (constrained batched vs naive) and training (tokens/s, MFU).

Prints, for the `tiny` base and (given --gguf) the real Qwen2.5 0.5B:
- forecasts per second of `lvmodel.forecast.forecast` (batched, left-padded, KV cache, grammar,
  per-row stop) against `naive_generate_forecast` (one series at a time, unconstrained, a fixed
  `max_new_tokens`), and the ratio;
- training tokens per second and MFU for tiny and for the full-size Qwen2.5-0.5B shape with random
  weights (LoRA r=4 on q/v plus the lm_head bias, as in the coursework).

MFU = executed FLOPs per second / the machine's matmul peak measured in this process (an n x n fp32
(or bf16 on GPU) matmul; FLOPs counted as m*p*(2n-1)). Executed FLOPs of a LoRA step come from
`lvflops.executed_train_step_flops`: forward + input-gradient backward (2 x forward) + the weight
gradients of the adapters and the bias only, since frozen weights get no weight gradients. The
budget, by contrast, charges the coursework's 3 x forward.

Usage: python benchmarks/bench.py [--gguf FILE] [--series 64] [--context 256 --context 512]
       [--skip-full] [--json OUT]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import lvdata
from lvflops import QWEN2_5_0_5B, executed_train_step_flops
from lvmodel.base import load_base
from lvmodel.forecast import forecast, model_shape, naive_generate_forecast
from lvmodel.lora import LoraSettings, apply_lora

LORA = LoraSettings(rank=4, lm_head_bias=True)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured matmul FLOP/s (m*p*(2n-1) convention) of an n x n product: the MFU denominator."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return reps * n * n * (2 * n - 1) / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_forecast(model, tokenizer, histories, codec, horizon: int, context: int) -> dict:
    """Forecasts/s of the batched constrained path against one-at-a-time naive generation."""
    n = len(histories)
    fast = forecast(
        model, tokenizer, codec, histories, horizon, context_length=context, batch_size=n
    )
    fixed = fast.generated_tokens // n + 16  # a typical fixed budget: the need plus a margin
    fixed = max(fixed, 12 * horizon)
    naive = naive_generate_forecast(
        model, tokenizer, codec, histories, horizon, max_new_tokens=fixed, context_length=context
    )
    return {
        "series": n,
        "batched_forecasts_per_s": n / fast.seconds,
        "naive_forecasts_per_s": n / naive.seconds,
        "speedup": naive.seconds / fast.seconds,
        "batched_invalid_rate": fast.invalid_rate,
        "naive_invalid_rate": naive.invalid_rate,
        "naive_max_new_tokens": fixed,
    }


def bench_train(model, batch: int, seq_len: int, steps: int, peak: float) -> dict:
    """Tokens/s and MFU of LoRA training steps on random tokens of the given shape."""
    device = next(model.parameters()).device
    shape = model_shape(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, min(shape.vocab_size, 90), (batch, seq_len), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()

    def step() -> None:
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    per_step = (time.perf_counter() - t0) / steps
    executed = executed_train_step_flops(
        shape, seq_len, batch, lora_rank=LORA.rank, lm_head_bias=LORA.lm_head_bias
    ).total
    return {
        "batch": batch,
        "seq_len": seq_len,
        "seconds_per_step": per_step,
        "tokens_per_s": batch * seq_len / per_step,
        "executed_flops_per_step": executed,
        "achieved_flops_per_s": executed / per_step,
        "mfu": executed / per_step / peak,
    }


def full_size_random(device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Qwen2.5-0.5B-Instruct's shape with random weights (no hub needed)."""
    s = QWEN2_5_0_5B
    cfg = Qwen2Config(
        vocab_size=s.vocab_size,
        hidden_size=s.hidden_size,
        num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads,
        num_key_value_heads=s.num_kv_heads,
        intermediate_size=s.intermediate_size,
        tie_word_embeddings=s.tie_word_embeddings,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype)


@click.command()
@click.option(
    "--gguf",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Also benchmark forecasting with this real Qwen2.5 GGUF model.",
)
@click.option("--series", default=64, show_default=True, help="Series per forecasting batch.")
@click.option("--gguf-series", default=8, show_default=True, help="Series for the GGUF model.")
@click.option("--horizon", default=5, show_default=True)
@click.option(
    "--context",
    "contexts",
    multiple=True,
    type=int,
    default=(256, 512),
    show_default=True,
    help="Prompt token limit(s) for tiny (repeat the option); the GGUF model uses the largest.",
)
@click.option("--train-steps", default=3, show_default=True)
@click.option("--full-batch", default=1, show_default=True, help="Batch of the full-size run.")
@click.option("--full-seq", default=512, show_default=True, help="Tokens of the full-size run.")
@click.option("--skip-full", is_flag=True, help="Skip the full-size training benchmark.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
def main(
    gguf,
    series,
    gguf_series,
    horizon,
    contexts,
    train_steps,
    full_batch,
    full_seq,
    skip_full,
    json_out,
) -> None:
    """Print forecasting and training throughput figures."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, dtype)
    report: dict = {
        "device": str(device),
        "dtype": str(dtype),
        "threads": torch.get_num_threads(),
        "matmul_peak_flops_per_s": peak,
    }
    click.echo(
        f"device {device}, {dtype}, {torch.get_num_threads()} threads; "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s"
    )

    traj = lvdata.simulate(n_systems=max(series, gguf_series) + 20, seed=123)
    codec = lvdata.LLMTimeCodec.fit(traj.values[:20])
    histories = traj.values[20:, :50]

    model, tok = load_base("tiny", device=device)
    for context in contexts:
        report[f"tiny_forecast_ctx{context}"] = r = bench_forecast(
            model, tok, histories[:series], codec, horizon, context
        )
        click.echo(
            f"tiny forecast (context {context}): batched {r['batched_forecasts_per_s']:.1f}/s, "
            f"naive {r['naive_forecasts_per_s']:.1f}/s, speedup {r['speedup']:.1f}x "
            f"(invalid {r['batched_invalid_rate']:.1%} vs {r['naive_invalid_rate']:.1%})"
        )
    tiny_lora = apply_lora(model, LORA)
    report["tiny_train"] = r = bench_train(tiny_lora, 8, 256, max(train_steps, 5), peak)
    click.echo(f"tiny train (8x256): {r['tokens_per_s']:.0f} tokens/s, MFU {r['mfu']:.1%}")
    del model, tiny_lora

    if gguf:
        model, tok = load_base(gguf, device=device, dtype=dtype)
        report["gguf_forecast"] = r = bench_forecast(
            model, tok, histories[:gguf_series], codec, horizon, max(contexts)
        )
        click.echo(
            f"qwen gguf forecast: batched {r['batched_forecasts_per_s']:.2f}/s, naive "
            f"{r['naive_forecasts_per_s']:.2f}/s, speedup {r['speedup']:.1f}x "
            f"(invalid {r['batched_invalid_rate']:.1%} vs {r['naive_invalid_rate']:.1%})"
        )
        del model

    if not skip_full:
        full = apply_lora(full_size_random(device, dtype), LORA)
        report["full_train"] = r = bench_train(full, full_batch, full_seq, train_steps, peak)
        click.echo(
            f"Qwen2.5-0.5B shape train ({full_batch}x{full_seq}): "
            f"{r['tokens_per_s']:.0f} tokens/s, {r['seconds_per_step']:.1f} s/step, "
            f"MFU {r['mfu']:.1%}"
        )
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))
    click.echo(json.dumps({k: v for k, v in report.items()}, default=float, indent=1))


if __name__ == "__main__":
    main()
