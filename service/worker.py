"""The gunicorn worker: gthread, but a request reaches a thread only once it has arrived.

gunicorn's gthread worker hands a connection to a thread as soon as a byte arrives, and the
thread then blocks reading the rest: a handful of clients that send half a request and wait
hold every thread, and nobody else is answered. Here the main loop reads each connection
without blocking until its request is complete (headers, then the body by Content-Length or
chunked framing), and only then gives it to a thread, with the bytes already in hand. A
connection that has not sent a whole request within ``SERVING_READ_TIMEOUT_S`` gets a JSON
408 and is closed; every socket also has a kernel receive and send timeout, so no thread
waits on a client longer than that either. gunicorn's own error pages (a malformed request
line, headers too large) are JSON with a request id, and counted in the metrics.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import struct
import time
from functools import partial

import orjson
from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from service import metrics
from service.observability import new_request_id
from service.settings import Settings

MAX_HEAD = 64 * 1024  # more than gunicorn's own header limits: past it, gunicorn refuses
BUFFERED_PER_WORKER = 256 * 1024 * 1024  # beyond it, requests are read in threads instead


_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.IGNORECASE)


def request_complete(data: bytes | bytearray, max_body: int) -> bool:
    """Whether ``data`` holds a whole HTTP/1.x request, or enough for it to be refused
    (a malformed or oversized one: gunicorn or the service answers it without waiting)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > MAX_HEAD
    head, start = bytes(data[: end + 2]), end + 4
    if _CHUNKED.search(head):
        return len(data) - start > max_body or _chunks_complete(data, start)
    lengths = _LENGTH.findall(head)
    if not lengths:
        return True  # no body
    if len(lengths) > 1 or not lengths[0].strip().isdigit():
        return True  # malformed: refused at once
    length = int(lengths[0])
    return length > max_body or len(data) - start >= length  # too big: refused unread (413)


def _chunks_complete(data: bytes | bytearray, pos: int) -> bool:
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return len(data) - pos > 1024  # a size line that long is garbage: refuse now
        size = bytes(data[pos:eol]).split(b";", 1)[0].strip()
        try:
            n = int(size, 16)
        except ValueError:
            return True  # bad framing: refused at once
        if n == 0:  # the last chunk: trailers, if any, end with an empty line
            return data[eol : eol + 4] == b"\r\n\r\n" or data.find(b"\r\n\r\n", eol) >= 0
        pos = eol + 2 + n + 2
        if pos > len(data):
            return False


def json_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP response: the error as JSON, with a request id, connection closed."""
    rid = new_request_id()
    body = orjson.dumps({"error": {"code": reason.lower().replace(" ", "_"),
                                   "message": message}, "request_id": rid})  # fmt: skip
    metrics.child(metrics.HTTP_REQUESTS, "(http)", "other", str(status)).inc()
    metrics.child(metrics.ERRORS, metrics.error_kind(status, "http"), "http").inc()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json"
            f"\r\nX-Request-ID: {rid}\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode("latin-1") + body


def _send_now(sock: socket.socket, data: bytes) -> None:
    """Best effort, from the main loop: never blocks, never raises."""
    with contextlib.suppress(OSError):
        sock.send(data)


def _write_error(sock, status_int, reason, mesg):
    """gunicorn's error page (``util.write_error``), as JSON."""
    util.write_nonblock(sock, json_error(status_int, reason, mesg))


class ServingWorker(ThreadWorker):
    """gthread that reads whole requests in its main loop before a thread handles them."""

    def init_process(self):
        settings = Settings.from_env()
        self.read_timeout = settings.read_timeout_s
        self.max_body = settings.max_body_bytes
        self.receiving: dict[TConn, None] = {}  # connections still sending their request
        self.buffered = 0
        util.write_error = _write_error  # gunicorn's own 400/414/431 pages become JSON
        super().init_process()

    def accept(self, listener):
        """Accept, then read the request in the main loop (not in a thread)."""
        try:
            sock, client = listener.accept()
        except OSError:
            return  # another worker took it, or the client gave up
        self.nr_conns += 1
        seconds = int(self.read_timeout)
        timeout = struct.pack("ll", seconds, int((self.read_timeout - seconds) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        conn = TConn(self.cfg, sock, client, listener.getsockname())  # non-blocking
        self._receive(conn, idle=self.cfg.keepalive)

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection speaks again: read its next request first, too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._receive(conn, idle=0)

    def _receive(self, conn, idle: float) -> None:
        """Read what has arrived; wait in the poller (not in a thread) for the rest."""
        conn.inbox, conn.continued = bytearray(), False
        conn.deadline = time.monotonic() + max(idle, self.read_timeout)
        if not self._read(conn):  # the usual case on a kept-alive connection: all there
            self.receiving[conn] = None
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_data, conn))

    def _on_data(self, conn, client):
        if self._read(conn):
            self.receiving.pop(conn, None)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)

    def _read(self, conn) -> bool:
        """One read; True once the connection is off the main loop's hands (its request
        went to a thread, or the client went away)."""
        try:
            data = conn.sock.recv(1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:  # the client went away
            self.buffered -= len(conn.inbox)
            self.nr_conns -= 1
            conn.close()
            return True
        conn.inbox += data
        self.buffered += len(data)
        if request_complete(conn.inbox, self.max_body) or self.buffered > BUFFERED_PER_WORKER:
            self.buffered -= len(conn.inbox)
            conn.prebuffered, conn.inbox = bytes(conn.inbox), None
            self.enqueue_req(conn)
            return True
        if not conn.continued and b"\r\n\r\n" in conn.inbox:
            conn.continued = True
            if b"100-continue" in bytes(conn.inbox[: conn.inbox.find(b"\r\n\r\n")]).lower():
                _send_now(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        return False

    def handle(self, conn):
        """In a thread: the request's bytes go to gunicorn's parser before the socket."""
        buffered = conn.__dict__.pop("prebuffered", None)
        if buffered is not None:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(buffered)
            conn.data_ready = True
        return super().handle(conn)

    def murder_keepalived(self, force=False):
        """Also: connections that have not sent a whole request in time get a 408."""
        super().murder_keepalived(force)
        now = time.monotonic()
        for conn in [c for c in self.receiving if force or c.deadline <= now]:
            del self.receiving[conn]
            self.buffered -= len(conn.inbox)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            if conn.inbox:
                _send_now(conn.sock, json_error(
                    408, "Request Timeout",
                    f"the request did not arrive within {self.read_timeout:g} s"))  # fmt: skip
            self.nr_conns -= 1
            conn.close()
