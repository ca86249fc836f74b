"""service.http.messages' multipart bodies: werkzeug's decoder, named form-data parts only,
a bounded boundary and a bounded count of parts."""

from __future__ import annotations

import io

import pytest

from service.errors import BadRequest, PayloadTooLarge
from service.http.messages import Request


def _form(body: bytes, content_type: str, max_parts: int = 10):
    environ = {
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    return Request(environ, "POST", "/predict", {}, "id", 1 << 20).form(max_parts, " (why)")


def _body(*parts: tuple[bytes, bytes], boundary: bytes = b"XX") -> bytes:
    chunks = [
        b"--" + boundary + b"\r\nContent-Disposition: " + head + b"\r\n\r\n" + data + b"\r\n"
        for head, data in parts
    ]
    return b"".join(chunks) + b"--" + boundary + b"--\r\n"


def test_fields_first_value_wins_and_files_keep_their_bytes():
    body = _body(
        (b'form-data; name="top_k"', b"2"),
        (b'form-data; name="top_k"', b"3"),
        (b'form-data; name="image"; filename="a.png"', b"\x89PNG\r\n\r\n--X"),
        (b'form-data; name="image"; filename=""', b"raw"),
        (b'FORM-DATA; name=""; filename="b.png"', b""),
    )
    fields, files = _form(body, "multipart/form-data; boundary=XX")
    assert fields == {"top_k": "2"}
    assert files == [
        ("file 'a.png'", b"\x89PNG\r\n\r\n--X"),
        ("file 'image'", b"raw"),
        ("file 'b.png'", b""),
    ]


@pytest.mark.parametrize(
    "disposition",
    [b'form-data; filename="a.png"', b"form-data", b'attachment; name="f"', b"form-data form-data"],
)
def test_a_part_must_be_named_form_data(disposition):
    with pytest.raises(BadRequest, match="a multipart part has no field name"):
        _form(_body((disposition, b"x")), "multipart/form-data; boundary=XX")


@pytest.mark.parametrize(
    ("content_type", "fits"),
    [
        ("multipart/form-data", False),
        ("multipart/form-data; boundary=", False),
        ("multipart/form-data; boundary=" + "-" * 200, True),
        ("multipart/form-data; boundary=" + "-" * 201, False),
        ('multipart/form-data; boundary="a b"', True),
        ('multipart/form-data; boundary="ab "', False),
        ("multipart/form-data; boundary=a;b", True),  # the parameter ends at the ";"
        ('multipart/form-data; boundary="a<b"', False),
        ("multipart/form-data; boundary*=utf-8''%E2%82%AC", False),
    ],
)
def test_the_boundary_is_rfc_2046s(content_type, fits):
    boundary = content_type.partition("boundary=")[2].strip('"').split(";")[0].encode()
    body = _body((b'form-data; name="f"', b"x"), boundary=boundary or b"XX")
    if fits:
        assert _form(body, content_type) == ({"f": "x"}, [])
    else:
        with pytest.raises(BadRequest, match="needs a boundary of 1 to 200 characters"):
            _form(body, content_type)


def test_parts_beyond_the_limit_are_a_413_before_the_rest_is_parsed():
    part = (b'form-data; name="f"; filename="a"', b"")
    assert len(_form(_body(*[part] * 10), "multipart/form-data; boundary=XX")[1]) == 10
    with pytest.raises(PayloadTooLarge) as refused:
        _form(_body(*[part] * 11), "multipart/form-data; boundary=XX")
    assert refused.value.message == "the multipart body has more than 10 parts (why)"
    assert refused.value.details == {"max_parts": 10}


@pytest.mark.parametrize(
    "body",
    [
        b"no boundary at all",
        b"--XX\r\nContent-Type: text/plain\r\n\r\nx\r\n--XX--\r\n",  # no Content-Disposition
        b'--XX\r\nContent-Disposition: form-data; name="f"\r\n\r\nnever ends',
    ],
)
def test_malformed_bodies_are_a_400(body):
    with pytest.raises(BadRequest, match="the multipart body could not be parsed"):
        _form(body, "multipart/form-data; boundary=XX")
