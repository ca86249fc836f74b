"""One error hierarchy: each exception carries its HTTP status and a stable code.

Every error leaves the service as ``{"error": {"code", "message", "details"}}``; no
traceback ever reaches a client.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Base class: a client-facing error with status, code, message and optional details."""

    status = 500
    code = "internal_error"

    def __init__(
        self, message: str, details: Any = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers  # response headers the error implies (405's Allow)

    def to_dict(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON body of the error response."""
        return error_body(self.code, self.message, self.details, request_id)


def error_body(
    code: str, message: str, details: Any = None, request_id: str | None = None
) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"?}, "request_id"?}``: every native error
    body, whoever answers (a route, the dispatcher's last resort, the worker)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    body: dict[str, Any] = {"error": error}
    if request_id is not None:
        body["request_id"] = request_id
    return body


class BadRequest(ApiError):
    """The request cannot be parsed (malformed JSON, broken multipart, ...)."""

    status, code = 400, "bad_request"


class InvalidJSON(BadRequest):
    """The body is not valid JSON."""

    code = "invalid_json"


class InvalidImage(BadRequest):
    """Bytes sent as an image are not an image Pillow can read."""

    code = "invalid_image"


class NotFound(ApiError):
    """No such route."""

    status, code = 404, "not_found"


class ModelNotFound(NotFound):
    """No model of that name in the repository."""

    code = "model_not_found"


class VersionNotFound(NotFound):
    """The model exists but not that version."""

    code = "version_not_found"


class MethodNotAllowed(ApiError):
    """The route exists, the method does not."""

    status, code = 405, "method_not_allowed"

    @classmethod
    def on(cls, method: str, path: str, allowed: list[str]) -> MethodNotAllowed:
        """The error for ``method`` on a path that answers only ``allowed``."""
        return cls(
            f"{method} is not allowed on {path}",
            details={"allowed": allowed},
            headers=(("Allow", ", ".join(allowed)),),
        )


class Conflict(ApiError):
    """The request contradicts the service's configuration (unloading the default model)."""

    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    """The body is above the configured maximum."""

    status, code = 413, "payload_too_large"

    @classmethod
    def over(cls, limit: int) -> PayloadTooLarge:
        """The error for a body above ``limit`` bytes."""
        return cls(f"the request body is above the limit of {limit:,} bytes")


class ImageTooLarge(PayloadTooLarge):
    """The image declares more pixels than allowed (checked before decoding)."""

    code = "image_too_large"


class DecodeTimeout(PayloadTooLarge):
    """A request's images took longer to decode than the budget allows (checked between
    images, so the worker answers instead of being killed)."""

    code = "decode_timeout"


class UnsupportedMediaType(ApiError):
    """A Content-Type the endpoint does not accept."""

    status, code = 415, "unsupported_media_type"


class ValidationFailed(ApiError):
    """Well-formed request whose content is wrong: shapes, types, NaN, batch size, ..."""

    status, code = 422, "validation_error"


class BatchTooLarge(ValidationFailed):
    """More instances, or instances x elements, than the model's request limits allow."""

    code = "batch_too_large"


class ServiceUnavailable(ApiError):
    """Not ready, or the model failed to load."""

    status, code = 503, "unavailable"


class ModelUnavailable(ServiceUnavailable):
    """The model is in the repository but failed to load."""

    code = "model_unavailable"


class InferenceTimeout(ServiceUnavailable):
    """The model did not answer within the request's inference timeout."""

    code = "inference_timeout"


class InferenceFailed(ApiError):
    """onnxruntime raised on input that passed validation: a server-side fault."""

    status, code = 500, "inference_error"
