"""The model console at / and /console: one page, its module and its stylesheet, served by
the service itself (no CDN, no build step). The page calls the public API with the key a
person pastes into it; the routes here are open, like /docs."""

from __future__ import annotations

from pathlib import Path

from service.errors import NotFound
from service.http.messages import Request, Response
from service.http.routing import Route
from service.protocols.native.codec import PROTOCOL
from service.protocols.serving import Serving

STATIC = Path(__file__).resolve().parent.parent / "static" / "console"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# Only the service's own files; images from the API arrive as data: URLs or blob: URLs.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' blob:; "
    "img-src 'self' data: blob:; media-src 'self' blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = (
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


def page(serving: Serving, request: Request) -> Response:
    """GET / and /console: the console page."""
    return Response(
        (STATIC / "index.html").read_bytes(),
        content_type="text/html; charset=utf-8",
        headers=(*_HEADERS, ("Content-Security-Policy", _POLICY)),
    )


def asset(serving: Serving, request: Request) -> Response:
    """GET /console/assets/{filename}: the page's module and stylesheet."""
    name = request.params["filename"]
    kind = _TYPES.get(Path(name).suffix)
    path = STATIC / name
    if kind is None or name.startswith(".") or "/" in name or not path.is_file():
        raise NotFound(f"no console file {name!r}")
    return Response(path.read_bytes(), content_type=kind, headers=_HEADERS)


ROUTES = [
    Route("GET", "/", page, PROTOCOL, None, None),
    Route("GET", "/console", page, PROTOCOL, None, None),
    Route("GET", "/console/assets/{filename}", asset, PROTOCOL, None, None),
]
