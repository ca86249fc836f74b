"""Every regex in service/ is audited, and each that sees client bytes stays linear.

A regex that backtracks over request data lets one small request hold a worker: a multipart
part whose Content-Disposition repeated ``form-data`` 16,000 times (160 KB) kept a worker
busy past its 30 s timeout. Here every ``re`` call in service/ must be listed in ``AUDIT``
with what it reads (a new one fails the test until it is), and each that reads client data
is fed 100 KB of its worst case and must cost about what a benign input of the same size
costs (a ratio, not an absolute time, so a slow or busy machine cannot fail it).
"""

from __future__ import annotations

import ast
import io
import math
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from service.contract import images
from service.errors import ApiError
from service.http import access
from service.http.messages import Request
from service.http.routing import Router
from service.models import serving_config
from service.protocols.routes import PROTOCOLS, ROUTES
from tests.helpers import ROOT

SIZE = 100_000
# A linear regex costs a small constant times the benign input's time (measured: at most
# ~6x); the quadratic multipart check cost ~10,000x at 20 KB.
MAX_RATIO = 50
_CALLS = {"compile", "search", "match", "fullmatch", "sub", "subn", "findall", "finditer", "split"}

# Where each regex is (file: the assigned name, or the function that calls re), and what it
# reads. "client": request bytes (cost-tested below); the others never see a request.
AUDIT = {
    "service/http/access.py:_REQUEST_ID": "client: the X-Request-ID header",
    "service/http/routing.py:_PARAM": "code: the route table's templates",
    "service/http/routing.py:_pattern": "client: the request path, by the templates' patterns",
    "service/http/fallback.py:_api_error": "code: werkzeug's HTTPException names",
    "service/contract/images.py:_BOMB_PIXELS": "client: Pillow's message on an image's header",
    "service/models/serving_config.py:LABEL": "client: a version label in a URL or body",
    "service/models/repository.py:NAME": "operator: model folder names",
    "service/models/predictor.py:usable_providers": "operator: onnxruntime's load error text",
    "service/protocols/openapi.py:document": "code: the route table's templates",
    "service/settings.py:_ORIGIN": "operator: SERVING_CORS_ORIGINS",
    "service/keys.py:_ID": "operator: the API keys file",
    "service/keys.py:_DIGEST": "operator: the API keys file",
}


def _regex_uses() -> set[str]:
    """``file:name`` of every ``re.<function>(...)`` in service/: the name assigned at module
    level, else the function that makes the call."""
    found = set()
    for path in sorted((ROOT / "service").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), relative)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "re":
                raise AssertionError(f"{relative}: call re.<function> so the audit sees it")
            if isinstance(node, ast.Import):
                aliased = [a for a in node.names if a.name == "re" and a.asname]
                assert not aliased, f"{relative}: import re as itself so the audit sees it"
        for statement in tree.body:
            for node in ast.walk(statement):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "re"
                    and node.func.attr in _CALLS
                ):
                    found.add(f"{relative}:{_owner(statement, node)}")
    return found


def _owner(statement: ast.stmt, call: ast.Call) -> str:
    """The module-level name a call's value is assigned to, or the innermost function."""
    if isinstance(statement, ast.Assign | ast.AnnAssign):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return ", ".join(t.id for t in targets if isinstance(t, ast.Name))
    owner = "<module>"
    for node in ast.walk(statement):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            inner is call for inner in ast.walk(node)
        ):
            owner = node.name  # ast.walk is breadth-first: the last is the innermost
    return owner


def test_every_regex_in_the_service_is_audited():
    uses = _regex_uses()
    assert uses - set(AUDIT) == set(), (
        "a new regex: audit it (and cost-test it if clients reach it)"
    )
    assert set(AUDIT) - uses == set(), "an audited regex is gone: remove it from AUDIT"


def test_the_audit_knows_what_every_module_level_pattern_is():
    """The compiled patterns themselves, by import: none hides behind another spelling."""
    import importlib

    for key in AUDIT:
        path, name = key.split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        value = getattr(module, name)
        assert isinstance(value, re.Pattern) or callable(value), key


# --- what each regex that reads client bytes costs -------------------------------------------


def _seconds(call: Callable[[Any], Any], argument: Any) -> float:
    """The best of three timings of ``call(argument)``, each repeated for at least 5 ms."""
    best = math.inf
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while True:
            call(argument)
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed > 0.005:
                break
        best = min(best, elapsed / count)
    return best


def _ratio(call: Callable[[Any], Any], worst: Any, benign: Any) -> float:
    return _seconds(call, worst) / _seconds(call, benign)


_ROUTER = Router(ROUTES, PROTOCOLS)


