"""The worker's event loop, driven turn by turn over loopback sockets (no gunicorn): the
receive budget is exact whatever the path, pipelining is bounded and fair, half-closes and
garbage after whole requests lose no answer, the app's bad answers are 500s, accept()
failures pause accepting, and a graceful stop answers what arrived."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import selectors
import socket
import struct
import time
from collections import deque
from types import SimpleNamespace

import httptools
import pytest

from service.http import worker as worker_module
from service.http.parser import MAX_QUEUED, SLICE
from service.http.worker import READ, ServingWorker

GET = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"


def app(env, start_response):
    """Echoes the path; /big answers 4 MiB; /euro and friends answer what HTTP cannot carry."""
    path = env["PATH_INFO"]
    body = env["wsgi.input"].read()
    if path == "/big":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x" * (4 << 20)]
    if path == "/sleep":
        time.sleep(0.3)
    if path == "/fail":
        raise RuntimeError("the app failed")
    bad = {
        "/euro": ("200 OK", [("X-A", "\u20ac")]),
        "/crlf": ("200 OK", [("X-A", "a\r\nX-Injected: yes")]),
        "/nul": ("200 OK", [("X-A", "a\x00b")]),
        "/status-crlf": ("200 OK\r\nX-Injected: yes", []),
        "/status-word": ("OK", []),
        "/status-101": ("101 Switching Protocols", []),
        "/name": ("200 OK", [("X A", "1")]),
        "/int": ("200 OK", [("X-A", 5)]),
    }
    status, headers = bad.get(path, ("200 OK", [("Content-Type", "text/plain")]))
    start_response(status, headers)
    return [path.encode() + b" " + str(len(body)).encode()]


class Loop:
    """A ServingWorker as gunicorn would have set it up, on a loopback listener."""

    def __init__(self, threads: int = 1, read_timeout: float = 5.0, write_timeout: float = 5.0):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        w = ServingWorker.__new__(ServingWorker)
        w.cfg = SimpleNamespace(worker_connections=100, graceful_timeout=2.0)
        w.log = logging.getLogger("test.worker")
        w.tmp = SimpleNamespace(notify=lambda: None)  # (the heartbeat file)
        w.sockets, w.wsgi, w.alive, w.nr, w.max_requests = [self.listener], app, True, 0, 1 << 30
        w.read_timeout, w.write_timeout, w.max_body = read_timeout, write_timeout, 8 << 20
        w.keepalive, w.threads, w.conns, w.buffered = 5.0, threads, {}, 0
        w.poller = selectors.DefaultSelector()
        w.pool = None
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            w.pool = ThreadPoolExecutor(threads)
        w.answered, w.pipelined = deque(), deque()
        w.accepting, w.accept_after = False, 0.0
        w.PIPE = os.pipe()
        for fd in w.PIPE:
            os.set_blocking(fd, False)
        w.poller.register(w.PIPE[0], READ, w._wake)
        self.listener.setblocking(False)
        w._accept_enabled(True)
        self.worker = w
        self.most_queued = 0
        self.clients: list[socket.socket] = []

    def turns(self, count: int = 1, until=None, timeout: float = 5.0) -> None:
        """Run turns, checking the budget after each: exact, never negative."""
        w, deadline = self.worker, time.monotonic() + timeout
        for _ in range(count) if until is None else iter(int, 1):
            w._turn(min(w._accept_gate(), 0.01))  # as run() turns
            held = sum(c.held for c in w.conns.values())
            assert w.buffered == held >= 0, (w.buffered, held)
            for conn in w.conns.values():
                assert conn.held == conn.reader.held
                self.most_queued = max(self.most_queued, len(conn.reader.done))
            assert len(set(map(id, w.pipelined))) == len(w.pipelined)  # no connection twice
            if until is not None and (until() or time.monotonic() > deadline):
                return

    def connect(self, rcvbuf: int = 0) -> socket.socket:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(self.address)
        sock.settimeout(0)
        self.clients.append(sock)
        self.turns(3)
        return sock

    def close(self) -> None:
        for sock in self.clients:
            sock.close()
        for conn in list(self.worker.conns.values()):
            self.worker._close(conn)
        if self.worker.pool is not None:
            self.worker.pool.shutdown()
        self.worker.poller.close()
        self.listener.close()
        for fd in self.worker.PIPE:
            os.close(fd)


@pytest.fixture
def loop():
    running = Loop()
    yield running
    running.close()


@pytest.fixture
def threaded():
    running = Loop(threads=4)
    yield running
    running.close()


def receive(loop: Loop, sock: socket.socket, until=lambda data: False, timeout=5.0) -> bytes:
    """What the worker sent, running its turns, until the connection closes (or until)."""
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline and not until(data):
        loop.turns(1)
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            return data + b"<EOF>"
        data += chunk
    return data


class Responses:
    """The responses in what the worker sent, read by llhttp: statuses and bodies."""

    def __init__(self, data: bytes) -> None:
        self.statuses: list[int] = []
        self.bodies: list[bytes] = []
        self._body = b""
        self._parser = httptools.HttpResponseParser(self)
        self._parser.feed_data(data.removesuffix(b"<EOF>"))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.statuses.append(self._parser.get_status_code())
        self.bodies.append(self._body)
        self._body = b""


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def settle(loop: Loop) -> None:
    """The clients hang up: the worker closes every connection, and holds nothing."""
    for sock in loop.clients:
        sock.close()
    loop.turns(until=lambda: not loop.worker.conns)
    assert not loop.worker.conns
    assert loop.worker.buffered == 0


# --- H2, H3: every byte counted is uncounted once, whatever the path --------------------------

PARTIAL_POST = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 50_000


def test_a_reset_while_answers_wait_to_be_sent_uncounts_the_partial_body(loop):
    sock = loop.connect(rcvbuf=4096)
    sock.setblocking(True)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n" + PARTIAL_POST)
    loop.turns(until=lambda: loop.worker.buffered >= 50_000)
    (conn,) = loop.worker.conns.values()
    assert conn.state in ("sending", "waiting", "reading")
    assert loop.worker.buffered >= 50_000  # held by the connection, counted
    reset(sock)
    settle(loop)


def test_a_refusal_after_a_reset_never_uncounts_twice(loop):
    sock = loop.connect()
    sock.setblocking(True)
    sock.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n40000\r\n")
    sock.sendall(b" " * 0x40000 + b"\r\n")
    loop.turns(until=lambda: loop.worker.buffered >= 0x40000)
    sock.sendall(b"ZZZ\r\n")  # a bad chunk line: refused, while the client resets
    reset(sock)
    settle(loop)


def test_a_write_timeout_uncounts_what_the_connection_held():
    loop = Loop(write_timeout=0.3)
    try:
        sock = loop.connect(rcvbuf=4096)
        sock.setblocking(True)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n" + PARTIAL_POST[:2000])
        loop.turns(until=lambda: not loop.worker.conns, timeout=3)
        settle(loop)
        sock.close()
    finally:
        loop.close()


def test_an_app_failure_and_a_closing_request_uncount_what_followed_them(loop):
    for first in (b"GET /fail HTTP/1.1\r\nHost: t\r\n\r\n", b"GET /a HTTP/1.0\r\n\r\n"):
        sock = loop.connect()
        sock.setblocking(True)
        sock.sendall(first + PARTIAL_POST)
        sock.settimeout(0)
        answer = Responses(receive(loop, sock))
        assert answer.statuses == ([500] if b"fail" in first else [200])
        settle(loop)
        sock.close()


def test_a_read_timeout_uncounts_the_request_it_refuses():
    loop = Loop(read_timeout=0.3)
    try:
        sock = loop.connect()
        sock.sendall(PARTIAL_POST)
        answer = Responses(receive(loop, sock))
        assert answer.statuses == [408]
        settle(loop)
        sock.close()
    finally:
        loop.close()


def test_a_reset_while_a_thread_answers_uncounts_what_followed(threaded):
    sock = threaded.connect()
    sock.setblocking(True)
    sock.sendall(b"GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n" + PARTIAL_POST)
    threaded.turns(until=lambda: threaded.worker.buffered >= 50_000)
    reset(sock)
    time.sleep(0.4)
    settle(threaded)


# --- H1: pipelining is bounded and fair ----------------------------------------------------------


def test_a_pipelining_flood_queues_a_bounded_number_of_requests(loop):
    flooder = loop.connect()
    flooder.setblocking(True)
    flooder.settimeout(0.02)
    for _ in range(80):  # ~5 MB offered, the responses never read
        with contextlib.suppress(TimeoutError, BlockingIOError):
            flooder.send(GET * 2000)
        loop.turns(1)
    (conn,) = loop.worker.conns.values()
    # Parsing stops ahead of the answers: at most MAX_QUEUED whole requests and one slice's
    # worth of tiny ones wait, and what is unparsed is at most one read.
    assert loop.most_queued >= MAX_QUEUED  # (the flood was read: requests queued)
    assert loop.most_queued <= MAX_QUEUED + SLICE // len(GET)
    assert conn.reader.pending <= worker_module.READ_SIZE
    assert loop.worker.buffered <= worker_module.READ_SIZE + SLICE
    other = loop.connect()
    other.sendall(b"GET /other HTTP/1.1\r\nHost: t\r\n\r\n")
    started = loop.worker.nr
    answer = receive(loop, other, until=lambda data: b"/other 0" in data)
    assert answer.endswith(b"/other 0")
    # the other client waited a few turns, not for the flooder's thousands of requests
    assert loop.worker.nr - started < 50
    reset(flooder)
    other.close()
    settle(loop)


def test_pipelined_connections_take_turns_one_request_each(loop):
    first, second = loop.connect(), loop.connect()
    first.sendall(GET * 10)
    second.sendall(GET.replace(b"/a", b"/b") * 10)
    loop.turns(1)
    order = []
    original = loop.worker._next

    def record(conn):
        order.append(conn.sock.getpeername())
        original(conn)

    loop.worker._next = record
    loop.turns(8)
    assert len(order) >= 8
    assert all(a != b for a, b in itertools.pairwise(order))  # turns alternate


# --- M5, M6: what arrived whole is answered -------------------------------------------------------


def test_a_half_close_after_pipelining_answers_every_request(loop):
    sock = loop.connect()
    sock.sendall(GET + GET.replace(b"/a", b"/b") + GET.replace(b"/a", b"/c") + GET * 2)
    sock.shutdown(socket.SHUT_WR)
    data = receive(loop, sock)
    assert data.endswith(b"<EOF>")
    assert Responses(data).bodies == [b"/a 0", b"/b 0", b"/c 0", b"/a 0", b"/a 0"]
    settle(loop)


@pytest.mark.parametrize(
    ("data", "statuses", "bodies"),
    [
        (GET + b"BLAH\r\n\r\n", [200, 400], [b"/a 0"]),
        (GET * 2 + b"GET / HTTP/1.1\r\nHost t\r\n\r\n", [200, 200, 400], [b"/a 0"] * 2),
        (b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" + GET, [200], [b"/c 0"]),
        (b"GET /c HTTP/1.0\r\n\r\n" + GET, [200], [b"/c 0"]),
        (b"GET /c HTTP/1.0\r\n\r\nBLAH\r\n\r\n", [200], [b"/c 0"]),
    ],
    ids=["garbage", "two-then-garbage", "close-then-more", "http-1.0-then-more", "1.0-garbage"],
)
def test_whole_requests_are_answered_before_what_follows_them(loop, data, statuses, bodies):
    sock = loop.connect()
    sock.sendall(data)
    answer = Responses(receive(loop, sock))
    assert answer.statuses == statuses
    assert answer.bodies[: len(bodies)] == bodies
    if statuses[-1] == 400:
        assert json.loads(answer.bodies[-1])["error"]["code"] == "bad_request"
    settle(loop)


def test_a_post_carrying_upgrade_has_its_body_read(loop):
    for framing, body in (
        (b"Content-Length: 5\r\n\r\n", b"hello"),
        (b"Transfer-Encoding: chunked\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    ):
        sock = loop.connect()
        sock.sendall(
            b"POST /up HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n" + framing + body + GET
        )
        answer = Responses(receive(loop, sock))
        assert answer.bodies == [b"/up 5"]  # answered (HTTP/1.1), then closed
        settle(loop)


# --- M1, M2, L2: what the app answers that HTTP/1.1 cannot carry is a 500 ------------------------


@pytest.mark.parametrize(
    "path",
    ["/euro", "/crlf", "/nul", "/status-crlf", "/status-word", "/status-101", "/name", "/int"],
)
def test_an_answer_http_cannot_carry_is_a_500_and_the_worker_goes_on(loop, path):
    sock = loop.connect()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = receive(loop, sock)
    assert b"Injected" not in data
    answer = Responses(data)
    assert answer.statuses == [500]
    assert json.loads(answer.bodies[0])["error"] == {
        "code": "internal_server_error",
        "message": "internal error",
    }
    again = loop.connect()
    again.sendall(GET)
    assert receive(loop, again, until=lambda d: d.endswith(b"/a 0")).endswith(b"/a 0")
    settle(loop)


# --- M8: accept() out of descriptors pauses accepting ---------------------------------------------


class _Exhausted:
    def accept(self):
        raise OSError(errno.EMFILE, "Too many open files")


def test_accept_out_of_descriptors_pauses_accepting_and_never_raises(loop):
    loop.worker._accept(_Exhausted(), READ)
    assert not loop.worker.accepting
    assert loop.worker.accept_after > time.monotonic()
    sock = socket.create_connection(loop.address)  # waits in the backlog meanwhile
    loop.clients.append(sock)
    sock.sendall(GET)
    loop.worker.accept_after = time.monotonic()  # the pause is over
    loop.worker._accept_enabled(True)
    sock.settimeout(0)
    assert receive(loop, sock, until=lambda d: d.endswith(b"/a 0")).endswith(b"/a 0")


# --- M4: a graceful stop answers what arrived, closes the listener, ends in time ------------------


def test_a_burst_of_connections_is_taken_one_at_a_time_with_a_pause_between(loop):
    """Eight clients connecting at once: a worker with few connections takes one, then
    pauses ACCEPT_PAUSE_S (in which other workers take theirs), then the next; all are
    answered."""
    w = loop.worker
    socks = [socket.create_connection(loop.address) for _ in range(8)]
    taken = []
    deadline = time.monotonic() + 5
    while len(w.conns) < 8 and time.monotonic() < deadline:
        before = len(w.conns)
        w._turn(min(w._accept_gate(), 0.01))
        if len(w.conns) > before:
            taken.append((time.monotonic(), len(w.conns) - before))
    assert len(w.conns) == 8
    assert [n for _, n in taken] == [1] * 8  # one a turn
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(taken)]
    assert min(gaps) >= worker_module.ACCEPT_PAUSE_S * 0.9
    for sock in socks:
        sock.sendall(GET)
    loop.turns(10)
    for sock in socks:
        sock.settimeout(2)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.close()


def test_a_graceful_stop_answers_what_arrived_and_ends_in_time(loop):
    kept_alive = loop.connect()
    kept_alive.sendall(GET)
    assert receive(loop, kept_alive, until=lambda d: d.endswith(b"/a 0"))
    idle = loop.connect()
    stalled = loop.connect()
    stalled.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
    loop.turns(2)
    kept_alive.sendall(GET.replace(b"/a", b"/b") + GET.replace(b"/a", b"/c"))  # not yet read
    loop.worker.alive = False
    started = time.monotonic()
    loop.worker._stop()
    took = time.monotonic() - started
    # The stalled upload held the stop up to 90% of graceful_timeout, not past it.
    assert 0.9 * 2.0 - 0.3 < took < 2.0
    kept_alive.settimeout(1)
    data = b""
    while chunk := kept_alive.recv(65536):
        data += chunk
    answer = Responses(data)
    assert answer.bodies == [b"/b 0", b"/c 0"]  # both answered, the last one closing
    assert b"Connection: close" in data.split(b"/b 0")[1]
    idle.settimeout(1)
    assert idle.recv(10) == b""  # the idle one closed, nothing lost
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(loop.address, timeout=1)
    assert loop.worker.buffered == 0
    loop.worker.poller = selectors.DefaultSelector()  # (closed by _stop; the fixture closes it)
