"""Load a base model and its tokenizer from one string: `tiny`, a GGUF file, a local folder or a hub id.

Whatever the source, the pair comes back ready for batched forecasting and training: the tokenizer
pads on the left and has pad and eos tokens; the model's config and generation config carry the
same pad/eos ids (so `generate()` does not warn). No machine of this project reaches the model hub,
so a hub id that is not in the local HF cache fails within seconds, naming the offline
alternatives, instead of retrying for minutes; a snapshot that is only partly cached (an
interrupted download) fails naming the snapshot folder and what it lacks.

Pinning a base without copying it (`pin_base`, `load_pinned`): a small JSON-able record that names
exactly what was loaded: a hub id with the commit hash of its snapshot, a local folder with the
sha256 of its config, tokenizer and weight files, or a GGUF file with its size and sha256.
`load_pinned` refuses, with a message naming the folder or file and what changed, a base that is no
longer what was pinned.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lvflops import ModelShape
from lvmodel.device import fix_cpu_arithmetic
from lvmodel.tiny import ensure_tiny_base

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


def _hub_cache() -> Path:
    """The Hugging Face hub cache folder in use ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached_revisions(repo_id: str) -> list[str]:
    """The commit hashes of the snapshots of `repo_id` in the local HF cache (none: [])."""
    folder = _hub_cache() / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def missing_model_files(folder: Path) -> list[str]:
    """What a model folder lacks to be loaded: config.json, the weights (every shard an index
    names), a tokenizer. Broken links (a hub-cache blob that never arrived) count as missing."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    names = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
    index = next((n for n in sorted(names) if n.endswith(".safetensors.index.json")), None)
    if index is not None:
        try:
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            missing.append(f"a readable {index}")
        else:
            missing += [f"weight shard {name}" for name in shards if name not in names]
    elif not any(n.endswith((".safetensors", ".bin")) for n in names):
        missing.append("the weights (model.safetensors)")
    if not names & {"tokenizer.json", "tokenizer.model", "vocab.json"}:
        missing.append("the tokenizer (tokenizer.json)")
    return missing


def _cached_snapshot(repo_id: str, revision: str | None = None) -> tuple[Path | None, list[str]]:
    """`(snapshot folder, what it lacks)` of a hub repo in the local HF cache; `(None, [])` when
    not cached at that revision (default: the cached `main`). Never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception as err:  # not cached, not a valid repo id, or known to be incomplete
        partial = getattr(err, "snapshot_path", None)  # huggingface_hub's IncompleteSnapshotError
        if partial is None:
            return None, []
        # The hub's own listing names every repo file (README, other formats, ...): only what
        # the model needs to load counts here (a download restricted to *.json and
        # *.safetensors is complete enough).
        path = Path(partial)
    return path, missing_model_files(path)


def _download_advice(repo_id: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"Complete the download on a machine that reaches the hub: `hf download {repo_id}{rev}` "
        f"(older huggingface_hub: `huggingface-cli download {repo_id}{rev}`), then copy the cache "
        f"folder {_hub_cache()} here (or point HF_HUB_CACHE at it)"
    )


def _not_cached(repo_id: str, revision: str | None) -> str:
    if revision is None:
        return f"base model {repo_id!r} is not in the local Hugging Face cache"
    cached = _cached_revisions(repo_id)
    return (
        f"base model {repo_id!r} at revision {revision} is not in the local Hugging Face cache "
        f"({_hub_cache()}; cached revisions of it: {', '.join(cached) or 'none'})"
    )


def _partial(repo_id: str, snapshot: Path, missing: list[str]) -> str:
    return (
        f"base model {repo_id!r} is only partly in the local Hugging Face cache: its snapshot "
        f"folder {snapshot} lacks {', '.join(missing)} (an interrupted download leaves this)"
    )


