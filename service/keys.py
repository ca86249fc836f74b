"""API keys: who may call the service, and for what.

``SERVING_API_KEYS_FILE`` names a file with one key per line,
``<id>:<sha256 hex of the key>:<scope>[,<scope>...]`` (``#`` starts a comment). The file
holds digests only: the service hashes the key a request carries and compares digests in
constant time; the plaintext key lives only as long as that request. The file is re-read
when its content changes (checked at most once a second), and what it says is what holds:
a line removed is a key revoked. Fail closed: while the file is unreadable or has no valid
line, every request that needs a key is refused (and the log says why); gunicorn's master
refuses to start on such a file.

Scopes: ``predict`` (inference), ``read`` (model metadata, statistics; ``/metrics`` where
``SERVING_METRICS_AUTH`` is on), ``admin`` (model control). Health and the API docs are
open. Make a key with ``python -m service.keys ID --scopes predict,read``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ApiError

log = logging.getLogger(__name__)

SCOPES = ("predict", "read", "admin")
REALM = "keras-classifier-serving"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
RELOAD_CHECK_S = 1.0
# What an open route (readiness) says in place of its details to a caller without a key
# that may read them.
DETAILS_NEED_READ = "details need an API key with the read scope"


class Unauthorized(ApiError):
    """No key, or one the service does not know."""

    status, code = 401, "unauthorized"

    @classmethod
    def because(cls, message: str, invalid: bool) -> Unauthorized:
        """The 401 with its ``WWW-Authenticate`` challenge (RFC 6750)."""
        challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")
        return cls(message, headers=(("WWW-Authenticate", challenge),))


class Forbidden(ApiError):
    """A known key without the scope the route needs (``key_id``: whose)."""

    status, code = 403, "forbidden"
    key_id: str | None = None


@dataclass(frozen=True)
class Key:
    """One line of the keys file."""

    id: str
    digest: bytes
    scopes: frozenset[str]


def digest(key: str) -> str:
    """The sha256 hex digest of a key, as the keys file records it."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse(text: str) -> tuple[list[Key], list[str]]:
    """(keys, problems): each bad line is a problem naming its line number, never its text
    (it might be a plaintext key pasted by mistake)."""
    keys, problems, ids = [], [], set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(":")
        if len(parts) != 3:
            problems.append(f"line {number}: expected <id>:<sha256 hex>:<scopes>")
            continue
        key_id, hexdigest, scope_text = (p.strip() for p in parts)
        scopes = {s.strip() for s in scope_text.split(",") if s.strip()}
        if not _ID.fullmatch(key_id):
            problems.append(f"line {number}: the id must be 1-64 letters, digits, '.', '_', '-'")
        elif not _DIGEST.fullmatch(hexdigest.lower()):
            problems.append(f"line {number}: the digest must be 64 hex characters (sha256)")
        elif digest(key_id) == hexdigest.lower():  # the key pasted as its own id
            problems.append(f"line {number}: the id is the key itself; name the key instead")
        elif key_id in ids:
            problems.append(f"line {number}: id {key_id!r} is used twice")
        elif not scopes or not scopes <= set(SCOPES):
            problems.append(f"line {number}: scopes must be among {', '.join(SCOPES)}")
        else:
            ids.add(key_id)
            keys.append(Key(key_id, bytes.fromhex(hexdigest.lower()), frozenset(scopes)))
    return keys, problems


