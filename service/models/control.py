"""Model-control decisions (the load/unload API), shared by every worker of one instance.

gunicorn's workers are separate processes: the worker that answers ``POST .../unload``
records the decision here, and every worker applies it at its next check (a second at
most), including a worker that starts later. Under gunicorn the record is a JSON file in
the instance's own runtime folder (the Prometheus multiprocess folder, emptied when the
instance starts); a single process keeps it in memory. Writers take an exclusive
``flock`` and replace the file atomically, so readers never see half a record.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_NAME = "model-control.json"

State = dict[str, Any]  # {"initialized": bool, "models": {name: {"action", "versions"}}}


def _empty() -> State:
    return {"initialized": False, "models": {}}


class ControlStore:
    """The instance's model-control record: in a file shared by workers, or in memory."""

    def __init__(self, folder: Path | None = None) -> None:
        self.path = Path(folder) / FILE_NAME if folder else None
        self._memory: State = _empty()
        self._lock = threading.Lock()
        self._cache: tuple[Any, State] | None = None

    @property
    def shared(self) -> bool:
        """Other processes read and write it too."""
        return self.path is not None

    def read(self) -> State:
        """The current record (re-read only when the file changed)."""
        if self.path is None:
            return json.loads(json.dumps(self._memory))
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return _empty()
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._load())
        return json.loads(json.dumps(self._cache[1]))

    def update(self, change: Callable[[State], None]) -> State:
        """Apply ``change`` to the record under the writers' lock and save it."""
        with self._exclusive():
            state = self._load() if self.path else self._memory
            change(state)
            if self.path:
                temporary = self.path.with_name(f".{FILE_NAME}.{os.getpid()}")
                temporary.write_text(json.dumps(state, sort_keys=True))
                os.replace(temporary, self.path)
            return json.loads(json.dumps(state))

    def _load(self) -> State:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return _empty()
        except (OSError, ValueError):
            return _empty()  # unreadable: start over rather than stop every worker
        if not isinstance(state, dict) or not isinstance(state.get("models"), dict):
            return _empty()
        return state

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            if self.path is None:
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(f".{FILE_NAME}.lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
