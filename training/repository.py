"""Writing versions into the model repository: the next number, never overwriting."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.contract import metadata as contract
from training.errors import Refused


class RepositoryError(Refused, RuntimeError):
    """A version could not be written."""


NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def model_name(given: str | None, source: str) -> str:
    """The name the user gave (refused unless valid), else one made from a file or folder
    name: lower case, other characters as '-'."""
    if given:
        if not NAME.fullmatch(given):
            raise RepositoryError(f"{given!r} is not a valid model name (a-z, 0-9, '_', '.', '-')")
        return given
    name = re.sub(r"[^a-z0-9_.-]+", "-", source.lower()).strip("-.")[:64]
    return name if NAME.fullmatch(name) else "model"


def next_version(repository: Path, name: str) -> int:
    """One more than the highest version present (1 for a new model)."""
    present = contract.versions(repository, name)
    return present[-1] + 1 if present else 1


@contextmanager
def staged_version(repository: Path, name: str) -> Iterator[tuple[Path, int]]:
    """Yield a private staging folder and its version; publish it atomically on success.

    The folder is renamed to ``<repo>/<name>/<version>`` only when the block succeeds, so a
    failed export leaves nothing behind and a reader never sees a half-written version.
    An existing version is never replaced: ``os.rename`` refuses a non-empty target.
    """
    model_dir = Path(repository) / name
    created = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(repository, name)
    staging = model_dir / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        yield staging, version
        final = model_dir / str(version)
        if final.exists():
            raise RepositoryError(f"{final} appeared while training; not overwriting it")
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
        if created and not any(model_dir.iterdir()):
            model_dir.rmdir()  # a failed first version leaves no empty model folder
