"""Reading requests off a connection: httptools (llhttp, Node's strict HTTP/1.1 parser in C)
is the one parser that decides where each request and its body begin and end.

A :class:`RequestReader` is fed whatever the socket gave, in any pieces, and collects whole
requests (:class:`Message`). On top of llhttp's own framing rules (one Content-Length of
digits only, no Transfer-Encoding with Content-Length, chunk sizes in hex, CRLF line ends,
no header without a colon, no control byte in the request line) it refuses what RFC 9112
section 6 lets a server refuse and a proxy in front might frame differently: a
Transfer-Encoding other than exactly ``chunked`` (501), Transfer-Encoding on HTTP/1.0,
trailer fields that would change how the request is routed or authorised, trailers past the
head's caps, versions other than HTTP/1.1 and 1.0 (505). Every refusal closes the connection:
after a framing error nobody knows where the next request starts (the whole requests before
it are answered first). Refusal messages are fixed text: no byte the client sent is echoed
or logged. ``Upgrade`` is ignored (RFC 9110 section 7.8): a body is read as framed, the
request answered over HTTP/1.1, and the connection closed after it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import httptools

MAX_HEAD = 64 * 1024  # request line and headers (and, apart, a chunked body's trailers): 431
MAX_TARGET = 8190  # the request target (path and query): past it, 414 (gunicorn's limit)
MAX_FIELD = 8190  # one header field, name and value: past it, 431 (gunicorn's limit)
MAX_HEADERS = 100  # header fields in one request (and trailer fields): past it, 431
MAX_QUEUED = 16  # whole requests parsed ahead of their answers: past it, parsing pauses
SLICE = 4096  # bytes parsed at a time (except a body of known length): one slice of tiny
# pipelined requests is what parsing can run ahead of MAX_QUEUED, about 200 of them

# Trailer fields a chunked body may not carry (RFC 9110 section 6.5.1): framing, routing,
# authentication and the fields this service reads. Other trailers are read and dropped.
FORBIDDEN_TRAILERS = frozenset(
    {
        b"authorization",
        b"connection",
        b"content-encoding",
        b"content-length",
        b"content-type",
        b"cookie",
        b"expect",
        b"host",
        b"inference-header-content-length",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"x-api-key",
        b"x-request-id",
    }
)


_TRAILERS_TOO_LARGE = (
    431,
    "Request Header Fields Too Large",
    f"the trailer fields are above {MAX_HEAD:,} bytes or {MAX_HEADERS} fields",
)


class Refused(Exception):
    """A request answered at once and the connection closed: status, reason, message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(status, reason, message)
        self.status, self.reason, self.message = status, reason, message


class _Stop(Exception):
    """A request after which the connection closes has ended: nothing after it is read."""


@dataclass(slots=True)
class Message:
    """One whole request as it arrived (the body already de-chunked by llhttp)."""

    method: str
    target: bytes  # the request target as sent: path and query
    version: str  # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool  # what HTTP/1.x says about this connection after the answer
    upgrade: bool = False  # the client asked to switch protocols: answered, then closed


