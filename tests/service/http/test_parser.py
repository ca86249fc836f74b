"""service.http.parser: llhttp decides where each request and its body begin and end; what
RFC 9112 lets a server refuse is refused, in any split of the bytes, at a cost linear in
them."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from service.http.parser import MAX_HEAD, MAX_QUEUED, SLICE, Refused, RequestReader

HEAD = b"POST /predict HTTP/1.1\r\nHost: t\r\n"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"


def read(data: bytes, max_body: int = 100, pieces: int = 0) -> RequestReader:
    """Feed the bytes whole, or ``pieces`` bytes at a time."""
    reader = RequestReader(max_body)
    step = pieces or len(data) or 1
    for start in range(0, len(data), step):
        reader.feed(data[start : start + step])
    return reader


@pytest.mark.parametrize("pieces", [0, 1, 7])
@pytest.mark.parametrize(
    ("data", "bodies"),
    [
        (b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n", [b""]),
        (b"GET /health/live HTTP/1.1\r\nHost: t\r\n", []),  # headers not finished
        (HEAD + b"Content-Length: 5\r\n\r\nabc", []),
        (HEAD + b"content-length:5\r\n\r\nabcde", [b"abcde"]),
        (HEAD + b"Content-Length: 5" + b" " * 20 + b"\r\n\r\nabcde", [b"abcde"]),  # OWS
        (HEAD + b"Content-Length: 0005\r\n\r\nabcde", [b"abcde"]),  # 1*DIGIT
        (
            HEAD + b"Content-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\nHost: t\r\n\r\n",
            [b"abcde", b""],
        ),
        (CHUNKED + b"3\r\nabc\r\n", []),
        (CHUNKED + b"3\r\nab", []),
        (CHUNKED + b"3\r\nabc\r\n0\r\n\r\n", [b"abc"]),
        (CHUNKED + b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n", [b"abcde"]),
    ],
)
def test_a_request_is_whole_only_once_it_has_arrived(data, bodies, pieces):
    assert [m.body for m in read(data, pieces=pieces).done] == bodies


@pytest.mark.parametrize("pieces", [0, 1])
@pytest.mark.parametrize(
    ("data", "status"),
    [
        (HEAD + b"Content-Length: 101\r\n\r\n", 413),  # refused before the body comes
        (CHUNKED + b"65\r\n" + b"x" * 101 + b"\r\n0\r\n\r\n", 413),
        (HEAD + b"Content-Length: x\r\n\r\n", 400),
        (HEAD + b"Content-Length: +5\r\n\r\nabcde", 400),
        (HEAD + b"Content-Length: -1\r\n\r\n", 400),
        (HEAD + b"Content-Length: " + b"1" * 5000 + b"\r\n\r\n", 400),  # overflow
        (HEAD + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nab", 400),
        (HEAD + b"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
        (HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
        (HEAD + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
        (HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
        (HEAD + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
        (CHUNKED + b"ZZ\r\nabc\r\n0\r\n\r\n", 400),
        (CHUNKED + b"3 \r\nabc\r\n0\r\n\r\n", 400),
        (CHUNKED + b"3\nabc\n0\n\n", 400),  # bare LF
        (CHUNKED + b"3\r\nabcd\r\n0\r\n\r\n", 400),  # chunk longer than its size
        (CHUNKED + b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n", 400),  # forbidden trailer
        (CHUNKED + b"3\r\nabc\r\n0\r\nX-API-Key: k\r\n\r\n", 400),
        (CHUNKED + b"3\r\nabc\r\n0\r\nHost: other\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-API-Key secret-key\r\n\r\n", 400),  # no colon
        (b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n", 400),  # control byte in the line
        (b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),  # obsolete folding
        (b"GARBAGE\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        (b"FOOBAR / HTTP/1.1\r\nHost: t\r\n\r\n", 400),  # not a method llhttp knows
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 10000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 101 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 10), 431),  # a line that never ends
    ],
)
def test_what_rfc_9112_lets_a_server_refuse_is_refused(data, status, pieces):
    with pytest.raises(Refused) as refused:
        read(data, pieces=pieces)
    assert refused.value.status == status


def test_refusals_never_echo_what_the_client_sent():
    for data in (
        b"GET / HTTP/1.1\r\nHost: t\r\nX-API-Key secret-key-123\r\n\r\n",
        b"GET /secret-key-123\x01 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nAuthorization: Bearer secret-key-123\x01\r\n\r\n",
        CHUNKED + b"3\r\nabc\r\n0\r\nX-API-Key: secret-key-123\r\n\r\n",
    ):
        with pytest.raises(Refused) as refused:
            read(data)
        assert "secret-key-123" not in str(refused.value.args)


def test_expect_100_continue_is_asked_for_once_and_never_over_http_1_0():
    reader = read(HEAD + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert reader.continue_wanted
    assert not reader.done
    reader.feed(b"abc")
    assert [m.body for m in reader.done] == [b"abc"]
    assert not reader.continue_wanted
    old = read(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert not old.continue_wanted


def test_keep_alive_and_upgrade_are_read_from_the_request():
    (one_one,) = read(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").done
    (one_zero,) = read(b"GET / HTTP/1.0\r\n\r\n").done
    (closing,) = read(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").done
    (upgrade,) = read(b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\nxx").done
    assert (one_one.keep_alive, one_zero.keep_alive, closing.keep_alive) == (True, False, False)
    assert upgrade.upgrade
    assert not one_one.upgrade


def test_one_byte_chunks_cost_their_bytes_not_an_object_each():
    size = 200_000
    data = CHUNKED + b"1\r\nx\r\n" * size
    tracemalloc.start()
    reader = read(data, max_body=10 * size, pieces=65536)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert reader.buffered >= size
    assert not reader.done
    assert held < 2 * size + 64 * 1024  # <= 2x the body (plus one read's worth)


def test_chunked_bodies_are_read_in_linear_time():
    def cost(count: int) -> float:
        data = CHUNKED + b"1\r\nx\r\n" * count + b"0\r\n\r\n"
        started = time.perf_counter()
        read(data, max_body=count, pieces=65536)
        return time.perf_counter() - started

    cost(1000)  # warm up
    # The best of 3: one run can be slowed down by whatever else the machine does.
    small, large = min(cost(20_000) for _ in range(3)), min(cost(200_000) for _ in range(3))
    assert large < 20 * small  # 10x the input: ~10x the time, never ~100x


GET = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"


def test_parsing_stops_ahead_of_the_answers_and_resumes_in_order():
    data = b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(3000))
    reader = RequestReader(100)
    reader.feed(data[: 4 * SLICE])
    # One slice parsed: MAX_QUEUED whole requests are waiting (and the rest of the slice's).
    assert MAX_QUEUED <= len(reader.done) <= MAX_QUEUED + SLICE // 18
    assert reader.pending == 3 * SLICE
    assert reader.held == reader.pending + reader.buffered  # GETs: no body waits
    targets = []
    for more in (data[4 * SLICE :], b""):
        reader.feed(more)
        while reader.done or reader.pending:
            while reader.done:
                targets.append(reader.pop().target)
            reader.resume()
    assert targets == [b"/%d" % i for i in range(3000)]
    assert reader.held == 0


def test_what_is_held_counts_the_bodies_waiting_and_lets_go_of_them():
    post = HEAD + b"Content-Length: 5\r\n\r\nabcde"
    reader = read(post * 3 + HEAD + b"Content-Length: 9\r\n\r\nabc")
    assert len(reader.done) == 3
    assert reader.buffered >= 3
    assert reader.held == 15 + reader.buffered
    reader.pop()
    assert reader.held == 10 + reader.buffered
    reader.close()
    assert (reader.held, len(reader.done), reader.closed) == (0, 0, True)


@pytest.mark.parametrize("pieces", [0, 1, 7])
@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_an_upgrade_is_ignored_and_its_body_read_as_framed(framing, pieces):
    # curl --http2 on http:// sends this: the body is read, the request answered over
    # HTTP/1.1, and the connection closed after it (nothing after it is read).
    data = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n" + framing + GET
    )
    reader = read(data, pieces=pieces)
    (message,) = reader.done
    assert (message.method, message.target, message.body) == ("POST", b"/predict", b"hello")
    assert (b"Upgrade", b"h2c") in message.headers
    assert message.upgrade
    assert not message.keep_alive
    assert reader.closed


@pytest.mark.parametrize("pieces", [0, 1])
@pytest.mark.parametrize(
    "first",
    [b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", b"GET /a HTTP/1.0\r\n\r\n"],
    ids=["connection-close", "http-1.0"],
)
def test_nothing_after_a_request_that_closes_the_connection_is_read(first, pieces):
    reader = read(first + GET + b"BLAH\r\n\r\n", pieces=pieces)
    assert [m.target for m in reader.done] == [b"/a"]
    assert reader.closed
    assert reader.held == 0


def test_the_whole_requests_before_a_refused_one_stay_to_be_answered():
    reader = RequestReader(100)
    with pytest.raises(Refused) as refused:
        reader.feed(GET + GET + b"BLAH\r\n\r\n")
    assert refused.value.status == 400
    assert [m.target for m in reader.done] == [b"/a", b"/a"]
    assert reader.closed
    assert reader.held == 0


@pytest.mark.parametrize(
    "trailers",
    [
        b"X-T: 1\r\n" * 101 + b"\r\n",  # too many fields
        b"".join(b"X-T%d: %s\r\n" % (i, b"a" * 8000) for i in range(9)) + b"\r\n",  # too large
        b"X-T: " + b"a" * (2 * MAX_HEAD),  # one line that never ends
    ],
    ids=["count", "size", "endless-line"],
)
def test_trailers_are_capped_like_headers(trailers):
    with pytest.raises(Refused) as refused:
        read(CHUNKED + b"3\r\nabc\r\n0\r\n" + trailers, max_body=100, pieces=65536)
    assert refused.value.status == 431


def test_an_endless_trailer_line_is_refused_once_it_passes_the_cap():
    data = CHUNKED + b"3\r\nabc\r\n0\r\nX-T: " + b"a" * (40 * MAX_HEAD)
    reader, fed, refused = RequestReader(100), 0, None
    for start in range(0, len(data), 1024):
        fed += 1024
        try:
            reader.feed(data[start : start + 1024])
        except Refused as exc:
            refused = exc
            break
    assert refused is not None
    assert refused.status == 431
    assert fed <= MAX_HEAD + 2 * 1024  # at the cap, not after the client's 2.6 MB


@pytest.mark.parametrize(
    "request_line", [b"GET / HTTP/2.0\r\n\r\n", b"GET /\r\n\r\n"], ids=["2.0", "0.9"]
)
def test_versions_other_than_1_x_are_refused(request_line):
    with pytest.raises(Refused) as refused:
        read(request_line)
    assert refused.value.status == 505
