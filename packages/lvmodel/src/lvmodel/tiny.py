"""The `tiny` base: a CPU-sized Qwen2 pretrained from scratch on generic synthetic series.

Every code path of the project (LoRA on q/v, GQA attention, tied embeddings, batched left-padded
generation, FLOPs metering) runs unchanged on it, and it trains in minutes on 2 CPU cores. It is
*pretrained*, not random: like a real LLM it already knows the LLMTime format and continues series
sensibly zero-shot, so "zero-shot vs LoRA" comparisons mean something. It never sees Lotka-Volterra
data (see `lvmodel.synthetic` for the corpus).

The vocabulary is the tiny tokenizer's (`lvmodel.tiny_tokenizer`: ids of printable ASCII equal
Qwen2's `ord(c) - 33`), padded to 128 rows like Qwen pads its 151,665 tokens to 151,936.

`ensure_tiny_base()` builds it once into a cache folder keyed by a hash of the recipe (config,
pretraining settings, seed, `TINY_VERSION`) and reuses it afterwards; builds go to a temporary
folder renamed into place (a killed build leaves no broken cache) under a lock file (concurrent
builders wait for one another).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from lvmodel.device import flush_denormals
from lvmodel.synthetic import synthetic_text
from lvmodel.tiny_tokenizer import VOCAB_SIZE, build_tiny_tokenizer

log = logging.getLogger(__name__)

TINY_VERSION = (
    "4"  # bump when the recipe changes in a way the hashed settings miss (3: denormals flushed;
    # 4: on every worker thread, whatever ran first: a base built by 3 may differ by process)
)
CACHE_ENV = "LV_CACHE_DIR"
PRETRAIN_FILE = "pretrain.json"
PADDED_VOCAB = 128


def tiny_config() -> Qwen2Config:
    """Qwen2 shape in miniature: GQA (4 query / 2 KV heads), SwiGLU, RMSNorm, RoPE, tied embeddings."""
    return Qwen2Config(
        vocab_size=PADDED_VOCAB,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        hidden_act="silu",
        initializer_range=0.02,
        use_sliding_window=False,
        bos_token_id=None,
        eos_token_id=VOCAB_SIZE - 2,  # <|im_end|> = 95
        pad_token_id=VOCAB_SIZE - 3,  # <|endoftext|> = 94
    )


@dataclass(frozen=True)
class TinyPretrainSettings:
    """How the tiny base is pretrained. Every field is part of the cache key."""

    steps: int = 750
    """Optimizer steps (the cosine schedule spans them)."""
    seq_lens: tuple[int, ...] = (256, 512, 768)
    """Sequence lengths in tokens, one drawn per step: short and long contexts (up to ~76 steps)."""
    batch_sizes: tuple[int, ...] = (16, 8, 5)
    """Batch size for each entry of `seq_lens` (about 4k tokens per step)."""
    lr: float = 6e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    threads: int = 2
    """torch CPU threads during the build (fixed, so the same seed gives the same weights)."""


def _tokens(text: str, length: int) -> np.ndarray:
    # The tiny tokenizer maps printable ASCII c to ord(c) - 33; doing it with numpy is ~100x faster.
    ids = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - 33
    if len(ids) < length:
        raise ValueError(f"synthetic text too short: {len(ids)} < {length} tokens")
    return ids[:length]


def _batches(settings: TinyPretrainSettings, seed: int) -> Iterator[torch.Tensor]:
    rng = np.random.default_rng(seed)
    while True:
        k = int(rng.integers(len(settings.seq_lens)))
        length, batch = settings.seq_lens[k], settings.batch_sizes[k]
        n_steps = length // 10 + 4  # every step takes at least 10 characters
        rows = [_tokens(synthetic_text(rng, n_steps), length) for _ in range(batch)]
        yield torch.from_numpy(np.stack(rows))


def _lr_at(step: int, s: TinyPretrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    frac = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * cos)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """The build's CPU: `n` torch threads (which also fixes MKL's threading, as
    `lvmodel.device.fix_cpu_arithmetic` does), denormals flushed (`flush_denormals`)."""
    flush_denormals()
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def random_tiny(seed: int = 0) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """The tiny architecture with random weights (fast plumbing tests) and the tiny tokenizer."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_config())
    tok = build_tiny_tokenizer()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval(), tok


