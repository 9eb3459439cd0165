"""Errors as the OpenAI API sends them: `{"error": {"message", "type", "param", "code"}}` with an
HTTP status. Clients (the `openai` package among them) turn the status into an exception type
and show the message, so the message says what was wrong and, where it applies, with which field.
"""

from __future__ import annotations

from typing import Optional

# the `type` values OpenAI uses
INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """A request that cannot be answered: raised anywhere in the server, sent as an error body."""

    def __init__(self, status: int, message: str, *, type: str = INVALID_REQUEST, param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid_value(param: Optional[str], message: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def invalid_type(param: str, expected: str, value: object) -> APIError:
    return APIError(400, f"{param} must be {expected}, got {_json_type(value)}", param=param, code="invalid_type")


def unsupported(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="unsupported_value")


def model_not_found(name: str, served: str) -> APIError:
    return APIError(404, f"The model {name!r} does not exist on this server; it serves {served!r} (GET /v1/models)",
                    param="model", code="model_not_found")


def context_length_exceeded(param: str, n_prompt: int, n_ctx: int) -> APIError:
    return APIError(400, f"This model's maximum context length is {n_ctx} tokens, but the prompt has {n_prompt} "
                         f"tokens. Shorten the {param}, or start the server with a larger -c/--ctx-size.",
                    param=param, code="context_length_exceeded")


def body_too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than this server's limit of {limit} bytes "
                         "(--max-request-bytes)", code="request_too_large")


def unsupported_media_type(media_type: str) -> APIError:
    return APIError(415, f"The request body must be JSON sent as 'Content-Type: application/json', got "
                         f"{media_type or 'no Content-Type'!r}", code="unsupported_media_type")


def host_not_allowed(host: str) -> APIError:
    return APIError(403, f"Requests for the host {host!r} are refused: this server answers localhost, 127.0.0.1 "
                         "and [::1] (start it with --allowed-host NAME to add a name)", code="host_not_allowed")


def invalid_api_key(present: bool) -> APIError:
    message = ("Incorrect API key provided." if present else
               "Missing API key: send it as 'Authorization: Bearer <key>'.")
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def queue_full(max_queue: int, retry_after_s: int) -> APIError:
    return APIError(503, f"The server is busy: {max_queue} requests are already waiting for the model. "
                         f"Retry in {retry_after_s} s.", type=SERVER_ERROR, code="queue_full",
                    headers={"Retry-After": str(retry_after_s)})


def shutting_down() -> APIError:
    return APIError(503, "The server is shutting down.", type=SERVER_ERROR, code="shutting_down")


def internal_error(what: str) -> APIError:
    return APIError(500, f"Internal server error: {what}. The server keeps running; the details are in its log.",
                    type=SERVER_ERROR, code="internal_error")


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