def problem_with(path: Path) -> str | None:
    """Why a keys file cannot be used (unreadable, no valid key), or None."""
    try:
        keys, problems = parse(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        return f"API keys file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}"
    if not keys:
        first = f" ({problems[0]})" if problems else ""
        return f"API keys file {path} has no valid key{first}"
    return None


class KeyFile:
    """The keys in force: exactly what the file says, re-read when its content changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._content: bytes | None = None
        self._checked = time.monotonic()
        self.keys: list[Key] = []
        self._reload(startup=True)

    def _reload(self, startup: bool = False) -> None:
        try:
            content = self.path.read_bytes()
            text = content.decode()
        except (OSError, UnicodeDecodeError) as exc:
            if startup or self._content is not None:  # said once, not every second
                log.error(
                    "API keys file %s cannot be read (%s): every request that needs a "
                    "key is refused until it can",
                    self.path,
                    getattr(exc, "strerror", None) or type(exc).__name__,
                )
            self._content, self.keys = None, []
            return
        if content == self._content:
            return
        keys, problems = parse(text)
        for problem in problems:
            log.error("API keys file %s, %s (line skipped)", self.path, problem)
        self._content, self.keys = content, keys
        if not keys:
            log.error(
                "API keys file %s has no valid key: every request that needs a key is refused",
                self.path,
            )
        else:
            log.info(
                "API keys %s: %d key(s) (%s)",
                "loaded" if startup else "reloaded",
                len(keys),
                ", ".join(k.id for k in keys),
            )

    def find(self, key: str) -> Key | None:
        """The key's entry, comparing its digest with every entry in constant time."""
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_S:
            with self._lock:
                if now - self._checked >= RELOAD_CHECK_S:
                    self._checked = now
                    self._reload()
        presented = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = None
        for entry in self.keys:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(entry.digest, presented):
                found = entry
        return found


class Authenticator:
    """Checks a request's key against the scope its route needs (all open when off)."""

    def __init__(self, keys_file: str, metrics_auth: bool) -> None:
        self.keys = KeyFile(Path(keys_file)) if keys_file else None
        self.metrics_auth = metrics_auth
        if self.keys is None:
            log.warning(
                "API keys are off: anyone who can reach the port can use every model "
                "and the model-control API (set SERVING_API_KEYS_FILE to turn them on)"
            )

    @property
    def enabled(self) -> bool:
        """Keys are required."""
        return self.keys is not None

    def requires(self, scope: str | None) -> bool:
        """A route with this scope needs a key."""
        if self.keys is None or scope is None:
            return False
        return scope != "metrics" or self.metrics_auth

    def permits(self, environ: dict[str, Any], scope: str) -> bool:
        """Whether the request may see what ``scope`` guards (always, with keys off): for
        an open route that shows more to a key than to anyone."""
        try:
            self.check(environ, scope)
        except ApiError:
            return False
        return True

    def check(self, environ: dict[str, Any], scope: str | None) -> str | None:
        """The id of the key that may call a route needing ``scope`` (None when keys are
        off or the route is open); 401 / 403 otherwise."""
        if not self.requires(scope):
            return None
        token = _token(environ)
        if not token:
            raise Unauthorized.because(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'",
                invalid=False,
            )
        key = self.keys.find(token)
        if key is None:
            raise Unauthorized.because("the API key is not valid", invalid=True)
        needed = "read" if scope == "metrics" else scope
        if needed not in key.scopes:
            error = Forbidden(
                f"API key {key.id!r} lacks the {needed!r} scope",
                details={"scopes": sorted(key.scopes), "needed": needed},
            )
            error.key_id = key.id
            raise error
        return key.id


def _token(environ: dict[str, Any]) -> str:
    """A bearer token from ``Authorization``, else ``X-API-Key`` (an ``Authorization``
    header of another scheme, e.g. a proxy's Basic, does not hide it)."""
    parts = environ.get("HTTP_AUTHORIZATION", "").split(None, 1)
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip()
    return environ.get("HTTP_X_API_KEY", "").strip()


def main(argv: list[str] | None = None) -> int:
    """Make a key: print it once (give it to the client) and its line for the keys file."""
    parser = argparse.ArgumentParser(prog="python -m service.keys", description=main.__doc__)
    parser.add_argument("id", help="a name for the key (shown in logs and metrics)")
    parser.add_argument(
        "--scopes",
        default="predict",
        help=f"comma-separated, among {', '.join(SCOPES)} (default: predict)",
    )
    parser.add_argument(
        "--append", type=Path, metavar="FILE", help="also append the line to this keys file"
    )
    args = parser.parse_args(argv)
    scopes = sorted({s.strip() for s in args.scopes.split(",") if s.strip()})
    key = "ksk_" + secrets.token_urlsafe(32)
    line = f"{args.id}:{digest(key)}:{','.join(scopes)}"
    _keys, problems = parse(line)
    if problems:
        parser.error(problems[0].split(": ", 1)[1])
    if args.append:
        with args.append.open("a") as fh:
            fh.write(line + "\n")
    sys.stdout.write(f"key:  {key}\nline: {line}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
