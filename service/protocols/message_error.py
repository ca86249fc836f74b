"""What the V2 and TF Serving codecs share: their error shape and OpenAPI helpers."""

from __future__ import annotations

from typing import Any

from service.errors import ApiError

IMAGE_INPUT = "image"  # the name under which image models take encoded image files
UNKNOWN = ("404", "Unknown model or version")
MALFORMED = ("400", "Malformed request")
_ERROR = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageError"}}}
}


def render_message_error(error: ApiError, request_id: str) -> tuple[int, dict[str, Any]]:
    """``{"error": message}``; content errors (422 natively) are 400, as Triton and TF
    Serving answer them."""
    return (400 if error.status == 422 else error.status), {"error": error.message}


def operation(
    tag: str, summary: str, *errors: tuple[str, str], body: dict | None = None
) -> dict[str, Any]:
    """An OpenAPI operation answering JSON, with ``{"error": ...}`` bodies for ``errors``."""
    doc: dict[str, Any] = {
        "tags": [tag],
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
            **{status: {"description": why, **_ERROR} for status, why in errors},
        },
    }
    if body is not None:
        doc["requestBody"] = body
    return doc


def json_body(schema: str, description: str = "") -> dict[str, Any]:
    """A required JSON request body referring to a component schema."""
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if description:
        body["description"] = description
    return body
