"""HTTP requests and responses as the dispatcher hands them to a route (WSGI, no framework).

A :class:`Request` reads what a handler asks for, when it asks: the query string (parsed as
werkzeug does: first value wins, UTF-8), headers, and the body with every limit applied in
one place: a declared length above the limit is refused before reading, a chunked body is
read up to the limit, a short body is a 400, a ``Content-Encoding: gzip|deflate`` body is
inflated up to the same limit.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any
from urllib.parse import parse_qsl

import orjson
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

_READ_CHUNK = 1 << 16
# RFC 2046's boundary characters, the last not a space. werkzeug looks for the boundary at
# each "--" of the body, so a long one of dashes over a body of dashes costs body x boundary:
# 1,000 dashes, 0.3 s per 400 KB (6 s for 8 MiB); 200, 0.07 s. RFC 2046 allows 70, but
# werkzeug's own test client writes up to 72.
_BOUNDARY_CHARS = frozenset(
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=? "
)
_MAX_BOUNDARY = 200
# Integer keys (a validation error's index into a list) become strings, as json.dumps does.
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class Request:
    """One request: method, path, the route's path parameters, request id; body on demand."""

    __slots__ = ("_body", "_query", "environ", "id", "max_body", "method", "params", "path")

    def __init__(
        self,
        environ: dict[str, Any],
        method: str,
        path: str,
        params: dict[str, str],
        request_id: str,
        max_body: int,
    ) -> None:
        self.environ, self.method, self.path, self.params = environ, method, path, params
        self.id, self.max_body = request_id, max_body
        self._body: bytes | None = None
        self._query: dict[str, str] | None = None

    def header(self, name: str, default: str = "") -> str:
        """A request header by its HTTP name, e.g. ``Inference-Header-Content-Length``."""
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return self.environ.get(key, default)
        return self.environ.get("HTTP_" + key, default)

    @property
    def mimetype(self) -> str:
        """The Content-Type without parameters, lower case ('' when none was sent)."""
        return self.environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()

    def query(self) -> dict[str, str]:
        """The query string as werkzeug's ``request.args.to_dict()`` has it."""
        if self._query is None:
            self._query = query_options(self.environ.get("QUERY_STRING", ""))
        return self._query

    def body(self) -> bytes:
        """The whole body, decoded from its Content-Encoding, within ``max_body`` bytes."""
        if self._body is None:
            self._body = _decode(
                read_body(self.environ, self.max_body),
                self.header("Content-Encoding"),
                self.max_body,
            )
        return self._body

    def form(self, max_parts: int, why: str = "") -> tuple[dict[str, str], list[tuple[str, bytes]]]:
        """A multipart body's fields (first value wins) and its files as (description,
        bytes), parsed by werkzeug's multipart decoder; more than ``max_parts`` parts is a
        413 (``why`` says where the number comes from)."""
        boundary = _boundary(self.environ.get("CONTENT_TYPE", ""))
        decoder = MultipartDecoder(boundary, max_parts=max_parts)
        decoder.receive_data(self.body())
        decoder.receive_data(None)
        fields: dict[str, str] = {}
        files: list[tuple[str, bytes]] = []
        part: Field | File | None = None
        chunks: list[bytes] = []
        try:
            while not isinstance(event := decoder.next_event(), Epilogue):
                if isinstance(event, Field | File):
                    kind = parse_options_header(event.headers["content-disposition"])[0]
                    if event.name is None or kind.lower() != "form-data":
                        raise BadRequest(
                            "a multipart part has no field name: each part needs "
                            "'Content-Disposition: form-data; name=\"...\"'"
                        )
                    part, chunks = event, []
                elif isinstance(event, Data) and part is not None:
                    chunks.append(event.data)
                    if event.more_data:
                        continue
                    value = b"".join(chunks)
                    if isinstance(part, File):
                        files.append((f"file {part.filename or part.name or '(unnamed)'!r}", value))
                    else:
                        fields.setdefault(part.name, value.decode("utf-8", "replace"))
        except RequestEntityTooLarge:
            raise PayloadTooLarge(
                f"the multipart body has more than {max_parts:,} parts{why}",
                details={"max_parts": max_parts},
            ) from None
        except ValueError as exc:  # werkzeug's: a malformed or truncated multipart body
            raise BadRequest(f"the multipart body could not be parsed: {exc}") from None
        return fields, files


