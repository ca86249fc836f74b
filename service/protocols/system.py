"""What operators and browsers read: /metrics, /openapi.json and Swagger UI at /docs."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from swagger_ui_bundle import swagger_ui_path

from service import metrics
from service.errors import NotFound, ServiceUnavailable
from service.http import pages
from service.http.messages import Request, Response
from service.http.routing import Route
from service.protocols.native.codec import PROTOCOL
from service.protocols.serving import Serving

ASSETS = Path(swagger_ui_path)
_PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Keras classifier serving: API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/docs-init.js"></script>
</body>
</html>
"""
# Swagger UI's start-up, served as a file (not inline) so a strict CSP can allow 'self' only;
# no validator badge (an image from validator.swagger.io, which would see the page's URL).
_INIT = b"""window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
  deepLinking: true, tryItOutEnabled: true, validatorUrl: null});
"""
# Swagger UI draws its icons from data: URLs in its CSS, and "Try it out" shows an image
# response as a blob: URL; scripts and styles stay 'self' only (React sets styles through
# the DOM, which a policy does not stop).
_POLICY = pages.policy(img_src="'self' data: blob:")


def scrape(serving: Serving, request: Request) -> Response:
    """GET /metrics: every metric of every live and dead worker, built fresh per scrape;
    503 when the numbers cannot be trusted (the metrics folder failed)."""
    if metrics.unavailable():
        raise ServiceUnavailable(f"metrics unavailable: {metrics.unavailable()}")
    body, content_type = metrics.exposition(serving.registry.keeps_series())
    return Response(body, content_type=content_type)


def openapi(serving: Serving, request: Request) -> Response:
    """GET /openapi.json: the document generated from the route table."""
    return Response(serving.openapi)


def docs(serving: Serving, request: Request) -> Response:
    """GET /docs: Swagger UI, its assets served locally (no CDN), never framed."""
    return pages.page(_PAGE, _POLICY)


def asset(serving: Serving, request: Request) -> Response:
    """GET /docs/assets/{filename}: Swagger UI's files."""
    name = request.params["filename"]
    if name == "docs-init.js":
        return Response(_INIT, content_type="text/javascript; charset=utf-8")
    path = ASSETS / name
    if name.startswith(".") or "\\" in name or not path.is_file():
        raise NotFound(f"no asset {name!r}")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return Response(
        path.read_bytes(),
        content_type=content_type,
        headers=(("Cache-Control", "public, max-age=86400"), ("X-Content-Type-Options", "nosniff")),
    )


ROUTES = [
    Route(
        "GET",
        "/metrics",
        scrape,
        PROTOCOL,
        {
            "tags": ["operations"],
            "summary": "Prometheus metrics, summed over gunicorn's workers",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        },
        "metrics",
    ),
    Route("GET", "/openapi.json", openapi, PROTOCOL, None, None),
    Route("GET", "/docs", docs, PROTOCOL, None, None),
    Route("GET", "/docs/assets/{filename}", asset, PROTOCOL, None, None),
]