def _probe_hub(
    repo_id: str,
    revision: str | None = None,
    problem: str | None = None,
    advice: str = _ALTERNATIVES,
) -> str:
    """The commit hash of `repo_id` at `revision` on the hub; fails fast (seconds, not minutes of
    retries) when the hub is unreachable or lacks the repo. The error message is `problem`, why
    the hub could not help, then `advice`."""
    from huggingface_hub import model_info

    try:
        info = model_info(repo_id, revision=revision, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as err:
        problem = problem or _not_cached(repo_id, revision)
        raise BaseModelError(
            f"{problem} and the hub could not provide it ({type(err).__name__}: {err}). {advice}"
        ) from err
    return str(info.sha)


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


def make_ready(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
    """Left padding, pad and eos tokens, and the same ids in the model's configs: what
    `load_base` does to every pair, for a model built another way (random weights of a shape)."""
    _finish_tokenizer(tok, model)
    _finish_model(model, tok)


def _from_pretrained(
    source: str | Path,
    model_kwargs: dict[str, Any],
    gguf_file: str | None = None,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    if revision is not None:
        extra["revision"] = revision
    tok = AutoTokenizer.from_pretrained(source, **extra)
    model = AutoModelForCausalLM.from_pretrained(source, **model_kwargs, **extra)
    return model, tok


def _load_hub(
    repo_id: str, model_kwargs: dict[str, Any], revision: str | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A hub id: its complete cached snapshot (at `revision`), else the hub unless offline."""
    snapshot, missing = _cached_snapshot(repo_id, revision)
    if snapshot is not None and not missing:
        try:
            return _from_pretrained(snapshot, model_kwargs)
        except (OSError, ValueError) as err:
            raise BaseModelError(
                f"could not load base model {repo_id!r} from its cached snapshot {snapshot}: "
                f"{err}. {_download_advice(repo_id, revision)}; or {_ALTERNATIVES}"
            ) from err
    if snapshot is not None:
        problem = _partial(repo_id, snapshot, missing)
        advice = f"{_download_advice(repo_id, revision or snapshot.name)}; or {_ALTERNATIVES}"
    else:
        problem = _not_cached(repo_id, revision)
        advice = (
            f"{_download_advice(repo_id, revision)}; or {_ALTERNATIVES}"
            if revision
            else _ALTERNATIVES
        )
    if _offline():
        raise BaseModelError(f"{problem} and HF_HUB_OFFLINE is set. {advice}")
    _probe_hub(repo_id, revision, problem, advice)
    try:
        return _from_pretrained(repo_id, model_kwargs, revision=revision)
    except Exception as err:  # network errors come in many types (httpx, OSError, ...)
        raise BaseModelError(
            f"could not download base model {repo_id!r}: {err}. {_ALTERNATIVES}"
        ) from err


def load_base(
    spec: str = DEFAULT_BASE,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `(model, tokenizer)` for `spec`, in eval mode, on `device`.

    `spec` is one of: `"tiny"` (the pretrained CPU-sized base, built into the cache on first use:
    `lvmodel.tiny.ensure_tiny_base`); a path ending in `.gguf` (weights dequantized on load, needs
    the `gguf` package); a local model folder; or a hub id such as `DEFAULT_BASE`, taken from the
    local HF cache if there, else from the hub (failing fast with `BaseModelError` when offline).
    `revision` (hub ids only: a commit hash, branch or tag) loads exactly that snapshot, else
    fails naming the cached revisions; by default the cached `main`. A cached snapshot that lacks
    config.json, weights or tokenizer (an interrupted download) is a `BaseModelError` naming the
    folder and what it lacks, unless the hub is reachable to complete it.
    `dtype` defaults to float32 on CPU and bfloat16 on CUDA; `device` to CUDA when available;
    `attn_implementation` to `"sdpa"`. The CPU's threading and denormal modes are fixed first
    (`lvmodel.device.fix_cpu_arithmetic`), so that a run computes alike in every process.
    """
    fix_cpu_arithmetic()
    spec = str(spec)
    dtype, dev = _defaults(dtype, device)
    model_kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": attn_implementation or "sdpa",
    }
    path = Path(spec).expanduser()
    if revision is not None and _kind(spec) != "hub":
        raise BaseModelError(
            f"revision {revision!r} was given for base model {spec!r}, which is not a hub id; "
            "a revision selects a snapshot of a hub repository only (drop it for a folder, a "
            ".gguf file or `tiny`)"
        )

    if spec == TINY_SPEC:
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
        model, tok = _load_hub(spec, model_kwargs, revision)

    make_ready(model, tok)
    module: torch.nn.Module = model  # (typed as Module: transformers' own `to` confuses mypy)
    module.to(dev)
    model.eval()
    return model, tok


def _kind(spec: str) -> str:
    """How `load_base` reads `spec`: "tiny", "gguf", "local" (a folder), "path" (none), "hub"."""
    path = Path(spec).expanduser()
    if spec == TINY_SPEC:
        return "tiny"
    if spec.endswith(".gguf"):
        return "gguf"
    if path.is_dir():
        return "local"
    if _looks_like_path(spec) or path.exists():
        return "path"
    return "hub"


# -- pinning a base without copying it -------------------------------------------------------

# The files of a model folder that transformers reads (config, tokenizer, weights): what a
# folder's digest covers. Anything else in the folder (README, checkpoints, logs) may change.
MODEL_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "tokenizer*",
    "vocab.*",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.*",
    "*.tiktoken",
)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, hex (about 0.6 GB/s on one core here)."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_files(folder: str | Path) -> list[Path]:
    """The files of `folder` that `MODEL_FILE_PATTERNS` selects, sorted by name (top level only)."""
    folder = Path(folder)
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and any(fnmatch.fnmatchcase(p.name, pat) for pat in MODEL_FILE_PATTERNS)
        ),
        key=lambda p: p.name,
    )


