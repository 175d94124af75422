"""Load a base model and its tokenizer from one string: `tiny`, a GGUF file, a local folder or a hub id.

Whatever the source, the pair comes back ready for batched forecasting and training: the tokenizer
pads on the left and has pad and eos tokens; the model's config and generation config carry the
same pad/eos ids (so `generate()` does not warn). No machine of this project reaches the model hub,
so a hub id that is not in the local HF cache fails within seconds, naming the offline
alternatives, instead of retrying for minutes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

log = logging.getLogger(__name__)

DEFAULT_BASE = "Qwen/Qwen2.5-0.5B-Instruct"
TINY_SPEC = "tiny"
HUB_PROBE_TIMEOUT_S = 5.0
QWEN_PAD_TOKEN = "<|endoftext|>"

_ALTERNATIVES = (
    "Use instead: a local Hugging Face model folder (config.json + weights + tokenizer files); "
    "a .gguf file (`../shared/tools/qwen-gguf [DIR]` assembles a real Qwen2.5 0.5B GGUF offline "
    "and prints its path); or `tiny` (a CPU-sized Qwen2 pretrained on synthetic series, built "
    "locally in a few minutes)."
)


class BaseModelError(RuntimeError):
    """A base-model spec that cannot be resolved or loaded; the message names the alternatives."""


def _defaults(
    dtype: torch.dtype | None, device: str | torch.device | None
) -> tuple[torch.dtype, torch.device]:
    dev = torch.device(device) if device is not None else None
    if dev is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dtype, dev


def _looks_like_path(spec: str) -> bool:
    """A filesystem path rather than a hub id (`owner/name` has exactly one slash, no prefix)."""
    return (
        spec.startswith((os.sep, ".", "~"))
        or spec.endswith(".gguf")
        or spec.count("/") >= 2
        or (os.sep != "/" and os.sep in spec)
        or (os.altsep is not None and os.altsep != "/" and os.altsep in spec)
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub repo in the HF cache, or None; never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id
        return None


def _probe_hub(repo_id: str) -> None:
    """Fail fast (seconds, not minutes of retries) when the hub is unreachable or lacks the repo."""
    from huggingface_hub import model_info

    try:
        model_info(repo_id, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as err:
        raise BaseModelError(
            f"base model {repo_id!r} is not in the local Hugging Face cache and the hub could not "
            f"provide it ({type(err).__name__}: {err}). {_ALTERNATIVES}"
        ) from err


def _check_model_folder(path: Path) -> None:
    """A local folder must look like a saved Hugging Face model before transformers gets it."""
    names = sorted(p.name for p in path.iterdir())
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "nothing"
    if "config.json" not in names:
        raise BaseModelError(
            f"folder {path} is not a Hugging Face model folder: no config.json (it holds "
            f"{shown}). {_ALTERNATIVES}"
        )
    if not any(n.endswith((".safetensors", ".bin", ".safetensors.index.json")) for n in names):
        raise BaseModelError(
            f"folder {path} has a config.json but no weights (*.safetensors) (it holds "
            f"{shown}). {_ALTERNATIVES}"
        )


def _finish_tokenizer(tok: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    tok.padding_side = "left"  # batched generation continues every row from its last real token
    if tok.eos_token is None:
        eos = model.generation_config.eos_token_id or model.config.eos_token_id
        if isinstance(eos, list):
            eos = eos[0]
        if eos is None:
            raise BaseModelError("the tokenizer has no eos token and the model config names none")
        tok.eos_token = tok.convert_ids_to_tokens(int(eos))
    if tok.pad_token is None:
        tok.pad_token = QWEN_PAD_TOKEN if QWEN_PAD_TOKEN in tok.get_vocab() else tok.eos_token


def _finish_model(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
    model.config.pad_token_id = tok.pad_token_id
    gen = model.generation_config
    gen.pad_token_id = tok.pad_token_id
    if gen.eos_token_id is None:
        gen.eos_token_id = tok.eos_token_id
    if model.config.eos_token_id is None:
        model.config.eos_token_id = tok.eos_token_id


def _from_pretrained(
    source: str | Path, model_kwargs: dict[str, Any], gguf_file: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(source, **extra)
    model = AutoModelForCausalLM.from_pretrained(source, **model_kwargs, **extra)
    return model, tok


def load_base(
    spec: str = DEFAULT_BASE,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `(model, tokenizer)` for `spec`, in eval mode, on `device`.

    `spec` is one of: `"tiny"` (the pretrained CPU-sized base, built into the cache on first use:
    `lvmodel.tiny.ensure_tiny_base`); a path ending in `.gguf` (weights dequantized on load, needs
    the `gguf` package); a local model folder; or a hub id such as `DEFAULT_BASE`, taken from the
    local HF cache if there, else from the hub (failing fast with `BaseModelError` when offline).
    `dtype` defaults to float32 on CPU and bfloat16 on CUDA; `device` to CUDA when available;
    `attn_implementation` to `"sdpa"`.
    """
    spec = str(spec)
    dtype, dev = _defaults(dtype, device)
    model_kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": attn_implementation or "sdpa",
    }
    path = Path(spec).expanduser()

    if spec == TINY_SPEC:
        from lvmodel.tiny import ensure_tiny_base

        model, tok = _from_pretrained(ensure_tiny_base(), model_kwargs)
    elif spec.endswith(".gguf"):
        if not path.is_file():
            raise BaseModelError(f"GGUF file not found: {path}. {_ALTERNATIVES}")
        if importlib.util.find_spec("gguf") is None:
            raise BaseModelError(
                f"loading {path} needs the `gguf` package: pip install 'lvmodel[gguf]' "
                "(or pip install gguf)"
            )
        try:
            model, tok = _from_pretrained(path.parent, model_kwargs, gguf_file=path.name)
        except (OSError, ValueError, KeyError) as err:
            raise BaseModelError(
                f"could not load GGUF file {path}: {str(err).rstrip('.')}. Check that the file is "
                f"a complete GGUF model (a partial download or another format fails here). "
                f"{_ALTERNATIVES}"
            ) from err
    elif path.is_dir():
        _check_model_folder(path)
        try:
            model, tok = _from_pretrained(path, model_kwargs)
        except (OSError, ValueError) as err:
            raise BaseModelError(
                f"could not load a model from folder {path}: {err}. {_ALTERNATIVES}"
            ) from err
    elif _looks_like_path(spec) or path.exists():
        raise BaseModelError(f"no model folder or file at {path}. {_ALTERNATIVES}")
    else:
        snapshot = _cached_snapshot(spec)
        if snapshot is not None:
            model, tok = _from_pretrained(snapshot, model_kwargs)
        elif _offline():
            raise BaseModelError(
                f"base model {spec!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                f"is set. {_ALTERNATIVES}"
            )
        else:
            _probe_hub(spec)
            try:
                model, tok = _from_pretrained(spec, model_kwargs)
            except Exception as err:  # network errors come in many types (httpx, OSError, ...)
                raise BaseModelError(
                    f"could not download base model {spec!r}: {err}. {_ALTERNATIVES}"
                ) from err

    _finish_tokenizer(tok, model)
    _finish_model(model, tok)
    module: torch.nn.Module = model  # (typed as Module: transformers' own `to` confuses mypy)
    module.to(dev)
    model.eval()
    return model, tok


def describe_base(model: PreTrainedModel) -> dict[str, Any]:
    """A flat summary for logging: parameter count and the config fields that set the FLOPs."""
    cfg = model.config
    return {
        "model_type": getattr(cfg, "model_type", None),
        "n_params": sum(p.numel() for p in model.parameters()),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
        "num_attention_heads": getattr(cfg, "num_attention_heads", None),
        "num_key_value_heads": getattr(cfg, "num_key_value_heads", None),
        "intermediate_size": getattr(cfg, "intermediate_size", None),
        "vocab_size": getattr(cfg, "vocab_size", None),
        "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", None),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
