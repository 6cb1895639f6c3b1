"""TuneScoutError and its subclasses; register(app) turns every error into JSON."""

from __future__ import annotations

import logging
import typing

if typing.TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

_HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    400: "Bad request",
    429: "Too many requests",
}


class TuneScoutError(Exception):
    """Base error: a status code, a message for the client and extra JSON fields."""

    status = 500
    message = "Internal server error"

    def __init__(self, message: str | None = None, **extra):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.extra = extra


class BadRequestError(TuneScoutError):
    status, message = 400, "Bad request"


class UnauthorizedError(TuneScoutError):
    status, message = 401, "Token missing or invalid"


class ForbiddenError(TuneScoutError):
    status, message = 403, "Fingerprinting not allowed"


class NotFoundError(TuneScoutError):
    status, message = 404, "The requested data could not be found"


class DuplicateSongError(TuneScoutError):
    status, message = 409, "Already fingerprinted"


class PayloadTooLargeError(TuneScoutError):
    status, message = 413, "File too large"


class UnprocessableError(TuneScoutError):
    status, message = 422, "The audio cannot be used"


class BadAudioError(TuneScoutError):
    status, message = 415, "Failed to process input file"


class StorageError(TuneScoutError):
    status, message = 503, "Storage unavailable"


class QueueFullError(TuneScoutError):
    """Every scan worker is busy and the queue is full; ``retry_after_s`` goes out as Retry-After."""

    status, message = 503, "Too many scans queued; try again later"


class IndexMismatchError(StorageError):
    """The index was built with other fingerprint parameters."""

    message = "Index built with other fingerprint parameters"


def error_body(message: str, **extra) -> dict:
    """The one JSON error shape of the API."""
    return {"status": "error", "message": message, **extra}


def register(app: Flask) -> None:
    """Install the three handlers: our errors, HTTP errors, anything else."""
    # Imported here: the error classes are also raised where there is no Flask (the uploader's
    # local fingerprinting decodes through tunescout.audio).
    from flask import jsonify
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(TuneScoutError)
    def _ours(exc: TuneScoutError):
        if exc.status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        response = jsonify(error_body(exc.message, **exc.extra))
        if "retry_after_s" in exc.extra:
            response.headers["Retry-After"] = str(exc.extra["retry_after_s"])
        return response, exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        message = _HTTP_MESSAGES.get(exc.code or 500, exc.name)
        response = jsonify(error_body(message))
        original = exc.get_response().headers
        for name in ("Retry-After", "Allow"):
            if original.get(name):
                response.headers[name] = original[name]
        return response, exc.code

    @app.errorhandler(Exception)
    def _other(exc: Exception):
        log.exception("unhandled error")
        return jsonify(error_body("Internal server error")), 500
