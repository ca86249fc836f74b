"""CORS for the route table's routes: which browser origins may call the service.

``SERVING_CORS_ORIGINS`` lists the origins (``*``: any); empty, CORS is off and the
dispatcher does nothing for it. A preflight (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) is answered by the dispatcher without an API key, which
browsers never send with one; the request that follows still needs its key. Every header
value is built here once, so a request pays a dict lookup.
"""

from __future__ import annotations

ALLOW_HEADERS = (
    "Content-Type, Content-Encoding, Authorization, X-API-Key, X-Request-ID, "
    "Inference-Header-Content-Length"
)
EXPOSE_HEADERS = "X-Request-ID, Inference-Header-Content-Length"
MAX_AGE_S = 600  # how long a browser may cache a preflight's answer

_VARY = ("Vary", "Origin")


class Cors:
    """The configured origins' response headers, precomputed."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        allowed = {o.strip().rstrip("/").lower() for o in origins if o.strip() != "*"}
        self.origins = frozenset(allowed)
        self._any = _allowing("*")
        self._each = {origin: _allowing(origin) for origin in allowed}
        self._preflight = (
            ("Access-Control-Allow-Headers", ALLOW_HEADERS),
            ("Access-Control-Max-Age", str(MAX_AGE_S)),
        )

    @classmethod
    def of(cls, origins: tuple[str, ...]) -> Cors | None:
        """The policy for these origins; None (CORS off) for none."""
        return cls(origins) if any(o.strip() for o in origins) else None

    def headers(self, origin: str | None) -> tuple[tuple[str, str], ...]:
        """An actual response's CORS headers for a request from ``origin``: ``Vary: Origin``
        always (the answer depends on it), the allow and expose headers for an allowed one."""
        if not origin:
            return (_VARY,)
        if self.any:
            return self._any
        found = self._each.get(origin) or self._each.get(origin.lower())
        return found if found is not None else (_VARY,)

    def preflight(self, origin: str | None, allowed: list[str]) -> tuple[tuple[str, str], ...]:
        """A preflight's extra headers (the methods the path answers, the request headers a
        browser may send, how long to cache them); none for an origin not allowed."""
        if not origin or not (self.any or origin.lower() in self.origins):
            return ()
        return (("Access-Control-Allow-Methods", ", ".join(allowed)), *self._preflight)


def _allowing(origin: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
        _VARY,
    )
