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
(the connection is closed); the bytes the connections hold are counted (each connection's
in one place, uncounted once when it closes) and capped, and past the cap the largest
incomplete uploads are refused first (503), so small requests always get in. A connection is
not read while whole requests of its own wait (pipelining: a few are parsed ahead, the rest
waits in the kernel), and connections with requests waiting take turns, one request each.
Whole requests are answered before whatever follows them: a refusal, a half-close.
Refusals from here are JSON with a request id, counted in the metrics, and close the
connection. An answer HTTP/1.1 cannot carry (a control character in a header, a status that
is not a final one) is a 500, never a crash.
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

BUFFERED_PER_WORKER = 128 * 1024 * 1024  # bytes the connections hold: past it, refuse
BUFFER_HEADROOM = 0.75  # refusing the largest uploads stops once below this share of it
LINGER_S = 2.0  # how long a closing connection may keep sending before it is cut
READ_SIZE = 1 << 16
ACCEPT_BATCH = 64  # connections accepted a turn, at most (4 or 16: a worse tail at c=256)
# ... and at most 1 + half the connections a worker has. An idle worker below ACCEPT_ALONE
# connections takes one, then pauses ACCEPT_PAUSE_S, in which the other workers (woken by
# the same listener) take theirs: one worker taking a burst of connections at once leaves
# the others idle for as long as those keep-alive connections last (wrk's 8: 53 requests
# against 3, half the throughput). Above it, or while busy, the pauses would only lengthen
# the tail (32: p99 up to 10x p50 at c=256).
ACCEPT_SHARE = 2
ACCEPT_ALONE = 8
ACCEPT_PAUSE_S = 0.002
ACCEPT_BACKOFF_S = 0.5  # accept() out of descriptors or memory: how long to stop accepting
GRACE_SHARE = 0.9  # a graceful stop ends within this share of graceful_timeout (then SIGKILL)
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE

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
    """One client connection and where it stands: reading, waiting its turn, answering,
    sending, closing."""

    __slots__ = (
        "client",
        "continued",
        "deadline",
        "events",
        "held",
        "outgoing",
        "queued",
        "reader",
        "refusal",
        "server",
        "sock",
        "state",
        "then_close",
    )

    def __init__(self, sock: socket.socket, client: Any, server: Any, max_body: int) -> None:
        self.sock, self.client, self.server = sock, client, server
        self.reader = RequestReader(max_body)
        self.state = "reading"  # reading | waiting | answering | sending | lingering
        self.deadline = 0.0
        self.outgoing = memoryview(b"")
        self.then_close = False
        self.continued = False
        self.events = 0  # what the poller watches for: 0, READ or WRITE
        self.held = 0  # the bytes of the reader's counted in the worker's budget
        self.queued = False  # in the worker's pipelined queue
        self.refusal: tuple[int, str, str] | None = None  # sent once the whole ones are


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
        self.buffered = 0  # bytes the connections hold (the sum of their Conn.held)
        self.poller = selectors.DefaultSelector()
        self.pool: ThreadPoolExecutor | None = None
        self.answered: deque[tuple[Conn, Message, Future]] = deque()
        self.pipelined: deque[Conn] = deque()  # connections with whole requests waiting
        self.accepting = False
        self.accept_after = 0.0  # no accept() before then (a pause after one; no descriptors)
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
        self.poller.register(self.PIPE[0], READ, self._wake)
        for listener in self.sockets:
            listener.setblocking(False)
        self._accept_enabled(True)
        while self.alive:
            self.notify()
            self._turn(self._accept_gate())
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            if self.nr >= self.max_requests:
                self.log.info("Autorestarting worker after current request.")
                break
        self._stop()

    def _accept_gate(self) -> float:
        """Accept again once a pause is over (and while below worker_connections); the
        longest the next turn may wait."""
        timeout = 1.0
        if self.accept_after:
            timeout = min(max(self.accept_after - time.monotonic(), 0.0), timeout)
            if not timeout:
                self.accept_after = 0.0
        self._accept_enabled(
            not self.accept_after and len(self.conns) < self.cfg.worker_connections
        )
        return timeout

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
            conn.queued = False
            if conn.state == "waiting" and self.conns.get(conn.sock.fileno()) is conn:
                self._resume(conn)
        self._expire(time.monotonic())

    def _stop(self) -> None:
        """Graceful: the listeners close (new clients are refused, and go elsewhere); what
        has arrived is answered; idle connections close; all within GRACE_SHARE of
        graceful_timeout, so that the arbiter never has to kill the worker."""
        self._accept_enabled(False)
        for listener in self.sockets:
            with contextlib.suppress(OSError):
                listener.close()
        deadline = time.monotonic() + GRACE_SHARE * self.cfg.graceful_timeout
        while self.conns and time.monotonic() < deadline:
            for conn in list(self.conns.values()):
                if conn.state == "reading" and not conn.reader.started and not _waiting(conn):
                    self._close(conn)  # idle, nothing sent: nothing to lose
            if self.conns:
                self.notify()
                self._turn(0.1)
        for conn in list(self.conns.values()):
            self._close(conn)
        if self.pool is not None:
            self.pool.shutdown(wait=False)
        self.poller.close()

    def _wake(self, fileobj, mask) -> None:
        with contextlib.suppress(OSError):
            os.read(self.PIPE[0], 4096)

    def _accept_enabled(self, enabled: bool) -> None:
        if enabled == self.accepting:
            return
        for listener in self.sockets:
            if enabled:
                self.poller.register(listener, READ, self._accept)
            else:
                self.poller.unregister(listener)
        self.accepting = enabled

    def _accept(self, listener, mask) -> None:
        """Take what is waiting, up to ACCEPT_BATCH: one a turn would leave the 100th of
        100 clients connecting at once waiting 100 turns (each answering every ready
        request) for its first answer: the tail of every load test's start. The batch grows
        with the connections the worker has, so that workers share a burst of new ones."""
        if len(self.conns) < ACCEPT_ALONE and not self._busy():
            if self._accept_one(listener) and not self.accept_after:
                self.accept_after = time.monotonic() + ACCEPT_PAUSE_S
                self._accept_enabled(False)
            return
        batch = min(ACCEPT_BATCH, 1 + len(self.conns) // ACCEPT_SHARE)
        for _ in range(batch):
            if len(self.conns) >= self.cfg.worker_connections or not self._accept_one(listener):
                return

    def _busy(self) -> bool:
        """Whether a request is under way on any connection (then a pause between accepts
        would only keep clients waiting for turns that answer others first)."""
        return any(c.state != "reading" or c.reader.started for c in self.conns.values())

    def _accept_one(self, listener) -> bool:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK, errno.EINTR):
                return False  # none left (another worker took it, or the client gave up)
            # Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or worse: the
            # connections open go on being served; accepting resumes in a moment.
            self.log.error("accepting a connection failed (%s): pausing accept", exc)
            self.accept_after = time.monotonic() + ACCEPT_BACKOFF_S
            self._accept_enabled(False)
            return False
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(sock, client, listener.getsockname(), self.max_body)
        self.conns[sock.fileno()] = conn
        self._await_request(conn, self.read_timeout)
        return True

    def _watch(self, conn: Conn, events: int) -> None:
        """What the poller watches the connection for (nothing while it waits its turn or
        is answered in a thread: it is not read then)."""
        if events == conn.events:
            return
        handler = self._readable if events == READ else self._writable
        with contextlib.suppress(KeyError, ValueError, OSError):
            if not conn.events:
                self.poller.register(conn.sock, events, handler)
            elif not events:
                self.poller.unregister(conn.sock)
            else:
                self.poller.modify(conn.sock, events, handler)
        conn.events = events

    def _account(self, conn: Conn) -> None:
        """The one place the budget changes: by what the connection holds now."""
        held = conn.reader.held
        self.buffered += held - conn.held
        conn.held = held

    # --- reading ------------------------------------------------------------------------------

    def _await_request(self, conn: Conn, idle: float) -> None:
        conn.state = "reading"
        conn.continued = False
        conn.deadline = time.monotonic() + max(idle, 0.0)
        self._watch(conn, READ)
        self._continue(conn)

    def _continue(self, conn: Conn) -> None:
        if conn.reader.continue_wanted and not conn.continued:
            conn.continued = True
            self._send_now(conn, _CONTINUE)

    def _readable(self, sock, mask) -> None:
        conn = self.conns.get(sock.fileno())
        if conn is None:
            return
        if conn.state == "lingering":
            self._drain(conn)
            return
        if conn.state != "reading":
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away, or half-closed: what it sent is answered
            self._close(conn)  # (nothing is queued while a connection is read)
            return
        reader = conn.reader
        fresh = not reader.started
        self._parse(conn, reader.feed, data)
        if reader.done or reader.pending:
            self._next(conn)
            return
        if conn.refusal:
            self._refuse(conn, *conn.refusal)
            return
        if reader.closed:  # after a request that closed the connection: nothing to answer
            self._close(conn)
            return
        if fresh and reader.started:  # its first byte: the whole request is due by then
            conn.deadline = time.monotonic() + self.read_timeout
        self._continue(conn)
        if self.buffered > BUFFERED_PER_WORKER:
            self._shed()

    def _parse(self, conn: Conn, parse, *data: bytes) -> None:
        """Feed (or resume) the reader; a refusal waits for the whole requests before it."""
        try:
            parse(*data)
        except Refused as refusal:
            conn.refusal = (refusal.status, refusal.reason, refusal.message)
        except Exception:  # a bug here must cost this request, never the worker
            self.log.exception("reading a request failed")
            conn.reader.close(keep_done=True)
            conn.refusal = (400, "Bad Request", "the request could not be read")
        self._account(conn)

    def _shed(self) -> None:
        """Too much arriving at once: refuse the largest incomplete uploads until the total
        is back under the headroom mark; small requests are never the ones refused."""
        receiving = sorted(
            (c for c in self.conns.values() if c.state == "reading" and c.held),
            key=lambda c: c.held,
            reverse=True,
        )
        for conn in receiving:
            if self.buffered <= BUFFERED_PER_WORKER * BUFFER_HEADROOM:
                break
            self._refuse(
                conn, 503, "Service Unavailable", "the server is receiving too much at once; retry"
            )

    # --- answering ----------------------------------------------------------------------------

    def _resume(self, conn: Conn) -> None:
        """The connection's turn: its next whole request, or a refusal, or reading again."""
        reader = conn.reader
        if not reader.done and reader.pending:
            self._parse(conn, reader.resume)
        if reader.done:
            self._next(conn)
        elif conn.refusal:
            self._refuse(conn, *conn.refusal)
        elif reader.closed:
            self._close(conn)
        else:
            self._await_request(conn, self.read_timeout if reader.started else self.keepalive)

    def _next(self, conn: Conn) -> None:
        """Answer the connection's next whole request (it is not read meanwhile: what else
        arrived waits in the kernel, or unparsed, or as at most a few whole requests)."""
        if not conn.reader.done:  # what is pending parses in the connection's next turn
            self._wait(conn)
            return
        message = conn.reader.pop()
        self._account(conn)
        conn.state = "answering"
        self.nr += 1
        try:
            env = wsgi.environ(message, conn.server, conn.client, self.pool is not None)
        except Exception:
            self.log.exception("the request could not be handed to the application")
            self._refuse(conn, 400, "Bad Request", "the request could not be read")
            return
        if self.pool is None:
            done: Future = Future()
            try:
                done.set_result(wsgi.call(self.wsgi, env))
            except BaseException as exc:
                done.set_exception(exc)
            self._finish(conn, message, done)
            return
        self._watch(conn, 0)
        future = self.pool.submit(wsgi.call, self.wsgi, env)
        future.add_done_callback(lambda f: self._answered(conn, message, f))

    def _answered(self, conn: Conn, message: Message, future: Future) -> None:
        """In a thread: hand the answer back to the main loop."""
        self.answered.append((conn, message, future))
        with contextlib.suppress(OSError):
            os.write(self.PIPE[1], b".")

    def _finish(self, conn: Conn, message: Message, future: Future) -> None:
        if self.conns.get(conn.sock.fileno()) is not conn:
            return
        try:
            answer = future.result()
        except Exception:
            self.log.exception("the application failed outside its own error handling")
            self._refuse(conn, 500, "Internal Server Error", "internal error")
            return
        reader = conn.reader
        keep_alive = (  # stopping: kept only for the requests that have already arrived
            message.keep_alive
            and not message.upgrade
            and self.keepalive > 0
            and (self.alive or bool(reader.done or reader.pending))
        )
        try:
            data = wsgi.response_bytes(answer, message, keep_alive)
        except Exception as exc:  # the app's status or headers cannot go on the wire
            self.log.error("the application's answer cannot be sent: %s", exc)
            self._refuse(conn, 500, "Internal Server Error", "internal error")
            return
        conn.then_close = answer.close
        self._send(conn, data)

    def _wait(self, conn: Conn) -> None:
        """Whole requests (or unparsed bytes) wait: the connection's turn comes once a
        turn, among the others', and it is not read until they are answered."""
        conn.state = "waiting"
        conn.deadline = float("inf")
        self._watch(conn, 0)
        if not conn.queued:
            conn.queued = True
            self.pipelined.append(conn)

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
            self._watch(conn, WRITE)
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
            self._sent(conn)

    def _sent(self, conn: Conn) -> None:
        conn.outgoing = memoryview(b"")
        if conn.then_close:
            self._linger(conn)
            return
        reader = conn.reader
        if reader.done or reader.pending or conn.refusal:
            self._wait(conn)  # pipelined requests (or a refusal) arrived with the last one
        elif reader.closed:
            self._linger(conn)
        else:
            self._await_request(conn, self.read_timeout if reader.started else self.keepalive)

    def _send_now(self, conn: Conn, data: bytes) -> None:
        """Best effort, small, from the main loop: never blocks, never raises."""
        with contextlib.suppress(OSError):
            conn.sock.send(data)

    # --- refusing and closing -----------------------------------------------------------------

    def _refuse(self, conn: Conn, status: int, reason: str, message: str) -> None:
        """Answer from the main loop and close (the client may still be sending)."""
        conn.refusal = None
        conn.reader.close()
        self._account(conn)
        conn.then_close = True
        self._send(conn, json_error(status, reason, message))

    def _linger(self, conn: Conn) -> None:
        """Close after the client stops sending (or LINGER_S), without blocking anyone:
        closing with unread data would reset the connection and lose the answer."""
        conn.reader.close()
        self._account(conn)
        conn.state = "lingering"
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.deadline = time.monotonic() + LINGER_S
        self._watch(conn, READ)

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
        if self.conns.get(conn.sock.fileno()) is not conn:
            return
        del self.conns[conn.sock.fileno()]
        self.buffered -= conn.held
        conn.held = 0
        conn.reader.close()
        self._watch(conn, 0)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _expire(self, now: float) -> None:
        """Requests not whole in time get a 408; slow readers, idle and lingering
        connections are closed."""
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            if conn.state == "reading" and conn.reader.started:
                self._refuse(
                    conn,
                    408,
                    "Request Timeout",
                    f"the request did not arrive within {self.read_timeout:g} s",
                )
            elif conn.state in ("reading", "sending", "lingering"):
                self._close(conn)


def _waiting(conn: Conn) -> bool:
    """Whether the client has sent something the worker has not read yet (or closed)."""
    try:
        return bool(conn.sock.recv(1, socket.MSG_PEEK))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