def _form(body_and_type: tuple[bytes, str]) -> Any:
    """A multipart body through the service's parser; its 4xx is an answer like any other."""
    body, content_type = body_and_type
    environ = {
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    try:
        return Request(environ, "POST", "/predict", {}, "id", len(body)).form(300)
    except ApiError as exc:  # a refusal costs what the parsing before it cost
        return exc


def _part(disposition: bytes, data: bytes = b"x", boundary: bytes = b"XX") -> tuple[bytes, str]:
    body = (
        b"--"
        + boundary
        + b"\r\nContent-Disposition: "
        + disposition
        + b"\r\n\r\n"
        + data
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    return body, "multipart/form-data; boundary=" + boundary.decode()


_BENIGN_PART = _part(b'form-data; name="f"; filename="a.png"', b"x" * SIZE)
_DASHES = b"-" * 200  # the longest boundary allowed
_ROUTE = lambda path: _ROUTER.match("POST", path)  # noqa: E731


def _params(prefix: bytes, parameter: bytes) -> bytes:
    """``prefix`` and then ``parameter`` repeated to SIZE bytes."""
    return prefix + parameter * ((SIZE - len(prefix)) // len(parameter))


# name: (the call that runs the regexes, its worst case, a benign input of the same size).
CASES: dict[str, tuple[Callable[[Any], Any], Any, Any]] = {
    "X-Request-ID": (access.request_id, "a" * SIZE, "!" * SIZE),
    "version label": (serving_config.LABEL.fullmatch, "a" * SIZE, "!" * SIZE),
    "Pillow's bomb message": (images._BOMB_PIXELS.search, "(" + "1" * SIZE, "( " * (SIZE // 2)),
    "Pillow's bomb message, many openings": (
        images._BOMB_PIXELS.search,
        "(1" * (SIZE // 2),
        "( " * (SIZE // 2),
    ),
    "route, a long model name": (
        _ROUTE,
        "/v2/models/" + "a" * SIZE + "/versions/1/inferX",
        "/v2/models/" + "a" * SIZE,
    ),
    "route, colons for TF Serving's methods": (
        _ROUTE,
        "/v1/models/" + ":" * SIZE,
        "/v1/models/" + "a" * SIZE,
    ),
    "route, a long version": (
        _ROUTE,
        "/v1/models/m/versions/" + "1:" * (SIZE // 2),
        "/v1/models/m/versions/" + "1" * SIZE,
    ),
    # The multipart check this audit replaced took 30 s on 160 KB of this.
    "multipart, form-data repeated without a name": (
        _form,
        _part(b"form-data " * (SIZE // 10)),
        _BENIGN_PART,
    ),
    "multipart, form-data; repeated without a name": (
        _form,
        _part(_params(b"", b"form-data; ")),
        _part(_params(b'form-data; name="f"; ', b"a=1; ")),
    ),
    "multipart, a quoted name that never ends": (
        _form,
        _part(b'form-data; name="' + b"\\" * (SIZE // 2)),
        _part(b'form-data; name="' + b"a" * SIZE + b'"'),
    ),
    # The preamble's boundary may follow no line break: each "--" of it is a near match.
    "multipart, the longest boundary over near matches": (
        _form,
        (
            (_DASHES + b"--x") * (SIZE // 203) + _part(b'form-data; name="f"', b"x", _DASHES)[0],
            _part(b"", b"", _DASHES)[1],
        ),
        (
            b"x" * SIZE + _part(b'form-data; name="f"', b"x", _DASHES)[0],
            _part(b"", b"", _DASHES)[1],
        ),
    ),
    "multipart, blank-line lookalikes in headers": (
        _form,
        (b"--XX\r\n" + b"\r \r\t" * (SIZE // 4), "multipart/form-data; boundary=XX"),
        _BENIGN_PART,
    ),
    "multipart, a Content-Type of many parameters": (
        _form,
        (_BENIGN_PART[0], _params(b"multipart/form-data; boundary=XX; ", b"a; ").decode()),
        (_BENIGN_PART[0], _params(b"multipart/form-data; boundary=XX; ", b"a=1; ").decode()),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_client_data_costs_linear_time_in_its_worst_case(case):
    call, worst, benign = CASES[case]
    assert _ratio(call, worst, benign) < MAX_RATIO


def test_the_measure_catches_a_quadratic_regex():
    """The multipart check this audit replaced, at a fifth of the size: far over the bar."""
    quadratic = re.compile(rb"(?i)\bform-data\b.*(?:^|;)\s*name\s*=")
    size = SIZE // 5
    ratio = _ratio(quadratic.search, b"form-data " * (size // 10), b"x" * size)
    assert ratio > 20 * MAX_RATIO
