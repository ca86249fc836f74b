"""Helpers shared by the test packages: encoding images and multipart bodies."""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def image_bytes(array: np.ndarray, fmt: str = "PNG", **save_args) -> bytes:
    """Encode a uint8 (or uint16) array with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **save_args)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height grayscale pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes, str]]):
    """(body, content type) for form fields and (field, filename, data, type) files."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    for field, filename, data, ctype in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
