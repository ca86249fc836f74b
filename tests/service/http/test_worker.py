"""The gunicorn worker's reading of requests in its main loop (before a thread handles
them) and its JSON error pages."""

from __future__ import annotations

import json
import re
import time

import pytest

from service.http.worker import Incoming, Refused, json_error

HEAD = b"POST /predict HTTP/1.1\r\nHost: t\r\n"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"


def arrived(data: bytes, max_body: int = 100):
    return Incoming(data, deadline=0.0).request(max_body)


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n", True),  # no body
        (b"GET /health/live HTTP/1.1\r\nHost: t\r\n", False),  # headers not finished
        (HEAD + b"Content-Length: 5\r\n\r\nabc", False),
        (HEAD + b"content-length:5\r\n\r\nabcde", True),
        (HEAD + b"Content-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\n", True),  # pipelined
        (HEAD + b"Content-Length: x\r\n\r\n", True),  # malformed: gunicorn refuses it at once
        (HEAD + b"Content-Length: " + b"1" * 5000 + b"\r\n\r\n", True),  # (no int() of it)
        (HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n", True),  # ambiguous
        (CHUNKED + b"3\r\nabc\r\n", False),
        (CHUNKED + b"3\r\nab", False),
        (CHUNKED + b"3\r\nabc\r\n0\r\n\r\n", True),
        (CHUNKED + b"3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n", True),
    ],
)
def test_a_request_goes_to_a_thread_once_it_can_be_answered(data, whole):
    assert (arrived(data) is not None) is whole


def test_a_chunked_body_reaches_the_thread_as_a_plain_one():
    request = arrived(CHUNKED + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert request == (HEAD + b"Content-Length: 5\r\n\r\nabcde" + b"GET / HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (HEAD + b"Content-Length: 999\r\n\r\n", 413),  # refused from the header, unread
        (CHUNKED + (b"40\r\n" + b"a" * 64 + b"\r\n") * 2, 413),  # payload above the limit
        (CHUNKED + b"-6\r\nabc\r\n", 400),  # sizes gunicorn would not read: no endless loop
        (CHUNKED + b"0x5\r\nabcde\r\n", 400),
        (CHUNKED + b"5_0\r\n", 400),
        (CHUNKED + b"ZZ\r\nabc\r\n", 400),
        (CHUNKED + b"3\r\nabcXY", 400),  # data where the chunk's CRLF belongs
        (CHUNKED + b"1" * 2000, 400),  # a size line that never ends
        (b"X" * 70_000, 431),  # headers that never end
    ],
)
def test_what_can_be_refused_early_is_refused_from_the_main_loop(data, status):
    with pytest.raises(Refused) as refused:
        arrived(data)
    assert refused.value.args[0] == status


def test_chunked_bodies_are_read_in_linear_time():
    incoming = Incoming(CHUNKED, deadline=0.0)
    started = time.perf_counter()
    for _ in range(20_000):  # one-byte chunks arriving one by one: each read is O(new bytes)
        incoming.data += b"1\r\na\r\n"
        assert incoming.request(max_body=1 << 20) is None
    incoming.data += b"0\r\n\r\n"
    request = incoming.request(max_body=1 << 20)
    assert request.endswith(b"Content-Length: 20000\r\n\r\n" + b"a" * 20_000)
    assert time.perf_counter() - started < 2.0


def test_error_pages_are_json_with_a_request_id():
    page = json_error(408, "Request Timeout", "the request did not arrive within 3 s")
    head, _, body = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    document = json.loads(body)
    assert document["error"] == {
        "code": "request_timeout",
        "message": "the request did not arrive within 3 s",
    }
    assert f"X-Request-ID: {document['request_id']}".encode() in head
    assert f"Content-Length: {len(body)}".encode() in head


class _Socket:
    """Records every send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def _respond(response_class, method: str, chunks: list[bytes], headers: list) -> list[bytes]:
    """What a response of ``response_class`` sends, send by send (the Date header dropped)."""
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser

    cfg = Config()
    raw = f"{method} /x HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    request = next(RequestParser(cfg, iter([raw]), ("127.0.0.1", 1)))
    sock = _Socket()
    response = response_class(request, sock, cfg)
    response.start_response("200 OK", headers)
    for chunk in chunks:
        response.write(chunk)
    response.close()
    return [re.sub(rb"Date: [^\r]*\r\n", b"", s) for s in sock.sent]


@pytest.mark.parametrize(
    ("method", "chunks", "headers", "sends"),
    [
        ("GET", [b"hello"], [("Content-Length", "5")], 1),  # the usual answer: one send
        ("GET", [b"hel", b"lo"], [("Content-Length", "5")], 2),  # later writes as gunicorn's
        ("HEAD", [b"hello"], [("Content-Length", "5")], 1),  # headers alone
        ("GET", [b"hello", b"!"], [], 3),  # chunked: first chunk with the head, the rest, the end
        ("GET", [], [("Content-Length", "0")], 1),  # nothing written: close() sends the head
    ],
)
def test_a_response_sends_its_head_with_its_first_bytes(method, chunks, headers, sends):
    from gunicorn.http.wsgi import Response

    from service.http.worker import OneSendResponse

    ours = _respond(OneSendResponse, method, chunks, headers)
    assert len(ours) == sends
    assert b"".join(ours) == b"".join(_respond(Response, method, chunks, headers))
    assert ours[0].startswith(b"HTTP/1.1 200 OK\r\n")
    if chunks and method == "GET":
        first = chunks[0] if headers else b"%X\r\n%s\r\n" % (len(chunks[0]), chunks[0])
        assert ours[0].endswith(b"\r\n\r\n" + first)  # the head and the first bytes
