"""A fake Hugging Face hub cache on disk, for tests that must not (and here cannot) reach the hub.

The layout is the hub's own (`huggingface_hub` reads it as it reads a real download):

    CACHE/models--OWNER--NAME/blobs/<sha256 of the file>
    CACHE/models--OWNER--NAME/snapshots/<commit>/<file> -> ../../blobs/<sha256>   (relative links)
    CACHE/models--OWNER--NAME/refs/main                  (the commit hash, no newline)
    CACHE/models--OWNER--NAME/trees/<commit>.json         (optional: the hub's file listing)
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest


def use_hf_cache(monkeypatch: pytest.MonkeyPatch, cache: Path, offline: bool = True) -> Path:
    """Point the hub cache at `cache` for this test (environment and huggingface_hub's constant,
    which it reads once at import) and, by default, set HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def commit_hash(label: str) -> str:
    """A 40-hex-digit commit hash made from `label` (the hub's commit ids look like this)."""
    return hashlib.sha1(label.encode()).hexdigest()


def repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def add_snapshot(
    cache: Path,
    repo_id: str,
    source: Path,
    commit: str,
    *,
    skip: tuple[str, ...] = (),
    main: bool = True,
    listing: bool = False,
) -> Path:
    """Put the files of the model folder `source` (less `skip`) into the cache as snapshot
    `commit` of `repo_id`; `main` points refs/main at it; `listing` also writes the hub's tree
    listing of the commit (every file of `source`, skipped ones too), as a real download does.
    Returns the snapshot folder."""
    repo = repo_folder(cache, repo_id)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    files = sorted(p for p in source.iterdir() if p.is_file())
    for file in files:
        if file.name in skip:
            continue
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    if listing:
        from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

        entries = {
            f.name: TreeCacheEntry(size=f.stat().st_size, blob_id=commit_hash(f.name))
            for f in files
        }
        write_tree_cache(str(repo), commit, entries)
    return snapshot
