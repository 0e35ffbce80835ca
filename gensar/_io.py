"""Saving files that cannot be half-written or silently mixed.

* :func:`atomic_write`: every file is written under a temporary name in its
  own directory and renamed over the destination with ``os.replace`` (atomic on
  POSIX and Windows within one file system), so a crash or Ctrl-C during a save
  leaves the old file or the new one, never a torn one.
* :func:`write_manifest` / :func:`verify_manifest`: a directory format lists
  every file it wrote in ``manifest.json`` with its size and sha256, plus the
  format name and version. The manifest is written last, so a save interrupted
  half-way leaves the previous manifest, whose checksums then no longer match
  the files that were replaced: loading names the first such file instead of
  mixing files of two saves.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

MANIFEST = "manifest.json"


def save_dir(path, who: str) -> Path:
    """The directory a save writes (created if missing): path checked to be a str or
    os.PathLike that is not an existing file. `who` names the writer in errors."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise FileExistsError(f"{d} exists and is not a directory; {who} writes a directory")
    d.mkdir(parents=True, exist_ok=True)
    return d


def atomic_write(path, write: Callable[[Path], None]) -> None:
    """Calls write(tmp) to create a temporary file next to `path`, then renames
    it over `path`. The temporary file is removed if write fails."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; cannot write a file there")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory, files: Iterable[str], fmt: str, version: int, **extra) -> None:
    """Writes directory/manifest.json listing `files` (paths relative to
    directory, "/"-separated) with their size and sha256."""
    d = Path(directory)
    entries = {}
    for rel in sorted(files):
        p = d / rel
        entries[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    doc = {"format": fmt, "format_version": int(version), **extra, "files": entries}
    atomic_write_text(d / MANIFEST, json.dumps(doc, indent=1))


def verify_manifest(directory, fmt: str, max_version: int, required: Iterable[str]) -> dict | None:
    """Checks directory against its manifest.json; returns the manifest, or None
    if the directory has none (a save from before manifests existed).

    Raises FileNotFoundError for a listed file that is missing, ValueError naming
    the file whose size or sha256 differs, a required file the manifest does not
    list, an unreadable manifest, another format or a newer version."""
    d = Path(directory)
    mpath = d / MANIFEST
    if not mpath.exists():
        return None
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
        files = doc["files"]
        version = int(doc["format_version"])
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{mpath} is corrupt ({type(exc).__name__}: {exc}); the directory cannot be "
                         f"verified") from None
    if doc.get("format") != fmt:
        raise ValueError(f"{mpath} describes a {doc.get('format')!r} directory, not {fmt!r}")
    if version > max_version:
        raise ValueError(f"{d} was written in format version {version}; this gensar reads versions up to "
                         f"{max_version} (upgrade gensar)")
    unlisted = [f for f in required if f not in files]
    if unlisted:
        raise ValueError(f"{mpath} does not list {unlisted[0]}; the directory is incomplete or was edited")
    for rel, meta in sorted(files.items()):
        p = d / rel
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing (listed in {mpath})")
        size = p.stat().st_size
        if size != meta.get("size"):
            raise ValueError(f"{p} has {size} bytes but {meta.get('size')} were saved: the file is truncated "
                             f"or was replaced after saving")
        if sha256_file(p) != meta.get("sha256"):
            raise ValueError(f"{p} does not match the checksum saved in {MANIFEST}: the file was changed or "
                             f"corrupted after saving")
    return doc
