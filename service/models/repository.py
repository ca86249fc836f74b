"""What the model repository holds right now, cheaply: names, versions, file fingerprints.

A scan stats files and reads nothing else, so it can run every second: a version's
fingerprint is the (size, modification time, inode) of its ``metadata.json`` and
``model.onnx``; whether a changed fingerprint means changed *content* is decided by sha256
only when it changes (:func:`content_digest`). Training and import publish a version by
renaming a finished folder into place, so a scan sees a version whole or not at all; a
copy in progress shows up with a fingerprint that keeps changing, and is retried.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from service.contract.metadata import METADATA_FILE, MODEL_FILE, version_number

SERVING_FILE = "serving.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # what a model folder may be called

Fingerprint = tuple[tuple[int, int, int] | None, ...]


@dataclass(frozen=True)
class ModelFiles:
    """One model folder: its version folders and the fingerprint of its ``serving.json``."""

    path: Path
    versions: dict[int, Fingerprint]
    config: tuple | None  # serving.json's size, time, inode and sha256; None: no file
    ignored: tuple[str, ...] = ()  # folders that look like versions but name none ("007")
    error: str | None = None  # the folder could not be read (keep what it served)


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _content(path: Path) -> tuple | None:
    """A small file's (size, mtime, inode, sha256): a rewrite of the same size within one
    timestamp tick still shows."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    stamp = _stat(path)
    return (*(stamp or (len(data), 0, 0)), hashlib.sha256(data).hexdigest())


def fingerprint(version_dir: Path) -> Fingerprint:
    """(size, mtime, inode) of a version's two files (None for a missing one)."""
    return (_stat(version_dir / METADATA_FILE), _stat(version_dir / MODEL_FILE))


def scan_model(model_dir: Path) -> ModelFiles:
    """One model folder's versions (folders named by a version number) and config."""
    versions: dict[int, Fingerprint] = {}
    ignored = []
    try:
        children = list(os.scandir(model_dir))
    except OSError as exc:
        return ModelFiles(
            Path(model_dir), {}, None, error=f"its folder cannot be read: {exc.strerror or exc}"
        )
    for child in children:
        number = version_number(child.name)
        if number is not None and child.is_dir():
            versions[number] = fingerprint(Path(child.path))
        elif child.name.isdigit():
            ignored.append(child.name)
    return ModelFiles(
        Path(model_dir),
        dict(sorted(versions.items())),
        _content(Path(model_dir) / SERVING_FILE),
        tuple(sorted(ignored)),
    )


def names(root: Path) -> list[str]:
    """The model folders under ``root``, sorted (hidden and oddly named folders are skipped:
    ``.staging`` folders are where versions are written before they are published)."""
    return sorted(c.name for c in os.scandir(root) if c.is_dir() and NAME.fullmatch(c.name))


def scan(root: Path) -> dict[str, ModelFiles]:
    """Every model folder under ``root`` (see :func:`names`)."""
    return {name: scan_model(root / name) for name in names(root)}


def content_digest(version_dir: Path) -> str:
    """sha256 over a version's two files: equal digests, same model (a touched file or a
    copy of the same bytes is no change)."""
    digest = hashlib.sha256()
    for name in (METADATA_FILE, MODEL_FILE):
        with open(version_dir / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