def _boundary(content_type: str) -> bytes:
    """The multipart boundary of a Content-Type: RFC 2046's characters, at most 200."""
    boundary = parse_options_header(content_type)[1].get("boundary", "")
    if (
        not 0 < len(boundary) <= _MAX_BOUNDARY
        or not _BOUNDARY_CHARS.issuperset(boundary)
        or boundary.endswith(" ")
    ):
        raise BadRequest(
            f"the multipart Content-Type needs a boundary of 1 to {_MAX_BOUNDARY} characters: "
            "letters, digits, spaces (not last) and '()+_,-./:=? (RFC 2046)"
        )
    return boundary.encode("ascii")


class Response:
    """What a handler returns; ``model`` (the name and version that answered) and
    ``instances`` are for the access log."""

    __slots__ = ("body", "content_type", "headers", "instances", "model", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        content_type: str = "application/json",
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        model: tuple[str, int] | None = None,
        instances: int | None = None,
    ) -> None:
        self.body, self.status, self.content_type = body, status, content_type
        self.headers, self.model, self.instances = headers, model, instances


def json_response(payload: Any, status: int = 200, **kwargs: Any) -> Response:
    """A JSON response (orjson: numpy scalars and arrays serialize directly)."""
    return Response(orjson.dumps(payload, option=_JSON_OPTIONS), status, **kwargs)


def query_options(query_string: str) -> dict[str, str]:
    """Parse a query string: first value wins, bytes read as UTF-8 (WSGI hands latin-1)."""
    if not query_string:
        return {}
    if not query_string.isascii():
        query_string = query_string.encode("latin-1").decode("utf-8", "replace")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True, errors="replace"):
        options.setdefault(key, value)
    return options


# What an error message may repeat of a header's value: one token (RFC 9110's tchar, and "/"
# for a media type) of at most 64 characters. A value with a space, comma or colon may hold
# another header a broken client or proxy folded into it, an API key's included.
_QUOTABLE = frozenset(
    "!#$%&'*+-.^_`|~/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def quoted(value: str) -> str:
    """A header value for an error message: quoted when it is one short token, else only
    its length ("of 80 characters")."""
    if value and len(value) <= 64 and _QUOTABLE.issuperset(value):
        return repr(value)
    return f"of {len(value)} characters"


def byte_count(text: str, what: str) -> int:
    """A header's count of bytes: ASCII digits only (at most 18, no sign, no spaces); any
    other spelling is a 400 that names the header."""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise BadRequest(f"{what} {quoted(text)} is not a number of bytes")
    return int(text)


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The raw body: by Content-Length, or to the end of a chunked upload; 413 above limit."""
    length = environ.get("CONTENT_LENGTH", "")
    stream = environ.get("wsgi.input")
    if length:
        size = byte_count(length, "Content-Length")
        if size > limit:
            raise PayloadTooLarge.over(limit)
        if size == 0:
            return b""
        data = _read(stream, size)
        if len(data) != size:
            raise BadRequest(f"the request body ended after {len(data):,} of {size:,} bytes")
        return data
    if stream is None or not environ.get("wsgi.input_terminated"):
        return b""  # no length and not chunked: no body
    parts, total = [], 0
    while True:
        chunk = _read(stream, _READ_CHUNK)
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge.over(limit)
        parts.append(chunk)


def _read(stream: Any, size: int) -> bytes:
    try:
        return stream.read(size)
    except Exception as exc:  # the server's parser: bad chunk framing, a dropped connection
        raise BadRequest(f"the request body could not be read: {type(exc).__name__}") from None


def _decode(data: bytes, encoding: str, limit: int) -> bytes:
    """Undo a Content-Encoding (gzip, deflate), never inflating beyond ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS if data[:1] == b"\x78" else -zlib.MAX_WBITS  # zlib or raw
    else:
        raise UnsupportedMediaType(
            f"Content-Encoding {quoted(encoding)} is not supported; send gzip, deflate or identity"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the {encoding} body could not be decompressed: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(
            f"the decompressed request body is above the limit of {limit:,} bytes"
        )
    if not inflater.eof:
        raise BadRequest(f"the {encoding} body is truncated")
    return out


def compress(body: bytes, accept_encoding: str) -> tuple[bytes, str | None]:
    """(body, encoding): gzip or deflate when the client accepts it, else unchanged."""
    accepted = set()
    for token in accept_encoding.lower().split(","):
        coding, _, params = token.partition(";")
        quality = params.replace(" ", "").removeprefix("q=")
        try:
            if quality and float(quality) <= 0:
                continue  # q=0: not acceptable
        except ValueError:
            continue
        accepted.add(coding.strip())
    if "gzip" in accepted:
        return gzip.compress(body, 6, mtime=0), "gzip"
    if "deflate" in accepted:
        return zlib.compress(body, 6), "deflate"
    return body, None
