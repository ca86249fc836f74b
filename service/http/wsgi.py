"""One parsed request -> a WSGI environ; the application's answer -> the response's bytes.

The environ is PEP 3333's, built from what llhttp parsed (no second reading of the
request's bytes): the path percent-decoded and held as latin-1 text, header fields as
``HTTP_*`` (repeated fields joined with a comma; a name with an underscore is dropped, as
gunicorn does, so ``X_API_KEY`` cannot pose as ``X-API-Key``). The response is collected
whole (every route here returns one body) and leaves in one send: status line, headers,
``Content-Length``, ``Date``, ``Connection``, body.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

from service.http.parser import Message

# Hop-by-hop and framing fields are the server's to write, never the application's.
_SERVER_FIELDS = frozenset(
    {"connection", "content-length", "date", "keep-alive", "transfer-encoding", "server"}
)
_NO_BODY = frozenset({204, 304})


class _Date:
    """The Date header's value, formatted once a second."""

    def __init__(self) -> None:
        self.second, self.value = 0, b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second, self.value = second, formatdate(second, usegmt=True).encode("ascii")
        return self.value


_DATE = _Date()


def environ(
    message: Message, server: tuple[str, int], client: tuple[str, int] | Any, threaded: bool
) -> dict[str, Any]:
    """The WSGI environ of one request."""
    target = message.target
    if b"#" in target:  # a fragment is the client's own business (RFC 9110 section 4.2.4)
        target = target.partition(b"#")[0]
    path, _, query = target.partition(b"?")
    authority = b""
    if path[:1] != b"/":  # absolute-form (the scheme in any case), "*", or CONNECT's
        scheme, sep, rest = path.partition(b"://")
        if sep and scheme.lower() in (b"http", b"https"):
            authority, _, path = rest.partition(b"/")
            path = b"/" + path
    env: dict[str, Any] = {
        "REQUEST_METHOD": message.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": message.target.decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{message.version}",
        "REMOTE_ADDR": client[0] if isinstance(client, tuple) else "",
        "REMOTE_PORT": str(client[1]) if isinstance(client, tuple) else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(message.body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": threaded,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in message.headers:
        name = raw_name.decode("latin-1").upper()
        if "_" in name:
            continue
        value = raw_value.decode("latin-1").strip()
        if name == "CONTENT-TYPE":
            env["CONTENT_TYPE"] = value
            continue
        if name == "CONTENT-LENGTH":
            env["CONTENT_LENGTH"] = value
            continue
        key = "HTTP_" + name.replace("-", "_")
        env[key] = f"{env[key]},{value}" if key in env else value
    if authority:  # the target's authority, not the Host field (RFC 9112 section 3.2.2)
        env["HTTP_HOST"] = authority.decode("latin-1")
    if "CONTENT_LENGTH" not in env and message.body:  # chunked: the length it came to
        env["CONTENT_LENGTH"] = str(len(message.body))
    return env


class Answer:
    """What the application answered: status, headers, the whole body."""

    __slots__ = ("body", "close", "headers", "status")

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.close = False


def call(app: Callable, env: dict[str, Any]) -> Answer:
    """Run the WSGI application on one request and collect its whole answer."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
        if exc_info and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return _no_write

    result: Iterable[bytes] = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the application returned without calling start_response")
    return Answer(started[0], started[1], body)


def _no_write(data: bytes) -> None:
    raise RuntimeError("write() from start_response is not supported; return the body")


def response_bytes(answer: Answer, message: Message, keep_alive: bool) -> bytes:
    """The whole response: status line, headers, framing, body (none for HEAD).

    ValueError (or TypeError, UnicodeEncodeError) for what HTTP/1.1 cannot carry: a status
    that is not ``ddd reason`` of 200 to 599, a header name that is not a token, a control
    character (CR, LF, NUL, ...) in a value, text beyond latin-1: never on the wire."""
    status_code = _STATUSES.get(answer.status) or _status_code(answer.status)
    lines = [b"HTTP/1.1 ", answer.status.encode("latin-1"), b"\r\n"]
    length: str | None = None
    for name, value in answer.headers:
        if name not in _NAMES:
            _check_name(name)
        if not value.isprintable() and _controls(value):
            raise ValueError(f"the response header {name!r} has a control character")
        lower = name.lower()
        if lower == "content-length":
            length = value.strip()
            continue
        if lower == "connection" and value.strip().lower() == "close":
            keep_alive = False
        if lower in _SERVER_FIELDS:
            continue
        lines += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
    head_request = message.method == "HEAD"
    if status_code not in _NO_BODY:
        if not head_request:
            length = str(len(answer.body))
        elif length is not None and not (length.isascii() and length.isdigit()):
            length = None  # HEAD: the app's length, when it said one that is a length
        if length is not None:
            lines += [b"Content-Length: ", length.encode("ascii"), b"\r\n"]
    lines += [b"Date: ", _DATE.now(), b"\r\n"]
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    elif message.version == "1.0":
        lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"\r\n")
    if not head_request and status_code not in _NO_BODY:
        lines.append(answer.body)
    answer.close = not keep_alive
    return b"".join(lines)


# Names and statuses already checked: an app sends the same few, a check each is once.
_NAMES: set[str] = set()
_STATUSES: dict[str, int] = {}
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_KNOWN = 1024  # at most this many of each remembered


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or not _TCHAR.issuperset(name):
        raise ValueError(f"the response header name {name!r} is not a token")
    if len(_NAMES) < _KNOWN:
        _NAMES.add(name)


def _controls(text: str) -> bool:
    """Whether the text has a control character a field may not carry (HTAB it may)."""
    return any((c < " " and c != "\t") or c == "\x7f" for c in text)


def _status_code(status: str) -> int:
    code = status[:3] if isinstance(status, str) else ""
    if not (
        code.isascii()
        and code.isdigit()
        and status[3:4] in ("", " ")
        and not _controls(status)
        and 200 <= int(code) <= 599  # 1xx: the server never switches protocols
    ):
        raise ValueError(f"the response status {status!r} is not a final HTTP/1.1 status")
    if len(_STATUSES) < _KNOWN:
        _STATUSES[status] = int(code)
    return int(code)
