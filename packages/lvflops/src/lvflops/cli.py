"""``lvflops`` command line: FLOPs tables for a model shape, training totals and budget shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lvflops.budget import DEFAULT_BUDGET, Budget
from lvflops.costs import (
    TRAIN_STEP_MULTIPLIER,
    executed_train_step_flops,
    generate_flops,
    static_cache_len,
    train_step_flops,
)
from lvflops.flops import Flops
from lvflops.forward import DEFAULT_LORA_TARGETS, forward_flops
from lvflops.shape import LORA_MODULES, SHAPES, ModelShape

_POSITIVE = click.IntRange(min=1)


def resolve_model(value: str) -> ModelShape:
    """A known shape name (case-insensitive), or a path to an HF ``config.json`` (or its folder)."""
    if value.lower() in SHAPES:
        return SHAPES[value.lower()]
    path = Path(value)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise click.BadParameter(
            f"unknown model {value!r}: use one of {', '.join(sorted(SHAPES))} "
            "or a path to a Hugging Face config.json",
            param_hint="--model",
        )
    try:
        config = json.loads(path.read_text())
        return ModelShape.from_hf_config(config)
    except (OSError, ValueError, TypeError) as err:
        raise click.BadParameter(f"cannot read a model shape from {path}: {err}") from err


def _parse_budget(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return int(Budget(float(value) if any(c in value for c in ".eE") else int(value)).total)
    except (ValueError, TypeError) as err:
        raise click.BadParameter(f"{value!r} is not a positive whole number of FLOPs") from err


def _table(fwd: Flops) -> str:
    rows = [(name, value) for name, value in fwd.by_component.items()]
    width = max(len(n) for n, _ in rows)
    total = fwd.total or 1
    lines = [f"{'component':<{width}}  {'FLOPs':>22}  {'share':>7}"]
    lines += [f"{n:<{width}}  {v:>22,}  {v / total:>7.2%}" for n, v in rows]
    lines.append(f"{'total':<{width}}  {fwd.total:>22,}  {1:>7.2%}")
    lines.append(f"{'(matmul)':<{width}}  {fwd.matmul:>22,}  {fwd.matmul / total:>7.2%}")
    return "\n".join(lines)


@click.group()
def main() -> None:
    """Analytic FLOPs of Qwen2-style models under the coursework rules."""


@main.command()
@click.option(
    "--model", default="qwen2.5-0.5b", show_default=True, help="Shape name or config.json."
)
@click.option("--seq-len", type=_POSITIVE, default=512, show_default=True)
@click.option("--batch", type=_POSITIVE, default=1, show_default=True)
@click.option("--steps", type=_POSITIVE, default=1, show_default=True, help="Training steps.")
@click.option("--lora-rank", type=_POSITIVE, default=None, help="LoRA rank (omit: no LoRA).")
@click.option(
    "--lora-target",
    "lora_targets",
    type=click.Choice(LORA_MODULES),
    multiple=True,
    help="Module wrapped by LoRA (repeatable; default q_proj and v_proj).",
)
@click.option("--lm-head-bias/--no-lm-head-bias", default=False, show_default=True)
@click.option("--gqa-as-mha/--no-gqa-as-mha", default=True, show_default=True)
@click.option("--budget", default=str(DEFAULT_BUDGET), callback=_parse_budget, help="e.g. 1e17.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def count(
    model: str,
    seq_len: int,
    batch: int,
    steps: int,
    lora_rank: int | None,
    lora_targets: tuple[str, ...],
    lm_head_bias: bool,
    gqa_as_mha: bool,
    budget: int,
    as_json: bool,
) -> None:
    """Forward + loss FLOPs by component, training total for STEPS steps, and its budget share.

    The forward shown is that of a training step: it includes the cross-entropy loss over every
    position, and a training step is 3 x it.
    """
    shape = resolve_model(model)
    kwargs: dict[str, Any] = {
        "lora_rank": lora_rank,
        "lora_targets": lora_targets or DEFAULT_LORA_TARGETS,
        "lm_head_bias": lm_head_bias,
        "gqa_as_mha": gqa_as_mha,
    }
    fwd = forward_flops(shape, seq_len, batch, loss=True, **kwargs)
    step = train_step_flops(shape, seq_len, batch, **kwargs)
    train_total = steps * step.total
    plan = Budget(budget)
    settings = {"seq_len": seq_len, "batch": batch, "steps": steps, **kwargs}
    settings["lora_targets"] = list(kwargs["lora_targets"]) if lora_rank else []
    result: dict[str, Any] = {
        "model": model,
        "shape": shape.to_hf_config(),
        "n_params": shape.n_params(),
        "settings": settings,
        "forward": fwd.as_dict(),
        "train_step": step.total,
        "train_step_multiplier": TRAIN_STEP_MULTIPLIER,
        # what a LoRA step executes (for MFU): GQA as run, whatever the budget's convention
        "train_step_executed": executed_train_step_flops(
            shape, seq_len, batch, **{**kwargs, "gqa_as_mha": False}
        ).total,
        "train_total": train_total,
        "budget": plan.total,
        "budget_share": plan.share_of(train_total),
        "max_steps": plan.max_steps(step),
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"{model}: seq_len {seq_len}, batch {batch}, LoRA "
        f"{f'r={lora_rank} on ' + ','.join(kwargs['lora_targets']) if lora_rank else 'none'}, "
        f"lm_head bias {'yes' if lm_head_bias else 'no'}, GQA counted as "
        f"{'MHA' if gqa_as_mha else 'GQA'}"
    )
    click.echo("forward + cross-entropy loss (the forward of a training step):")
    click.echo(_table(fwd))
    click.echo(f"train step (3 x (forward + loss)): {step.total:,} FLOPs")
    click.echo(f"train total ({steps} steps): {train_total:,} FLOPs = {train_total:.3e}")
    click.echo(
        f"share of budget {plan.total:.3e}: {plan.share_of(train_total):.4%} "
        f"(budget pays for {result['max_steps']:,} such steps)"
    )


@main.command()
@click.option(
    "--model", default="qwen2.5-0.5b", show_default=True, help="Shape name or config.json."
)
@click.option("--prompt-len", type=_POSITIVE, required=True)
@click.option("--new-tokens", type=_POSITIVE, required=True)
@click.option("--batch", type=_POSITIVE, default=1, show_default=True)
@click.option("--kv-cache/--no-kv-cache", default=True, show_default=True)
@click.option(
    "--cache-len",
    type=_POSITIVE,
    default=None,
    help="Static KV cache of this many slots: every forward attends over all of them.",
)
@click.option(
    "--static-cache",
    is_flag=True,
    help="Static KV cache sized as HF generate sizes it: PROMPT_LEN + NEW_TOKENS - 1 slots.",
)
@click.option("--lora-rank", type=_POSITIVE, default=None)
@click.option("--lm-head-bias/--no-lm-head-bias", default=False, show_default=True)
@click.option("--gqa-as-mha/--no-gqa-as-mha", default=True, show_default=True)
@click.option("--budget", default=str(DEFAULT_BUDGET), callback=_parse_budget)
@click.option("--json", "as_json", is_flag=True)
def generate(
    model: str,
    prompt_len: int,
    new_tokens: int,
    batch: int,
    kv_cache: bool,
    cache_len: int | None,
    static_cache: bool,
    lora_rank: int | None,
    lm_head_bias: bool,
    gqa_as_mha: bool,
    budget: int,
    as_json: bool,
) -> None:
    """FLOPs of generating NEW_TOKENS after a PROMPT_LEN prompt (prefill + decode steps).

    Default: a dynamic KV cache (step i attends to PROMPT_LEN + i positions). With --cache-len
    or --static-cache every forward attends over all slots of a static cache.
    """
    shape = resolve_model(model)
    if static_cache:
        if cache_len is not None:
            raise click.UsageError("give --cache-len or --static-cache, not both")
        cache_len = static_cache_len(prompt_len, new_tokens)
    if cache_len is not None and not kv_cache:
        raise click.UsageError("a static cache (--cache-len/--static-cache) needs --kv-cache")
    try:
        flops = generate_flops(
            shape,
            prompt_len,
            new_tokens,
            batch,
            kv_cache=kv_cache,
            cache_len=cache_len,
            lora_rank=lora_rank,
            lm_head_bias=lm_head_bias,
            gqa_as_mha=gqa_as_mha,
        )
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--cache-len") from err
    share = Budget(budget).share_of(flops)
    if as_json:
        out = {"generate": flops.as_dict(), "cache_len": cache_len, "budget": budget}
        click.echo(json.dumps({**out, "budget_share": share}))
        return
    cache = "none" if not kv_cache else "dynamic" if cache_len is None else f"static, {cache_len}"
    click.echo(
        f"{model}: prompt {prompt_len}, {new_tokens} new tokens, batch {batch}, KV cache {cache}"
    )
    click.echo(_table(flops))
    click.echo(f"share of budget {budget:.3e}: {share:.4%}")


if __name__ == "__main__":
    main()
