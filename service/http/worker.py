"""The gunicorn worker: gthread, but a request reaches a thread only once it has arrived.

gunicorn's gthread worker hands a connection to a thread as soon as a byte arrives, and the
thread then blocks reading the rest: a handful of clients that send half a request and wait
hold every thread, and nobody else is answered. Here the main loop reads each connection
without blocking until its request is complete (headers, then the body by Content-Length or
chunked framing, which is undone here: the thread sees a plain body), and only then gives it
to a thread, with the bytes already in hand. What can be refused from the headers alone is
answered from the main loop (a body above the limit: 413; headers that never end: 431); a
request that has not arrived within ``SERVING_READ_TIMEOUT_S`` gets a 408; a connection that
is closing lingers in the poller, not in a thread or in the main loop. Every answer is JSON
with a request id, and counted in the metrics; so are gunicorn's own error pages.

With one thread (``SERVING_THREADS=1``, the default) the main loop answers each whole request
itself, with no hand-off to a thread. Handing a request to a thread and its connection back
costs a queue, a pipe write and two GIL hand-offs per request, and buys nothing when the
workers already fill the cores (docs/performance.md has the numbers). A worker busy answering
does not accept: new connections go to a worker that is waiting.
"""

from __future__ import annotations

import contextlib
import errno
import re
import selectors
import socket
import struct
import time
from concurrent.futures import Future
from functools import partial

import orjson
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.gthread import TConn, ThreadWorker

from service import metrics
from service.errors import error_body
from service.http.access import new_request_id
from service.settings import Settings

MAX_HEAD = 64 * 1024  # request line and headers: past it, refused here (431)
BUFFERED_PER_WORKER = 128 * 1024 * 1024  # past it, a connection is refused (503), not read
LINGER_S = 2.0  # how long a closing connection may keep sending before it is cut

_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.IGNORECASE)
_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*", re.IGNORECASE)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")  # as gunicorn reads it


class Refused(Exception):
    """A request answered from the main loop: (status, reason, message)."""


class Incoming:
    """What a connection has sent of its request so far, and how far it has been read."""

    __slots__ = ("chunks", "continued", "data", "deadline", "end", "payload", "pos", "registered")

    def __init__(self, data: bytes, deadline: float) -> None:
        self.data, self.deadline = bytearray(data), deadline
        self.end = -1  # where the headers end (-1: not yet)
        self.pos = 0  # chunked: where the next chunk's size line starts
        self.payload = 0  # chunked: body bytes so far
        self.chunks: list[memoryview] = []
        self.continued = False  # 100 Continue sent
        self.registered = False  # waiting in the poller

    def request(self, max_body: int) -> bytes | None:
        """The whole request as gunicorn should see it (chunked framing undone), once it
        has arrived; None while more is to come; Refused for what is answered at once."""
        data = self.data
        if self.end < 0:
            self.end = data.find(b"\r\n\r\n")
            if self.end < 0:
                if len(data) > MAX_HEAD:
                    raise Refused(
                        431,
                        "Request Header Fields Too Large",
                        f"the request line and headers are above {MAX_HEAD:,} bytes",
                    )
                return None
            self.pos = self.end + 4
        head, start = bytes(data[: self.end + 2]), self.end + 4
        if _CHUNKED.search(head):
            return self._dechunked(head, max_body)
        lengths = _LENGTH.findall(head)
        if not lengths:
            return bytes(data)  # no body (anything after it: a pipelined request)
        if len(lengths) > 1 or not (lengths[0].strip().isdigit() and len(lengths[0]) <= 18):
            return bytes(data)  # malformed: gunicorn answers 400 at once
        length = int(lengths[0])
        if length > max_body:
            raise Refused(
                413,
                "Payload Too Large",
                f"the request body is above the limit of {max_body:,} bytes",
            )
        return bytes(data) if len(data) - start >= length else None

    def _dechunked(self, head: bytes, max_body: int) -> bytes | None:
        """Read chunks from where the last call stopped (linear in the body's size)."""
        data = self.data
        while True:
            eol = data.find(b"\r\n", self.pos)
            if eol < 0:
                if len(data) - self.pos > 1024:
                    raise Refused(400, "Bad Request", "a chunk size line is too long")
                return None
            size = bytes(data[self.pos : eol]).split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size):
                raise Refused(400, "Bad Request", "the chunked body is malformed")
            n = int(size, 16)
            if n == 0:  # the last chunk: trailers, if any, end with an empty line
                trailer_end = data.find(b"\r\n\r\n", eol)
                if trailer_end < 0:
                    return None
                rest = bytes(data[trailer_end + 4 :])  # a pipelined request, if any
                body = b"".join(self.chunks)
                head = _LENGTH.sub(b"", _ENCODING.sub(b"", head))
                head += b"Content-Length: %d\r\n\r\n" % len(body)
                return head + body + rest
            if self.payload + n > max_body:
                raise Refused(
                    413,
                    "Payload Too Large",
                    f"the request body is above the limit of {max_body:,} bytes",
                )
            if eol + 2 + n + 2 > len(data):
                return None
            if data[eol + 2 + n : eol + 4 + n] != b"\r\n":
                raise Refused(400, "Bad Request", "the chunked body is malformed")
            self.chunks.append(memoryview(bytes(data[eol + 2 : eol + 2 + n])))
            self.payload += n
            self.pos = eol + 4 + n


