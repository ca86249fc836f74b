"""service.http.wsgi: the environ is PEP 3333's, built from what llhttp parsed; the answer
leaves whole, framed by the server (never by the application)."""

from __future__ import annotations

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