def _combined_digest(files: dict[str, dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]['size']}\0{files[name]['sha256']}\n".encode())
    return "sha256:" + h.hexdigest()


def folder_fingerprint(folder: str | Path) -> dict[str, Any]:
    """`{"digest", "files"}` of a model folder: per file (`model_files`) its size and sha256, and
    one sha256 over the sorted names, sizes and file hashes (it changes with any byte of them)."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in model_files(folder)
    }
    return {"digest": _combined_digest(files), "files": files}


def pin_base(spec: str) -> dict[str, Any]:
    """A JSON-able record that names exactly the base `spec` loads now, without its weights.

    - a hub id: `{"kind": "hub", "spec": id, "revision": commit}`, the commit of the snapshot
      in the local HF cache (the cached `main`), else the hub's current commit;
    - a local folder: `{"kind": "local", "spec": absolute path, "digest", "files"}`
      (`folder_fingerprint`);
    - a `.gguf` file: `{"kind": "gguf", "spec": absolute path, "size", "sha256"}`.

    `tiny` is not pinned (it is small: bundle its folder). Raises `BaseModelError` for a spec
    `load_base` would refuse (no such path, not a model folder, hub id unknown or unreachable).
    """
    spec = str(spec)
    kind = _kind(spec)
    path = Path(spec).expanduser()
    if kind == "tiny":
        raise BaseModelError("the `tiny` base is not pinned by reference: bundle its folder")
    if kind == "gguf":
        if not path.is_file():
            raise BaseModelError(f"GGUF file not found: {path}. {_ALTERNATIVES}")
        path = path.resolve()
        return {
            "kind": "gguf",
            "spec": str(path),
            "size": path.stat().st_size,
            "sha256": file_sha256(path),
        }
    if kind == "local":
        _check_model_folder(path)
        path = path.resolve()
        return {"kind": "local", "spec": str(path), **folder_fingerprint(path)}
    if kind == "path":
        raise BaseModelError(f"no model folder or file at {path}. {_ALTERNATIVES}")
    snapshot, missing = _cached_snapshot(spec)
    if snapshot is not None and not missing:
        return {"kind": "hub", "spec": spec, "revision": snapshot.name}
    if snapshot is not None:
        problem = _partial(spec, snapshot, missing)
        advice = f"{_download_advice(spec, snapshot.name)}; or {_ALTERNATIVES}"
    else:
        problem, advice = _not_cached(spec, None), _ALTERNATIVES
    if _offline():
        raise BaseModelError(f"{problem} and HF_HUB_OFFLINE is set. {advice}")
    return {"kind": "hub", "spec": spec, "revision": _probe_hub(spec, None, problem, advice)}


def _field(ref: dict[str, Any], name: str, types: type | tuple[type, ...], where: str) -> Any:
    value = ref.get(name)
    if not isinstance(value, types) or isinstance(value, bool):
        raise BaseModelError(
            f"{where}: field {name!r} is {value!r}; expected "
            f"{' or '.join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))}."
            " The record is damaged: log the model again"
        )
    return value


def _folder_changes(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    changes = []
    for name in sorted(set(recorded) | set(now)):
        old, new = recorded.get(name), now.get(name)
        if new is None:
            changes.append(f"{name} is missing")
        elif old is None:
            changes.append(f"{name} was added")
        elif old.get("size") != new["size"]:
            changes.append(f"{name} changed size ({old.get('size')} -> {new['size']} bytes)")
        elif old.get("sha256") != new["sha256"]:
            changes.append(f"{name} changed content (same size, other sha256)")
    return changes


def check_pinned(ref: dict[str, Any], origin: str = "the base reference") -> None:
    """Raise `BaseModelError` unless the local folder or GGUF file `ref` pins is still there and
    unchanged (hub snapshots are content-addressed: `load_pinned` just asks for the revision)."""
    where = f"{origin} (base kind {ref.get('kind')!r})"
    kind = ref.get("kind")
    spec = _field(ref, "spec", str, where)
    redo = (
        "The LoRA adapter was trained on exactly those files: put them back at that path, or "
        "register a new version from a run on a base that exists on this machine"
    )
    if kind == "local":
        recorded = _field(ref, "files", dict, where)
        digest = _field(ref, "digest", str, where)
        folder = Path(spec)
        if not folder.is_dir():
            raise BaseModelError(
                f"base model folder {folder} (pinned in {origin}, not copied into it) does not "
                f"exist on this machine. {redo}."
            )
        now = folder_fingerprint(folder)
        if now["digest"] != digest:
            changes = _folder_changes(recorded, now["files"]) or ["the digest differs"]
            raise BaseModelError(
                f"base model folder {folder} (pinned in {origin}) has changed since it was pinned: "
                f"{'; '.join(changes)} (digest {digest}, now {now['digest']}). {redo}."
            )
    elif kind == "gguf":
        file = Path(spec)
        if not file.is_file():
            raise BaseModelError(
                f"GGUF file {file} (pinned in {origin}, not copied into it) does not exist on "
                f"this machine. {redo}."
            )
        size = file.stat().st_size
        if "size" in ref and size != ref["size"]:
            raise BaseModelError(
                f"GGUF file {file} (pinned in {origin}) has changed since it was pinned: size "
                f"{ref['size']} -> {size} bytes. {redo}."
            )
        if "sha256" in ref and file_sha256(file) != ref["sha256"]:
            raise BaseModelError(
                f"GGUF file {file} (pinned in {origin}) has changed since it was pinned: same "
                f"size, other sha256 (pinned {ref['sha256']}). {redo}."
            )
    elif kind != "hub":
        raise BaseModelError(
            f"{origin}: field 'kind' is {kind!r}; expected 'hub', 'local' or 'gguf'. The record "
            "is damaged: log the model again"
        )


def load_pinned(
    ref: dict[str, Any],
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    origin: str = "the base reference",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`load_base` for a record of `pin_base`: exactly the pinned revision, folder or file.

    `origin` names the record in error messages (the file it was read from). Records without a
    revision (hub) or a sha256/size (GGUF) load what is there now.
    """
    check_pinned(ref, origin)
    revision = ref.get("revision") if ref.get("kind") == "hub" else None
    if revision is not None:
        revision = _field(ref, "revision", str, f"{origin} (base kind 'hub')")
    return load_base(
        ref["spec"],
        dtype=dtype,
        device=device,
        attn_implementation=attn_implementation,
        revision=revision,
    )


