"""Reading requests off a connection: httptools (llhttp, Node's strict HTTP/1.1 parser in C)
is the one parser that decides where each request and its body begin and end.

A :class:`RequestReader` is fed whatever the socket gave, in any pieces, and collects whole
requests (:class:`Message`). On top of llhttp's own framing rules (one Content-Length of
digits only, no Transfer-Encoding with Content-Length, chunk sizes in hex, CRLF line ends,
no header without a colon, no control byte in the request line) it refuses what RFC 9112
section 6 lets a server refuse and a proxy in front might frame differently: a
Transfer-Encoding other than exactly ``chunked`` (501), Transfer-Encoding on HTTP/1.0,
trailer fields that would change how the request is routed or authorised. Every refusal
closes the connection: after a framing error nobody knows where the next request starts.
Refusal messages are fixed text: no byte the client sent is echoed or logged.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import httptools

MAX_HEAD = 64 * 1024  # request line and headers: past it, 431
MAX_TARGET = 8190  # the request target (path and query): past it, 414 (gunicorn's limit)
MAX_FIELD = 8190  # one header field, name and value: past it, 431 (gunicorn's limit)
MAX_HEADERS = 100  # header fields in one request: past it, 431

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


class Refused(Exception):
    """A request answered at once and the connection closed: status, reason, message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(status, reason, message)
        self.status, self.reason, self.message = status, reason, message


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
    """Feeds a connection's bytes to llhttp; whole requests gather in :attr:`done`."""

    __slots__ = (
        "_body",
        "_boundaries",
        "_head_len",
        "_headers",
        "_in_head",
        "_in_trailers",
        "_partial",
        "_url",
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
        self._boundaries = 0  # heads and messages completed: where counting restarts
        self._partial = 0  # bytes fed into a head that has not completed
        self._reset()

    def _reset(self) -> None:
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()
        self._in_head, self._in_trailers = True, False
        self._head_len = 0  # request line and headers so far, as llhttp handed them over
        self.started = False  # a byte of the next request has arrived

    @property
    def buffered(self) -> int:
        """Bytes held for the request still arriving (its body, mostly)."""
        return len(self._body) + self._head_len + self._partial

    def feed(self, data: bytes) -> None:
        """Parse what arrived; :class:`Refused` for a request answered at once."""
        boundaries = self._boundaries
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request is whole; what follows is another protocol. It is answered
            # over HTTP/1.1 and the connection is closed after it.
            if self.done:
                self.done[-1].upgrade = True
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, Refused):
                raise refusal from None
            raise
        except httptools.HttpParserError as exc:
            # llhttp's reason is fixed text (no request bytes in it).
            raise Refused(400, "Bad Request", f"the request is not valid HTTP/1.1: {exc}") from None
        if self._boundaries != boundaries:
            self._partial = 0
        elif self._in_head and self.started:
            # A head still incomplete (llhttp holds a header line that never ends): count it.
            self._partial += len(data)
            self._check_head_size(self._partial)

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
        self._url += url
        self._head_len += len(url)
        if len(self._url) > MAX_TARGET:
            raise Refused(414, "URI Too Long", f"the request target is above {MAX_TARGET:,} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_trailers:
            if name.lower() in FORBIDDEN_TRAILERS:
                raise Refused(400, "Bad Request", "a trailer field may not set this header")
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
        self._boundaries += 1
        version = self.parser.get_http_version()
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
                if name.lower() == b"content-length" and int(value) > self.max_body:
                    raise Refused(
                        413,
                        "Payload Too Large",
                        f"the request body is above the limit of {self.max_body:,} bytes",
                    )
        self._in_trailers = True  # header fields from now on are a chunked body's trailers
        self.continue_wanted = version == "1.1" and any(
            n.lower() == b"expect" and v.strip().lower() == b"100-continue"
            for n, v in self._headers
        )

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
        self.done.append(
            Message(
                parser.get_method().decode("ascii"),
                bytes(self._url),
                parser.get_http_version(),
                self._headers,
                bytes(self._body),
                parser.should_keep_alive(),
            )
        )
        self.continue_wanted = False
        self._boundaries += 1
        self._reset()
