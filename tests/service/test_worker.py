"""The gunicorn worker's test of a complete request (read in its main loop before a thread
handles it) and its JSON error pages."""

from __future__ import annotations

import json

import pytest

from service.worker import json_error, request_complete

HEAD = b"POST /predict HTTP/1.1\r\nHost: t\r\n"


@pytest.mark.parametrize(("data", "complete"), [
    (b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n", True),  # no body
    (b"GET /health/live HTTP/1.1\r\nHost: t\r\n", False),  # headers not finished
    (HEAD + b"Content-Length: 5\r\n\r\nabc", False),
    (HEAD + b"content-length:5\r\n\r\nabcde", True),
    (HEAD + b"Content-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\n", True),  # pipelined
    (HEAD + b"Content-Length: 999\r\n\r\n", True),  # above the limit: refused unread
    (HEAD + b"Content-Length: x\r\n\r\n", True),  # malformed: refused at once
    (HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n", True),  # ambiguous
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", False),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", True),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n", True),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nab", False),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n", True),  # bad framing
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, True),  # garbage size line
    (b"X" * 70_000, True),  # no end of headers in 64 KB: gunicorn refuses it
])  # fmt: skip
def test_a_request_is_complete_when_it_can_be_answered(data, complete):
    assert request_complete(data, max_body=100) is complete


def test_chunked_bodies_above_the_limit_are_complete_enough_to_refuse():
    data = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"64\r\n" + b"a" * 100 + b"\r\n"
    assert request_complete(data + b"64\r\n" + b"a" * 50, max_body=100) is True


def test_error_pages_are_json_with_a_request_id():
    page = json_error(408, "Request Timeout", "the request did not arrive within 3 s")
    head, _, body = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    document = json.loads(body)
    assert document["error"] == {"code": "request_timeout",
                                 "message": "the request did not arrive within 3 s"}  # fmt: skip
    assert f"X-Request-ID: {document['request_id']}".encode() in head
    assert f"Content-Length: {len(body)}".encode() in head
