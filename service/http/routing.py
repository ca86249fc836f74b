"""The route table: every HTTP route the service answers, written once.

A :class:`Route` is a method, a path template (``/v2/models/{model}/infer``), the handler,
the protocol that renders its errors, and its OpenAPI operation. The same table drives the
dispatcher (:mod:`service.http.dispatcher`) and the OpenAPI document
(:mod:`service.protocols.openapi`), so no route or parameter is spelled twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from service.errors import ApiError
from service.http.messages import Request, Response, json_response

# A handler takes the worker's serving state (service.protocols.serving.Serving: opaque to
# this layer, which only passes it on) and the request.
Handler = Callable[[Any, Request], Response]

_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Protocol:
    """A wire protocol's name, path prefix and error shape."""

    name: str
    prefix: str
    render: Callable[[ApiError, str], tuple[int, Any]]  # (status, JSON body)

    def error_response(self, error: ApiError, request_id: str) -> Response:
        """The error as this protocol writes it, with the headers it implies (405's Allow)."""
        status, body = self.render(error, request_id)
        return json_response(body, status, headers=error.headers)


@dataclass(frozen=True)
class Route:
    """One method on one path template."""

    method: str
    template: str
    handler: Handler
    protocol: Protocol
    doc: dict[str, Any] | None = None  # the OpenAPI operation; None: not in the document
    scope: str | None = "read"  # the API-key scope it needs (service.keys); None: open
    params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(_PARAM.findall(self.template)))


def versioned(
    method: str,
    model_path: str,
    suffix: str,
    handler: Handler,
    protocol: Protocol,
    doc: dict[str, Any] | None = None,
    scope: str | None = "read",
    labels: bool = False,
) -> list[Route]:
    """The route for a model (``{model_path}{suffix}``) and the one for a version of it
    (``{model_path}/versions/{version}{suffix}``), which every protocol here has; with
    ``labels``, also ``{model_path}/labels/{label}{suffix}`` (TF Serving's)."""
    kinds = ["/versions/{version}", *(["/labels/{label}"] if labels else [])]
    return [
        Route(method, model_path + suffix, handler, protocol, doc, scope),
        *(
            Route(method, f"{model_path}{kind}{suffix}", handler, protocol, doc, scope)
            for kind in kinds
        ),
    ]


def _pattern(template: str) -> re.Pattern[str]:
    """``/models/{model}:predict`` -> a regex; a parameter is one path segment, non-empty."""
    parts, last = [], 0
    for found in _PARAM.finditer(template):
        parts.append(re.escape(template[last : found.start()]))
        parts.append(f"(?P<{found.group(1)}>[^/]+?)")
        last = found.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))


class Match(NamedTuple):
    """A router's answer: the route (None: 404 or 405), its parameters, the template that
    matched the path ("unmatched" for a 404; the metrics' endpoint label), the methods the
    path answers."""

    route: Route | None
    params: dict[str, str]
    template: str
    allowed: list[str]


class Router:
    """Finds the route for a method and path: exact paths by dict, templates by regex."""

    def __init__(self, routes: Iterable[Route], protocols: Iterable[Protocol]) -> None:
        self.routes = list(routes)
        by_template: dict[str, dict[str, Route]] = {}
        for route in self.routes:
            methods = by_template.setdefault(route.template, {})
            if route.method in methods:
                raise ValueError(f"{route.method} {route.template} is defined twice")
            methods[route.method] = route
        self._exact = {t: m for t, m in by_template.items() if "{" not in t}
        # Grouped by first path segment, so a request tries only its family's templates;
        # most literal characters first, so ".../{model}:predict" wins over ".../{model}".
        self._templates: dict[str, list[tuple[re.Pattern[str], str, dict[str, Route]]]] = {}
        for template in sorted(
            (t for t in by_template if "{" in t), key=lambda t: -len(_PARAM.sub("", t))
        ):
            self._templates.setdefault(_first_segment(template), []).append(
                (_pattern(template), template, by_template[template])
            )
        self._protocols = sorted(protocols, key=lambda p: -len(p.prefix))

    def match(self, method: str, path: str) -> Match:
        """The route for a method and path; for a 405, the path's template and its methods."""
        template, methods = path, self._exact.get(path)
        params: dict[str, str] = {}
        if methods is None:
            for pattern, candidate, candidates in self._templates.get(_first_segment(path), ()):
                found = pattern.fullmatch(path)
                if found:
                    template, methods, params = candidate, candidates, found.groupdict()
                    break
            else:
                return Match(None, {}, "unmatched", [])
        route = methods.get("GET" if method == "HEAD" else method)
        allowed = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
        return Match(route, params, template, allowed)

    def protocol_for(self, path: str) -> Protocol:
        """The protocol whose prefix the path falls under (errors of unmatched paths)."""
        for protocol in self._protocols:
            if path == protocol.prefix or path.startswith(protocol.prefix.rstrip("/") + "/"):
                return protocol
        return self._protocols[-1]


def _first_segment(path: str) -> str:
    return path[1:].split("/", 1)[0].split(":", 1)[0]