class RequestReader:
    """Feeds a connection's bytes to llhttp; whole requests gather in :attr:`done` (at most
    about :data:`MAX_QUEUED`: the rest of what arrived waits, unparsed, for :meth:`resume`).

    Once a request after which the connection closes has ended (``Connection: close``,
    HTTP/1.0, an upgrade), or a request was refused, nothing more is parsed: :attr:`closed`.
    """

    __slots__ = (
        "_body",
        "_boundaries",
        "_chunk_open",
        "_head_len",
        "_headers",
        "_in_head",
        "_in_trailers",
        "_length",
        "_partial",
        "_pending",
        "_queued",
        "_reframe",
        "_synthetic",
        "_trailer_len",
        "_trailers",
        "_upgraded",
        "_url",
        "closed",
        "continue_wanted",
        "done",
        "max_body",
        "parser",
        "started",
    )

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.parser = httptools.HttpRequestParser(self)
        self.done: deque[Message] = deque()
        self.continue_wanted = False  # an HTTP/1.1 client waits for "100 Continue"
        self.closed = False  # nothing more is parsed on this connection
        self._boundaries = 0  # heads and messages completed: where counting restarts
        self._partial = 0  # bytes fed into a head (or trailers) that has not completed
        self._pending = memoryview(b"")  # what arrived and is not parsed yet
        self._queued = 0  # body bytes of the requests in done
        self._synthetic = False  # feeding the head that re-frames an upgrade's body
        self._reset()

    def _reset(self) -> None:
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()
        self._in_head, self._in_trailers = True, False
        self._head_len = 0  # request line and headers so far, as llhttp handed them over
        self._length: int | None = None  # the Content-Length of the body arriving
        self._chunk_open = False  # between a chunk's size line and its end (or trailers')
        self._trailer_len = self._trailers = 0
        self._reframe: bytes | None = None  # an upgrade's body, framed as the client said
        self._upgraded: tuple[str, bytes, str, list[tuple[bytes, bytes]]] | None = None
        self.started = False  # a byte of the next request has arrived

    @property
    def buffered(self) -> int:
        """Bytes held for the request still arriving (its body, mostly)."""
        return len(self._body) + self._head_len + self._partial

    @property
    def held(self) -> int:
        """Every byte this connection holds: the request arriving, what is not parsed yet,
        the bodies of the whole requests waiting for their answers."""
        return len(self._body) + self._head_len + self._partial + len(self._pending) + self._queued

    @property
    def pending(self) -> int:
        """Bytes that arrived and wait, unparsed, for :meth:`resume`."""
        return len(self._pending)

    def feed(self, data: bytes) -> None:
        """Parse what arrived; :class:`Refused` for a request answered at once (the whole
        requests before it stay in :attr:`done`)."""
        if self.closed:
            return  # after the last request: not read
        self._pending = memoryview(bytes(self._pending) + data if self._pending else data)
        self.resume()

    def resume(self) -> None:
        """Parse what waits, while fewer than :data:`MAX_QUEUED` requests wait answers."""
        view, position, done = self._pending, 0, self.done
        try:
            while position < len(view) and len(done) < MAX_QUEUED and not self.closed:
                size = SLICE
                if self._length is not None and not self._in_head:
                    size = max(size, self._length - len(self._body))  # to the body's end
                position += self._feed_piece(view[position : position + size])
        except BaseException:
            self.close(keep_done=True)
            raise
        self._pending = view[position:] if not self.closed else memoryview(b"")

    def pop(self) -> Message:
        """The next whole request, out of :attr:`done`."""
        message = self.done.popleft()
        self._queued -= len(message.body)
        return message

    def close(self, keep_done: bool = False) -> None:
        """Parse nothing more; let go of everything held (but the whole requests, if kept)."""
        self.closed = True
        self._pending = memoryview(b"")
        self._reset()
        self._partial = 0
        self.continue_wanted = False
        if not keep_done:
            self.done.clear()
            self._queued = 0

    def _feed_piece(self, piece: memoryview) -> int:
        """Parse one piece; how many of its bytes were HTTP/1.1 (all, but after an upgrade)."""
        boundaries, body = self._boundaries, len(self._body)
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade as upgrade:
            return self._upgrade(upgrade.args[0])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Stop):
                self.close(keep_done=True)
                return len(piece)
            if isinstance(cause, Refused):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            # llhttp's reason is fixed text (no request bytes in it).
            raise Refused(400, "Bad Request", f"the request is not valid HTTP/1.1: {exc}") from None
        if self._boundaries != boundaries or len(self._body) != body:
            self._partial = 0
        elif self.started and (self._in_head or self._chunk_open):
            # A head (or a chunked body's trailers) still incomplete: llhttp holds its last
            # line whole, so it is counted as it arrives.
            self._partial += len(piece)
            if self._in_head:
                self._check_head_size(self._partial)
            elif self._partial > MAX_HEAD:
                raise Refused(*_TRAILERS_TOO_LARGE)
        return len(piece)

    def _upgrade(self, offset: int) -> int:
        if self._upgraded is None:  # no body: what follows is another protocol, never read
            self.close(keep_done=True)
            return offset
        # A body follows. The server never switches protocols (RFC 9110 section 7.8 lets it
        # ignore Upgrade), so the body is read as framed: llhttp, told the framing the
        # client declared (already checked), reads it with a fresh parser.
        self.parser = httptools.HttpRequestParser(self)
        self._synthetic = True
        try:
            self.parser.feed_data(self._reframe or b"")
        finally:
            self._synthetic = False
        return offset

    @staticmethod
    def _check_head_size(size: int) -> None:
        if size > MAX_HEAD:
            raise Refused(
                431,
                "Request Header Fields Too Large",
                f"the request line and headers are above {MAX_HEAD:,} bytes",
            )

    # --- llhttp callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.started = True

    def on_url(self, url: bytes) -> None:
        if self._synthetic:
            return
        self._url += url
        self._head_len += len(url)
        if len(self._url) > MAX_TARGET:
            raise Refused(414, "URI Too Long", f"the request target is above {MAX_TARGET:,} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._synthetic:
            return
        if self._in_trailers:
            if name.lower() in FORBIDDEN_TRAILERS:
                raise Refused(400, "Bad Request", "a trailer field may not set this header")
            self._trailer_len += len(name) + len(value) + 4
            self._trailers += 1
            if self._trailer_len > MAX_HEAD or self._trailers > MAX_HEADERS:
                raise Refused(*_TRAILERS_TOO_LARGE)
            return  # other trailers: read, not passed on
        self._headers.append((name, value))
        self._head_len += len(name) + len(value) + 4
        self._check_head_size(self._head_len)
        if len(name) + len(value) > MAX_FIELD:
            raise Refused(
                431,
                "Request Header Fields Too Large",
                f"a header field is above {MAX_FIELD:,} bytes",
            )
        if len(self._headers) > MAX_HEADERS:
            raise Refused(
                431,
                "Request Header Fields Too Large",
                f"the request has more than {MAX_HEADERS} header fields",
            )

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_trailers = True  # header fields from now on are a chunked body's trailers
        if self._synthetic:
            return
        self._boundaries += 1
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise Refused(
                505, "HTTP Version Not Supported", "the server speaks HTTP/1.1 and HTTP/1.0"
            )
        encodings = [v for n, v in self._headers if n.lower() == b"transfer-encoding"]
        if encodings:
            if version != "1.1":
                raise Refused(400, "Bad Request", "Transfer-Encoding is not allowed in HTTP/1.0")
            if len(encodings) > 1 or encodings[0].strip().lower() != b"chunked":
                raise Refused(
                    501, "Not Implemented", "the only Transfer-Encoding accepted is chunked"
                )
        else:
            for name, value in self._headers:
                if name.lower() == b"content-length":
                    self._length = int(value)
                    if self._length > self.max_body:
                        raise Refused(
                            413,
                            "Payload Too Large",
                            f"the request body is above the limit of {self.max_body:,} bytes",
                        )
        self.continue_wanted = version == "1.1" and any(
            n.lower() == b"expect" and v.strip().lower() == b"100-continue"
            for n, v in self._headers
        )
        if parser.should_upgrade() and parser.get_method() != b"CONNECT":
            # httptools has llhttp skip the body of an upgrade: read it anyway (_upgrade).
            if encodings:
                self._reframe = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            elif self._length:
                self._reframe = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % self._length

    def on_chunk_header(self) -> None:
        self._chunk_open = True

    def on_chunk_complete(self) -> None:
        self._chunk_open = False

    def on_body(self, body: bytes) -> None:
        self._body += body
        if len(self._body) > self.max_body:
            raise Refused(
                413,
                "Payload Too Large",
                f"the request body is above the limit of {self.max_body:,} bytes",
            )

    def on_message_complete(self) -> None:
        parser = self.parser
        if self._reframe is not None and self._upgraded is None:
            # An upgrade whose body llhttp skipped: the request goes on (see _upgrade).
            method = parser.get_method().decode("ascii")
            self._upgraded = (method, bytes(self._url), parser.get_http_version(), self._headers)
            return
        if self._upgraded is not None:
            method, target, version, headers = self._upgraded
            keep_alive, upgrade = False, True
        else:
            method, target = parser.get_method().decode("ascii"), bytes(self._url)
            version, headers = parser.get_http_version(), self._headers
            keep_alive, upgrade = parser.should_keep_alive(), parser.should_upgrade()
        body = bytes(self._body)
        self.done.append(Message(method, target, version, headers, body, keep_alive, upgrade))
        self._queued += len(body)
        self.continue_wanted = False
        self._boundaries += 1
        self._reset()
        if upgrade or not keep_alive:
            raise _Stop  # what follows is not read (llhttp would refuse it, or another protocol)