def json_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP response: the error as JSON, with a request id, connection closed."""
    rid = new_request_id()
    body = orjson.dumps(error_body(reason.lower().replace(" ", "_"), message, request_id=rid))
    metrics.child(metrics.HTTP_REQUESTS, "(http)", "other", str(status)).inc()
    metrics.child(metrics.ERRORS, metrics.error_kind(status, "http"), "http").inc()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json"
        f"\r\nX-Request-ID: {rid}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _send_now(sock: socket.socket, data: bytes) -> None:
    """Best effort, from the main loop: never blocks, never raises."""
    with contextlib.suppress(OSError):
        sock.send(data)


def _write_error(sock, status_int, reason, mesg):
    """gunicorn's error page (``util.write_error``), as JSON; what it would call a 5xx for
    a request it cannot parse (an unknown Transfer-Encoding: 501) is the client's: 400."""
    if status_int >= 500:
        status_int, reason = 400, "Bad Request"
    util.write_nonblock(sock, json_error(status_int, reason, mesg))


class _Captured:
    """Stands in for the socket while gunicorn frames a response's first write."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)


class OneSendResponse(wsgi.Response):
    """gunicorn's response, but its headers leave with the first body bytes, in one send.

    gunicorn sends the status line and headers, then the body: two system calls and two TCP
    segments for every small answer, and a second wake-up of the client to read them. Here
    the first ``write`` is framed by gunicorn's own code into a stand-in, then sent at once;
    later writes (and a response with no body) go out as gunicorn sends them.
    """

    def write(self, arg):
        if self.headers_sent:
            return super().write(arg)
        sock, captured = self.sock, _Captured()
        self.sock = captured
        try:
            super().write(arg)
        finally:
            self.sock = sock
            if captured.parts:
                util.write(sock, b"".join(captured.parts))


class Conn(TConn):
    """gunicorn's connection, whose graceful close lingers in the worker's poller."""

    worker: ServingWorker

    def close(self, graceful=False):
        if graceful:
            self.worker.linger(self.sock)
        else:
            util.close(self.sock)


class ServingWorker(ThreadWorker):
    """gthread that reads whole requests in its main loop before a thread handles them."""

    def init_process(self):
        settings = Settings.from_env()
        self.read_timeout = settings.read_timeout_s
        self.max_body = settings.max_body_bytes
        self.receiving: dict[Conn, Incoming] = {}  # connections still sending their request
        self.lingering: dict[socket.socket, float] = {}  # closing: socket -> deadline
        self.buffered = 0
        self.inline = self.cfg.threads == 1  # answer in the main loop: no hand-off
        if self.inline and settings.batching:
            self.log.warning(
                "SERVING_BATCHING is on but SERVING_THREADS is 1: a worker answers "
                "one request at a time, so there is never a batch to combine"
            )
        util.write_error = _write_error  # gunicorn's own 400/414/431 pages become JSON
        wsgi.Response = OneSendResponse  # what wsgi.create() makes for each request
        super().init_process()

    @classmethod
    def check_config(cls, cfg, log):
        super().check_config(cfg, log)
        if cfg.is_ssl:  # TLS bytes cannot be read ahead: terminate TLS in front instead
            raise RuntimeError("service.http.worker.ServingWorker does not serve TLS itself")

    def accept(self, listener):
        """Accept, then read the request in the main loop (not in a thread)."""
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return  # another worker took it, or the client gave up
            raise
        self.nr_conns += 1
        seconds = int(self.read_timeout)
        timeout = struct.pack("ll", seconds, int((self.read_timeout - seconds) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        conn = Conn(self.cfg, sock, client, listener.getsockname())  # non-blocking
        conn.worker = self
        self._receive(conn, b"", idle=self.cfg.keepalive)

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection speaks again: read its next request first, too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._receive(conn, b"", idle=0)

    def enqueue_req(self, conn):
        """To a thread only with a whole request in hand: bytes a thread read ahead (the
        start of a pipelined request) go back through the main loop first (inline, on its
        next turn: answering pipelined requests one inside another would recurse)."""
        if conn.__dict__.get("prebuffered") is None and conn.initialized:
            leftover = conn.parser.unreader.take_buffered()
            conn.sock.setblocking(False)
            if self.inline:
                self.method_queue.defer(self._receive, conn, leftover, 0)
            else:
                self._receive(conn, leftover, idle=0)
            return
        if self.inline:
            self._answer(conn)
        else:
            super().enqueue_req(conn)

    def _answer(self, conn) -> None:
        """Inline: answer the request now, then keep the connection alive or close it."""
        done: Future = Future()
        done.set_result(self.handle(conn))
        self.finish_request(conn, done)

    def _receive(self, conn, data: bytes, idle: float) -> None:
        """Take what has arrived; wait in the poller (not in a thread) for the rest."""
        deadline = time.monotonic() + max(idle, self.read_timeout)
        incoming = self.receiving[conn] = Incoming(data, deadline)
        self.buffered += len(data)
        if data and self._advance(conn, incoming):
            return
        if not self._read(conn):
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_data, conn))
            incoming.registered = True

    def _on_data(self, conn, client):
        self._read(conn)

    def _read(self, conn) -> bool:
        """One read; True once the connection is off the main loop's hands (its request
        went to a thread, it was answered here, or the client went away)."""
        incoming = self.receiving[conn]
        try:
            data = conn.sock.recv(1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:  # the client went away
            self._done(conn)
            self.nr_conns -= 1
            util.close(conn.sock)
            return True
        incoming.data += data
        self.buffered += len(data)
        return self._advance(conn, incoming)

    def _advance(self, conn, incoming: Incoming) -> bool:
        try:
            if self.buffered > BUFFERED_PER_WORKER:
                raise Refused(
                    503, "Service Unavailable", "the server is receiving too much at once; retry"
                )
            request = incoming.request(self.max_body)
        except Refused as refusal:
            self._refuse(conn, *refusal.args)
            return True
        except Exception:  # a bug here must cost this request, never the worker
            self.log.exception("reading a request failed")
            self._refuse(conn, 400, "Bad Request", "the request could not be read")
            return True
        if request is not None:
            self._done(conn)
            conn.prebuffered = request
            self.enqueue_req(conn)
            return True
        if not incoming.continued and incoming.end >= 0:
            incoming.continued = True
            head = bytes(incoming.data[: incoming.end]).lower()
            if b"\r\nexpect:" in head and b"100-continue" in head and b"http/1.1" in head:
                _send_now(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        return False

    def _done(self, conn) -> None:
        """The main loop is through with this connection's request."""
        incoming = self.receiving.pop(conn, None)
        if incoming is not None:
            self.buffered -= len(incoming.data)
            if incoming.registered:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self.poller.unregister(conn.sock)

    def _refuse(self, conn, status: int, reason: str, message: str) -> None:
        """Answer from the main loop and close (the client may still be sending)."""
        self._done(conn)
        _send_now(conn.sock, json_error(status, reason, message))
        self.nr_conns -= 1
        self.linger(conn.sock)

    def linger(self, sock) -> None:
        """Close after the client stops sending (or LINGER_S), without blocking anyone:
        closing with unread data would reset the connection and lose the answer."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            util.close(sock)
            return
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(sock)
        self.lingering[sock] = time.monotonic() + LINGER_S
        self.poller.register(sock, selectors.EVENT_READ, self._drain)

    def _drain(self, sock) -> None:
        try:
            while sock.recv(1 << 16):
                pass
        except BlockingIOError:
            return
        except OSError:
            pass
        self._unlinger(sock)

    def _unlinger(self, sock) -> None:
        self.lingering.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)
        util.close(sock)

    def handle(self, conn):
        """In a thread: the request's bytes go to gunicorn's parser before the socket."""
        request = conn.__dict__.pop("prebuffered", None)
        if request is not None:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(request)
            conn.data_ready = True
        return super().handle(conn)

    def murder_keepalived(self, force=False):
        """Also: requests not whole in time get a 408; lingering closes end."""
        super().murder_keepalived(force)
        now = time.monotonic()
        for conn in [c for c, i in self.receiving.items() if force or i.deadline <= now]:
            if self.receiving[conn].data:
                self._refuse(
                    conn,
                    408,
                    "Request Timeout",
                    f"the request did not arrive within {self.read_timeout:g} s",
                )
            else:
                self._done(conn)
                self.nr_conns -= 1
                util.close(conn.sock)
        for sock in [s for s, d in self.lingering.items() if force or d <= now]:
            self._unlinger(sock)