def base_config(spec: str, revision: str | None = None) -> dict[str, Any]:
    """The config of the base `spec` without loading its weights (what a FLOPs plan needs).

    The same specs and errors as `load_base`: `tiny`, a `.gguf` file (read from its header in
    a fraction of a second, `lvmodel.gguf_header`), a model folder, or a hub id (its cached
    snapshot's config.json, else the hub's unless offline).
    """
    spec = str(spec)
    path = Path(spec).expanduser()
    kind = _kind(spec)
    if kind == "tiny":
        path = ensure_tiny_base()
    elif kind == "gguf":
        from lvmodel.gguf_header import GGUFHeaderError, gguf_hf_config

        if not path.is_file():
            raise BaseModelError(f"GGUF file not found: {path}. {_ALTERNATIVES}")
        try:
            return gguf_hf_config(path)
        except (GGUFHeaderError, OSError, ValueError, struct.error) as err:  # struct: truncated
            raise BaseModelError(
                f"could not read the header of GGUF file {path}: {err}. Check that the file is a "
                f"complete Qwen2 GGUF model. {_ALTERNATIVES}"
            ) from err
    elif kind == "local":
        _check_model_folder(path)
    elif kind == "path":
        raise BaseModelError(f"no model folder or file at {path}. {_ALTERNATIVES}")
    else:
        snapshot, missing = _cached_snapshot(spec, revision)
        if snapshot is None or missing:
            # Not (completely) cached: `load_base` explains or fetches it; only the config is
            # needed here, and transformers fetches just that file.
            from transformers import AutoConfig

            problem = _partial(spec, snapshot, missing) if snapshot else _not_cached(spec, revision)
            if _offline():
                raise BaseModelError(f"{problem} and HF_HUB_OFFLINE is set. {_ALTERNATIVES}")
            _probe_hub(spec, revision, problem)
            try:
                config = AutoConfig.from_pretrained(spec, revision=revision)
            except Exception as err:  # network errors come in many types
                raise BaseModelError(
                    f"could not read the config of base model {spec!r}: {err}. {_ALTERNATIVES}"
                ) from err
            return dict(config.to_dict())
        path = snapshot
    try:
        return dict(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError) as err:
        raise BaseModelError(f"could not read {path / 'config.json'}: {err}") from err


def base_shape(spec: str, revision: str | None = None) -> ModelShape:
    """The :class:`lvflops.ModelShape` of the base `spec`, from its config alone (`base_config`)."""
    config = base_config(spec, revision)
    try:
        return ModelShape.from_hf_config(config)
    except (KeyError, TypeError, ValueError) as err:
        raise BaseModelError(
            f"base model {spec!r} has a config lvflops cannot count ({err}): a Qwen2-style "
            f"decoder is expected. {_ALTERNATIVES}"
        ) from err


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
