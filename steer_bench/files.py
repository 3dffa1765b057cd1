"""Atomic file writes: a reader (or Snakemake) never sees a half-written artefact.

Everything is written to a temporary sibling first and moved into place with ``os.replace``,
which is atomic on POSIX within one filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success move it into place, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; artefacts get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` (old contents removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            # Move the old directory aside first so that a crash never leaves ``path`` missing *and* tmp unmoved.
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def recover_atomic_dir(path: str | os.PathLike[str]) -> None:
    """Finish what a process killed inside :func:`atomic_dir` left: if it died between moving the old
    directory aside and moving the new one in, the old one (complete) is put back; unfinished temporaries
    are removed. Call before reading ``path``."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir():
        if path.exists():
            shutil.rmtree(old)  # the new directory is in place: only the clean-up was cut short
        else:
            os.replace(old, path)
    remove_temporaries(path.parent, name=path.name)


def remove_temporaries(folder: str | os.PathLike[str], *, name: str = "*") -> list[Path]:
    """Delete the temporaries that killed writers of ``name`` (default: any file) left in ``folder``
    (``.<name>.<random>.tmp``, see :func:`atomic_path` / :func:`atomic_dir`); return them.

    Only for folders one job owns (a report's or an evaluation's output): a live writer's temporary would go too.
    """
    folder = Path(folder)
    stale = sorted(folder.glob(f".{name}.*.tmp")) if folder.is_dir() else []
    for tmp in stale:
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return stale


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append one line and flush it to disk (used for logs that grow during a run, e.g. metrics.jsonl)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path) as f:
        return json.load(f)
