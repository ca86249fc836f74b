"""The runtime folder of one service instance: its workers' shared metrics and control record.

Two instances on one machine must not share it: the second would empty the first's metrics
and read its counts. So an instance either gets a folder of its own (the default: created at
start, removed at exit) or is given one (``SERVING_METRICS_DIR``), which it claims with an
exclusive ``flock`` held for its life: an instance never empties a folder another live one
holds, and a crashed instance leaves no stale claim (the kernel drops the lock).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

LOCK_FILE = ".instance.lock"
OURS = (
    "model-control.json",
    ".model-control.json",
    ".probe-",
    ".metrics-unavailable",
    "shadow-flips.",
    ".shadow-flips.",
)
_OWN = "KERAS_SERVING_OWN_RUNTIME_DIR"  # this master's own folder, across a HUP reload


class RuntimeFolderInUse(SystemExit):
    """Another live instance holds the folder."""


class RuntimeFolder:
    """A folder an instance claims, empties, and releases."""

    def __init__(self, path: Path, own: bool) -> None:
        self.path, self.own = Path(path), own
        self._lock_fd: int | None = None

    @classmethod
    def for_instance(cls, given: str) -> RuntimeFolder:
        """The given folder, or this instance's own (the same one again on a reload)."""
        if given:
            return cls(Path(given), own=False)
        path = os.environ.get(_OWN)
        if not path:
            path = tempfile.mkdtemp(prefix="keras-serving-")
            os.environ[_OWN] = path
        return cls(Path(path), own=True)

    def problem(self) -> str | None:
        """Why the folder cannot hold the metrics (cannot be made, written, or has no
        room for a first metrics file), or None."""
        probe = self.path / f".probe-{os.getpid()}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, 1 << 16)  # a metrics file's first size
            finally:
                os.close(fd)
                probe.unlink()
        except OSError as exc:  # (clients may read this: no path in it)
            return f"cannot be written ({exc.strerror or type(exc).__name__})"
        return None

    def claim(self) -> None:
        """Take the folder for this instance and empty it (stale files would be summed)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeFolderInUse(
                f"SERVING_METRICS_DIR {self.path} is in use by another running instance; give "
                "each instance its own (or leave it unset: each gets one)"
            ) from None
        self._lock_fd = fd
        # Only what an instance writes here: a folder given by mistake (a home) loses nothing.
        for child in self.path.iterdir():
            if child.is_file() and (child.suffix == ".db" or child.name.startswith(OURS)):
                child.unlink()

    def release(self) -> None:
        """Drop the claim; remove the folder when it was this instance's own."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self.own:
            shutil.rmtree(self.path, ignore_errors=True)
