"""The model console at / and /console: one page, its module and its stylesheet, served by
the service itself (no CDN, no build step). The page calls the public API with the key a
person pastes into it; the routes here are open, like /docs."""

from __future__ import annotations

from pathlib import Path

from service.errors import NotFound
from service.http import pages
from service.http.messages import Request, Response
from service.http.routing import Route
from service.protocols.native.codec import PROTOCOL
from service.protocols.serving import Serving

STATIC = Path(__file__).resolve().parent.parent / "static" / "console"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# Images from the API arrive as data: or blob: URLs; the camera's stream is a blob: URL.
_POLICY = pages.policy(
    connect_src="'self' blob:", img_src="'self' data: blob:", media_src="'self' blob:"
)


def page(serving: Serving, request: Request) -> Response:
    """GET / and /console: the console page."""
    return pages.page((STATIC / "index.html").read_bytes(), _POLICY)


def asset(serving: Serving, request: Request) -> Response:
    """GET /console/assets/{filename}: the page's module and stylesheet."""
    name = request.params["filename"]
    kind = _TYPES.get(Path(name).suffix)
    path = STATIC / name
    if kind is None or name.startswith(".") or "/" in name or not path.is_file():
        raise NotFound(f"no console file {name!r}")
    return Response(path.read_bytes(), content_type=kind, headers=pages.HEADERS)


ROUTES = [
    Route("GET", "/", page, PROTOCOL, None, None),
    Route("GET", "/console", page, PROTOCOL, None, None),
    Route("GET", "/console/assets/{filename}", asset, PROTOCOL, None, None),
]
