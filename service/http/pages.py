"""The HTML pages the service serves itself (the console at /, Swagger UI at /docs): one
Content-Security-Policy and one set of browser headers for both.

A page may load only the service's own files and call only the service's own API; it sets
no ``<base>``, posts no form, and is never shown inside another site's frame
(``frame-ancestors 'none'``, with ``X-Frame-Options: DENY`` for browsers older than CSP 2):
a framed page with a key pasted into it is the clickjacking case.
"""

from __future__ import annotations

from service.http.messages import Response

_BASE = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "connect-src": "'self'",
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'none'",
}
# What the page's own files get too: revalidated each time, never sniffed, no Referer sent.
HEADERS = (
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


def policy(**sources: str) -> str:
    """The base policy with some directives' sources replaced (``img_src="'self' data:"``
    for ``img-src``); a directive the base lacks is added."""
    directives = {**_BASE, **{name.replace("_", "-"): v for name, v in sources.items()}}
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def page(body: bytes, csp: str) -> Response:
    """An HTML page under ``csp`` (one of :func:`policy`'s), never framed."""
    return Response(
        body,
        content_type="text/html; charset=utf-8",
        headers=(*HEADERS, ("X-Frame-Options", "DENY"), ("Content-Security-Policy", csp)),
    )
