"""OpenAI-style errors: `{"error": {"message", "type", "code"}}` with the HTTP status an OpenAI client expects.

The `openai` SDK turns the status into its exception classes (400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 413/502 APIStatusError ...) and shows `error.message`, so that line is what the app's user
reads: it names the field or the cause, never a traceback.
"""

from starlette.responses import JSONResponse


class APIError(Exception):
    """A request that cannot be answered; raised anywhere in a route, turned into one JSON reply and one log line."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type, code
        self.extra = extra or {}  # e.g. the audit trail of an episode whose upstream failed

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}, **self.extra}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad_request(message: str, code: str = "invalid_body") -> APIError:
    return APIError(400, message, "invalid_request_error", code)


def not_found(message: str, code: str = "not_found") -> APIError:
    return APIError(404, message, "invalid_request_error", code)