def build_tiny_base(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    max_seconds: float | None = None,
    steps: int | None = None,
    settings: TinyPretrainSettings | None = None,
    progress: bool = True,
) -> Path:
    """Pretrain the tiny base from scratch and save it (model, tokenizer, `pretrain.json`) to `out_dir`.

    Deterministic by `seed` on CPU (same weights for the same seed, settings and torch build).
    `steps` overrides `settings.steps`. `max_seconds` is a safety cap: past it training stops early
    (recorded as `stopped_early` in `pretrain.json`; the result is then no longer reproducible).
    The folder appears atomically: written beside `out_dir` and renamed into place.
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another folder")
    s = settings or TinyPretrainSettings()
    if steps is not None:
        s = dataclasses.replace(s, steps=steps)
    out.parent.mkdir(parents=True, exist_ok=True)

    with _torch_threads(s.threads):
        torch.manual_seed(seed)
        config = tiny_config()
        model = Qwen2ForCausalLM(config)
        model.train()
        opt = _optimizer(model, s)
        t0, c0 = time.perf_counter(), time.process_time()
        tokens_seen, losses, history, stopped_early = 0, [], [], False
        batches = _batches(s, seed)
        bar = tqdm(range(s.steps), desc="pretraining tiny base", disable=not progress)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, s)
            ids = next(batches)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens_seen += ids.numel()
            losses.append(loss.item())
            if step % 10 == 0 or step == s.steps - 1:
                history.append((step, round(losses[-1], 4)))
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                stopped_early = step < s.steps - 1
                if stopped_early:
                    log.warning(
                        "tiny base: stopped at step %d of %d (max_seconds)", step + 1, s.steps
                    )
                break
        bar.close()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    model.eval()
    tok = build_tiny_tokenizer()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    info = {
        "version": TINY_VERSION,
        "seed": seed,
        "settings": dataclasses.asdict(s),
        "steps_done": len(losses),
        "stopped_early": stopped_early,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),  # / threads = wall time on an otherwise idle machine
        "tokens_seen": tokens_seen,
        "n_params": sum(p.numel() for p in model.parameters()),
        "loss_history": history,
        "torch": torch.__version__,
    }
    _save_atomically(model, tok, info, out)
    return out


def _optimizer(model: Qwen2ForCausalLM, s: TinyPretrainSettings) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on norms and biases)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": s.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=s.lr,
        betas=s.betas,
    )


def _save_atomically(
    model: Qwen2ForCausalLM, tok: PreTrainedTokenizerFast, info: dict[str, Any], out: Path
) -> None:
    """Model, tokenizer and `pretrain.json`, written beside `out` and renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / PRETRAIN_FILE).write_text(json.dumps(info, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """`cache_dir`, else $LV_CACHE_DIR, else ~/.cache/lv-forecast: the tiny base, the rates."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "lv-forecast"


def tiny_base_dir(
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    settings: TinyPretrainSettings | None = None,
) -> Path:
    """Where the tiny base for this recipe lives: `<cache>/tiny-base-<hash of recipe>`.

    `<cache>` is `cache_dir`, else `$LV_CACHE_DIR`, else `~/.cache/lv-forecast`. The hash covers
    the model config, the pretraining settings, the seed and `TINY_VERSION`.
    """
    s = settings or TinyPretrainSettings()
    recipe = {
        "version": TINY_VERSION,
        "seed": seed,
        "config": tiny_config().to_diff_dict(),
        "settings": dataclasses.asdict(s),
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()
    return cache_root(cache_dir) / f"tiny-base-{key[:12]}"


def ensure_tiny_base(
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    settings: TinyPretrainSettings | None = None,
    progress: bool = True,
) -> Path:
    """The tiny base's folder, pretraining it first if the cache lacks it (a few minutes, once)."""
    path = tiny_base_dir(cache_dir, seed, settings)
    if (path / PRETRAIN_FILE).exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building it? wait, then reuse its result
        try:
            if (path / PRETRAIN_FILE).exists():
                return path
            if path.exists():  # not ours to explain: some stray folder without the marker file
                shutil.rmtree(path)
            log.warning("lvmodel: pretraining the tiny base into %s (a few minutes, once)", path)
            build_tiny_base(path, seed=seed, settings=settings, progress=progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path
