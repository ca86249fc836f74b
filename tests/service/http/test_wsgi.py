"""service.http.wsgi: the environ is PEP 3333's, built from what llhttp parsed; the answer
leaves whole, framed by the server (never by the application)."""

from __future__ import annotations

import pytest

from service.http.parser import RequestReader
from service.http.wsgi import Answer, call, environ, response_bytes


def message(data: bytes):
    reader = RequestReader(1 << 20)
    reader.feed(data)
    (parsed,) = reader.done
    return parsed


def test_the_environ_holds_what_the_request_said():
    parsed = message(
        b"POST /models/a%20b/predict?top_k=2&x=%C3%A9 HTTP/1.1\r\nHost: t:8000\r\n"
        b"Content-Type: application/json\r\nX-API-Key: k1\r\nX-Api-Key: k2\r\n"
        b"X_API_KEY: smuggled\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    env = environ(parsed, ("127.0.0.1", 8000), ("10.1.2.3", 5555), threaded=False)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/models/a b/predict"
    assert env["QUERY_STRING"] == "top_k=2&x=%C3%A9"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "2"  # the de-chunked body's length
    assert env["HTTP_X_API_KEY"] == "k1,k2"  # the underscore spelling is dropped
    assert env["HTTP_HOST"] == "t:8000"
    assert (env["REMOTE_ADDR"], env["SERVER_PROTOCOL"]) == ("10.1.2.3", "HTTP/1.1")
    assert env["wsgi.input"].read() == b"{}"


def test_utf8_paths_arrive_as_latin1_text_as_pep_3333_says():
    env = environ(message(b"GET /caf%C3%A9 HTTP/1.1\r\n\r\n"), ("h", 1), ("c", 2), False)
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café"


def test_the_server_frames_the_answer():
    parsed = message(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = Answer(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", "999"), ("Connection", "x")],
        b"hello",
    )
    data = response_bytes(answer, parsed, keep_alive=True)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
    assert b"\r\nContent-Length: 5\r\n" in head  # the body's own length, not the app's
    assert b"Connection" not in head
    assert body == b"hello"
    assert not answer.close


def test_head_and_bodiless_statuses_send_no_body():
    head_request = message(b"HEAD / HTTP/1.1\r\n\r\n")
    answer = Answer("200 OK", [("Content-Length", "42")], b"")
    data = response_bytes(answer, head_request, keep_alive=True)
    assert data.endswith(b"\r\n\r\n")
    assert b"Content-Length: 42" in data
    no_content = response_bytes(
        Answer("204 No Content", [], b"x"), message(b"GET / HTTP/1.1\r\n\r\n"), True
    )
    assert b"Content-Length" not in no_content
    assert no_content.endswith(b"\r\n\r\n")


def test_closing_and_http_1_0_keep_alive_are_said():
    closing = Answer("200 OK", [], b"x")
    assert b"Connection: close\r\n" in response_bytes(
        closing, message(b"GET / HTTP/1.1\r\n\r\n"), False
    )
    assert closing.close
    old = message(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert b"Connection: keep-alive\r\n" in response_bytes(Answer("200 OK", [], b""), old, True)


def test_call_collects_the_whole_body_and_closes_the_iterable():
    closed = []

    class Body(list):
        def close(self):
            closed.append(True)

    def app(env, start_response):
        start_response("201 Created", [("X", "1")])
        return Body([b"a", b"b"])

    answer = call(app, {})
    assert (answer.status, answer.headers, answer.body, closed) == (
        "201 Created",
        [("X", "1")],
        b"ab",
        [True],
    )


def test_a_fragment_is_dropped_and_absolute_form_names_the_host():
    env = environ(message(b"GET /health/live#x HTTP/1.1\r\nHost: t\r\n\r\n"), ("h", 1), ("c", 2), 0)
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/health/live", "")
    env = environ(message(b"GET /a?b=1#frag HTTP/1.1\r\n\r\n"), ("h", 1), ("c", 2), False)
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["RAW_URI"]) == ("/a", "b=1", "/a?b=1#frag")
    for target, path in ((b"HTTP://other:8/p/q?x=1", "/p/q"), (b"https://other:8", "/")):
        request = b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n"
        env = environ(message(request), ("h", 1), ("c", 2), False)
        assert (env["PATH_INFO"], env["HTTP_HOST"]) == (path, "other:8")  # RFC 9112 3.2.2


GET_REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("200 OK", [("X-A", "a\r\nX-Injected: yes")]),
        ("200 OK", [("X-A", "a\nb")]),
        ("200 OK", [("X-A", "a\x00b")]),
        ("200 OK", [("X-A", "a\x7fb")]),
        ("200 OK", [("X-A\r\nX-Injected", "yes")]),
        ("200 OK", [("X A", "1")]),
        ("200 OK", [("", "1")]),
        ("200 OK", [("X-A", 5)]),
        ("200 OK", [(5, "1")]),
        ("200 OK", [("X-A", "\u20ac")]),
        ("200 OK", [("Content-Length", "1\r\nX-Injected: yes")]),
        ("200 OK\r\nX-Injected: yes", []),
        ("OK", []),
        ("20 OK", []),
        ("2000 OK", []),
        ("600 Odd", []),
        ("101 Switching Protocols", []),
        ("100 Continue", []),
        ("200 \u20ac", []),
        (200, []),
    ],
)
def test_what_http_1_1_cannot_carry_never_reaches_the_wire(status, headers):
    with pytest.raises((ValueError, TypeError, AttributeError)):
        response_bytes(Answer(status, headers, b"x"), message(GET_REQUEST), True)


def test_tabs_and_latin_1_text_in_values_are_sent_as_they_are():
    answer = Answer("299 Fine \u00e9", [("X-A", "a\tb \u00e9\u00a0")], b"x")
    data = response_bytes(answer, message(GET_REQUEST), True)
    assert data.startswith(b"HTTP/1.1 299 Fine \xe9\r\nX-A: a\tb \xe9\xa0\r\n")


def test_head_says_the_apps_length_only_when_it_gave_one():
    head_request = message(b"HEAD / HTTP/1.1\r\n\r\n")
    for headers in ([], [("Content-Length", "\u0661")], [("Content-Length", "x")]):
        data = response_bytes(Answer("200 OK", headers, b""), head_request, True)
        assert b"Content-Length" not in data
    data = response_bytes(Answer("200 OK", [("Content-Length", " 42 ")], b""), head_request, True)
    assert b"\r\nContent-Length: 42\r\n" in data
