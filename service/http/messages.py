"""HTTP requests and responses as the dispatcher hands them to a route (WSGI, no framework).

A :class:`Request` reads what a handler asks for, when it asks: the query string (parsed as
werkzeug does: first value wins, UTF-8), headers, and the body with every limit applied in
one place: a declared length above the limit is refused before reading, a chunked body is
read up to the limit, a short body is a 400, a ``Content-Encoding: gzip|deflate`` body is
inflated up to the same limit.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from typing import Any
from urllib.parse import parse_qsl

import orjson

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

_READ_CHUNK = 1 << 16
# A part's Content-Disposition header, and a field name in it (not the "name=" of filename=).
_DISPOSITION = re.compile(rb"(?im)^content-disposition:([^\r\n]*)")
_FIELD_NAME = re.compile(rb"(?i)\bform-data\b.*(?:^|;)\s*name\s*=")
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

    def form(self) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
        """A multipart body's fields (first value wins) and its files as (description, bytes)."""
        from werkzeug.formparser import parse_form_data

        body = self.body()
        for disposition in _DISPOSITION.findall(body):
            if not _FIELD_NAME.search(disposition):
                raise BadRequest(
                    "a multipart part has no field name: each part needs "
                    "'Content-Disposition: form-data; name=\"...\"'"
                )
        environ = {
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": self.environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        try:
            _, fields, files = parse_form_data(environ, silent=False)
        except Exception as exc:  # werkzeug's parser errors: a malformed multipart body
            raise BadRequest(f"the multipart body could not be parsed: {exc}") from None
        uploads = []
        for field, upload in files.items(multi=True):
            try:
                uploads.append((f"file {upload.filename or field or '(unnamed)'!r}", upload.read()))
            finally:
                upload.close()  # werkzeug spools each part to a temporary file
        return fields.to_dict(), uploads


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


def byte_count(text: str, what: str) -> int:
    """A header's count of bytes: ASCII digits only (at most 18, no sign, no spaces); any
    other spelling is a 400 that names the header."""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise BadRequest(f"{what} {text[:40]!r} is not a number of bytes")
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
            f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or identity"
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
