"""Errors on the local HTTP API: ``{"error": {"code", "message", "type"}}`` with an HTTP status
derived from the stable :class:`~calinode.protocol.errors.ErrorCode` (one table, used by every
route, the guard and the raw streaming endpoints)."""

from __future__ import annotations

from starlette.responses import JSONResponse

from calinode.protocol.errors import ErrorCode

__all__ = ["HTTP_STATUS", "error_response"]

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_KIND: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.UNAUTHORIZED: 403,
    ErrorCode.UNKNOWN_MODEL: 404,
    ErrorCode.UNKNOWN_COLLECTION: 404,
    ErrorCode.UNKNOWN_PEER: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.NO_CAPABLE_PEER: 503,
    ErrorCode.SHARD_UNAVAILABLE: 503,
    ErrorCode.PEER_UNREACHABLE: 502,
    ErrorCode.DEADLINE_EXCEEDED: 504,
}


def error_response(code: ErrorCode, message: str) -> JSONResponse:
    status = HTTP_STATUS.get(code, 500)
    kind = "invalid_request_error" if status < 500 else "server_error"  # OpenAI clients read it
    return JSONResponse({"error": {"code": code.value, "message": message, "type": kind}},
                        status_code=status)
