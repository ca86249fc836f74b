"""The gunicorn worker: one event loop per process; a request reaches the application only
once it has arrived whole, and its answer leaves without blocking anyone.

gunicorn provides the process (the arbiter, signals, heartbeats, sockets, the app loaded
per worker); this worker owns the connections. Each connection's bytes go to one
:class:`~service.http.parser.RequestReader` (httptools: llhttp decides the framing) as they
arrive, in the main loop, without blocking. A whole request is answered in the main loop
(``SERVING_THREADS=1``, the default: no hand-off costs) or by one of the worker's threads;
its answer is sent without blocking, and what the socket does not take at once waits in the
poller, so a client that reads slowly holds only its own connection.

What every client can cost is capped: a request must arrive within
``SERVING_READ_TIMEOUT_S`` (408) and its answer be read within ``SERVING_WRITE_TIMEOUT_S``
(the connection is closed); the bytes being received by one worker are capped, and past the
cap the largest incomplete uploads are refused first (503), so small requests always get in.
Refusals from here are JSON with a request id, counted in the metrics, and close the
connection.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson
from gunicorn.workers.base import Worker

from service import metrics
from service.errors import error_body
from service.http import wsgi
from service.http.access import new_request_id
from service.http.parser import Message, Refused, RequestReader
from service.settings import Settings

BUFFERED_PER_WORKER = 128 * 1024 * 1024  # bytes of incomplete requests: past it, refuse
BUFFER_HEADROOM = 0.75  # refusing the largest uploads stops once below this share of it
LINGER_S = 2.0  # how long a closing connection may keep sending before it is cut
READ_SIZE = 1 << 16
ACCEPT_BATCH = 64  # connections accepted a turn, at most (4 or 16: a worse tail at c=256)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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


class Conn:
    """One client connection and where it stands: reading, answering, sending, closing."""

    __slots__ = (
        "client",
        "continued",
        "deadline",
        "outgoing",
        "reader",
        "server",
        "sock",
        "state",
        "then_close",
    )

    def __init__(self, sock: socket.socket, client: Any, server: Any, max_body: int) -> None:
        self.sock, self.client, self.server = sock, client, server
        self.reader = RequestReader(max_body)
        self.state = "reading"  # reading | answering | sending | lingering
        self.deadline = 0.0
        self.outgoing = memoryview(b"")
        self.then_close = False
        self.continued = False


class ServingWorker(Worker):
    """One event loop: reads requests whole, answers them, writes without blocking."""

    def init_process(self) -> None:
        settings = Settings.from_env()
        self.read_timeout = settings.read_timeout_s
        self.write_timeout = settings.write_timeout_s
        self.max_body = settings.max_body_bytes
        self.keepalive = float(self.cfg.keepalive)
        self.threads = self.cfg.threads
        self.conns: dict[int, Conn] = {}
        self.buffered = 0  # bytes of requests still arriving, over every connection
        self.poller = selectors.DefaultSelector()
        self.pool: ThreadPoolExecutor | None = None
        self.answered: deque[tuple[Conn, Message, Future]] = deque()
        self.pipelined: deque[Conn] = deque()  # connections with a whole request waiting
        self.accepting = False
        if self.threads == 1 and settings.batching:
            self.log.warning(
                "SERVING_BATCHING is on but SERVING_THREADS is 1: a worker answers "
                "one request at a time, so there is never a batch to combine"
            )
        super().init_process()  # loads the app, then calls run()

    @classmethod
    def check_config(cls, cfg, log) -> None:
        if cfg.is_ssl:  # terminate TLS in front (an ingress, a load balancer)
            raise RuntimeError("service.http.worker.ServingWorker does not serve TLS itself")

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        if self.threads > 1:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="request")
        self.poller.register(self.PIPE[0], selectors.EVENT_READ, self._wake)
        for listener in self.sockets:
            listener.setblocking(False)
        self._accept_enabled(True)
        while self.alive:
            self.notify()
            self._accept_enabled(len(self.conns) < self.cfg.worker_connections)
            self._turn(1.0)
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            if self.nr >= self.max_requests:
                self.log.info("Autorestarting worker after current request.")
                break
        self._stop()

    def _turn(self, timeout: float) -> None:
        try:
            events = self.poller.select(0 if self.pipelined else timeout)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            events = []
        for key, mask in events:
            key.data(key.fileobj, mask)
        while self.answered:
            self._finish(*self.answered.popleft())
        for _ in range(len(self.pipelined)):  # one request each a turn: fair, no recursion
            conn = self.pipelined.popleft()
            if conn.state == "reading" and conn.reader.done and conn.sock.fileno() in self.conns:
                self._next(conn)
        self._expire(time.monotonic())

    def _stop(self) -> None:
        """Graceful: no new connections; idle ones close; in-flight ones are answered."""
        self._accept_enabled(False)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self.conns and time.monotonic() < deadline:
            for conn in list(self.conns.values()):
                if conn.state == "reading" and not conn.reader.started:
                    self._close(conn)  # idle: nothing to lose
            if self.conns:
                self.notify()
                self._turn(0.2)
        for conn in list(self.conns.values()):
            self._close(conn)
        if self.pool is not None:
            self.pool.shutdown(wait=False)
        self.poller.close()
        for listener in self.sockets:
            listener.close()

    def _wake(self, fileobj, mask) -> None:
        with contextlib.suppress(OSError):
            os.read(self.PIPE[0], 4096)

    def _accept_enabled(self, enabled: bool) -> None:
        if enabled == self.accepting:
            return
        for listener in self.sockets:
            if enabled:
                self.poller.register(listener, selectors.EVENT_READ, self._accept)
            else:
                self.poller.unregister(listener)
        self.accepting = enabled

    def _accept(self, listener, mask) -> None:
        """Take what is waiting, up to ACCEPT_BATCH: one a turn would leave the 100th of
        100 clients connecting at once waiting 100 turns (each answering every ready
        request) for its first answer: the tail of every load test's start."""
        for _ in range(ACCEPT_BATCH):
            if len(self.conns) >= self.cfg.worker_connections or not self._accept_one(listener):
                return

    def _accept_one(self, listener) -> bool:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return False  # none left (another worker took it, or the client gave up)
            raise
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(sock, client, listener.getsockname(), self.max_body)
        self.conns[sock.fileno()] = conn
        self._await_request(conn, self.read_timeout)
        self.poller.register(sock, selectors.EVENT_READ, self._readable)
        return True

    # --- reading ------------------------------------------------------------------------------

    def _await_request(self, conn: Conn, idle: float) -> None:
        conn.state = "reading"
        conn.continued = False
        conn.deadline = time.monotonic() + max(idle, 0.0)

    def _readable(self, sock, mask) -> None:
        conn = self.conns.get(sock.fileno())
        if conn is None:
            return
        if conn.state == "lingering":
            self._drain(conn)
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away (or half-closed: nothing more will come)
            self._close(conn)
            return
        reader = conn.reader
        fresh = not reader.started
        before = reader.buffered
        try:
            reader.feed(data)
        except Refused as refusal:
            self.buffered -= before
            self._refuse(conn, refusal.status, refusal.reason, refusal.message)
            return
        except Exception:  # a bug here must cost this request, never the worker
            self.log.exception("reading a request failed")
            self.buffered -= before
            self._refuse(conn, 400, "Bad Request", "the request could not be read")
            return
        self.buffered += reader.buffered - before
        if fresh and reader.started:  # its first byte: the whole request is due by then
            conn.deadline = time.monotonic() + self.read_timeout
        if reader.done:
            self._next(conn)
            return
        if reader.continue_wanted and not conn.continued:
            conn.continued = True
            self._send_now(conn, _CONTINUE)
        if self.buffered > BUFFERED_PER_WORKER:
            self._shed()

    def _shed(self) -> None:
        """Too much arriving at once: refuse the largest incomplete uploads until the total
        is back under the headroom mark; small requests are never the ones refused."""
        receiving = sorted(
            (c for c in self.conns.values() if c.state == "reading" and c.reader.buffered),
            key=lambda c: c.reader.buffered,
            reverse=True,
        )
        for conn in receiving:
            if self.buffered <= BUFFERED_PER_WORKER * BUFFER_HEADROOM:
                break
            self.buffered -= conn.reader.buffered
            self._refuse(
                conn, 503, "Service Unavailable", "the server is receiving too much at once; retry"
            )

    # --- answering ----------------------------------------------------------------------------

    def _next(self, conn: Conn) -> None:
        """Answer the connection's next whole request (pipelined ones wait their turn: the
        connection is not read while one is being answered)."""
        message = conn.reader.done.popleft()
        conn.state = "answering"
        self.nr += 1
        env = wsgi.environ(message, conn.server, conn.client, self.pool is not None)
        if self.pool is None:
            done: Future = Future()
            try:
                done.set_result(wsgi.call(self.wsgi, env))
            except BaseException as exc:
                done.set_exception(exc)
            self._finish(conn, message, done)
            return
        self.poller.unregister(conn.sock)
        future = self.pool.submit(wsgi.call, self.wsgi, env)
        future.add_done_callback(lambda f: self._answered(conn, message, f))

    def _answered(self, conn: Conn, message: Message, future: Future) -> None:
        """In a thread: hand the answer back to the main loop."""
        self.answered.append((conn, message, future))
        with contextlib.suppress(OSError):
            os.write(self.PIPE[1], b".")

    def _finish(self, conn: Conn, message: Message, future: Future) -> None:
        if conn.sock.fileno() not in self.conns:
            return
        if self.pool is not None:
            self.poller.register(conn.sock, selectors.EVENT_READ, self._readable)
        try:
            answer = future.result()
        except Exception:
            self.log.exception("the application failed outside its own error handling")
            self._refuse(conn, 500, "Internal Server Error", "internal error")
            return
        keep_alive = (
            message.keep_alive and not message.upgrade and self.alive and self.keepalive > 0
        )
        data = wsgi.response_bytes(answer, message, keep_alive)
        conn.then_close = answer.close
        self._send(conn, data)

    # --- writing ------------------------------------------------------------------------------

    def _send(self, conn: Conn, data: bytes) -> None:
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        if sent < len(data):  # the rest waits in the poller, bounded in time
            conn.outgoing = memoryview(data)[sent:]
            conn.state = "sending"
            conn.deadline = time.monotonic() + self.write_timeout
            self.poller.modify(conn.sock, selectors.EVENT_WRITE, self._writable)
            return
        self._sent(conn)

    def _writable(self, sock, mask) -> None:
        conn = self.conns.get(sock.fileno())
        if conn is None:
            return
        try:
            sent = sock.send(conn.outgoing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.outgoing = conn.outgoing[sent:]
        if not conn.outgoing:
            self.poller.modify(sock, selectors.EVENT_READ, self._readable)
            self._sent(conn)

    def _sent(self, conn: Conn) -> None:
        conn.outgoing = memoryview(b"")
        if conn.then_close:
            self._linger(conn)
            return
        self._await_request(conn, self.keepalive)
        if conn.reader.done:  # a pipelined request arrived with the last one
            self.pipelined.append(conn)

    def _send_now(self, conn: Conn, data: bytes) -> None:
        """Best effort, small, from the main loop: never blocks, never raises."""
        with contextlib.suppress(OSError):
            conn.sock.send(data)

    # --- refusing and closing -----------------------------------------------------------------

    def _refuse(self, conn: Conn, status: int, reason: str, message: str) -> None:
        """Answer from the main loop and close (the client may still be sending)."""
        conn.reader.done.clear()
        self._send_now(conn, json_error(status, reason, message))
        self._linger(conn)

    def _linger(self, conn: Conn) -> None:
        """Close after the client stops sending (or LINGER_S), without blocking anyone:
        closing with unread data would reset the connection and lose the answer."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.state = "lingering"
        conn.deadline = time.monotonic() + LINGER_S
        with contextlib.suppress(KeyError, ValueError):
            self.poller.modify(conn.sock, selectors.EVENT_READ, self._readable)

    def _drain(self, conn: Conn) -> None:
        try:
            while conn.sock.recv(READ_SIZE):
                pass
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        if self.conns.pop(fd, None) is None:
            return
        if conn.state == "reading":
            self.buffered -= conn.reader.buffered
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _expire(self, now: float) -> None:
        """Requests not whole in time get a 408; slow readers, idle and lingering
        connections are closed."""
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            if conn.state == "reading" and conn.reader.started:
                self.buffered -= conn.reader.buffered
                self._refuse(
                    conn,
                    408,
                    "Request Timeout",
                    f"the request did not arrive within {self.read_timeout:g} s",
                )
            elif conn.state != "answering":
                self._close(conn)
