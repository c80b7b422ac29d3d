"""Exceptions of the OCIApp runtime, named as the original runtime named them.

Every failure the daemon reports carries a stable ``code`` (see
docs/daemon.md) and is raised as the exception for that code; the daemon's
whole error body stays available as ``info``.
"""

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ArtifactLoadError",
    "DaemonUnavailableError",
    "EngineUnavailableError",
    "ErrorPayload",
    "InstanceShutdownError",
    "InstanceStartupError",
    "OCIAppRuntimeError",
    "OverloadedError",
    "RemoteExecutionError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ResponseProtocolError",
    "RuntimeClosedError",
    "UnauthorizedError",
    "WorkerCrashError",
    "STATUS_BY_CODE",
    "error_from_body",
]


class OCIAppRuntimeError(Exception):
    """Base exception for OCIApp runtime failures.

    ``code`` is the daemon's error code and ``status`` the HTTP status, when
    the error came from the daemon; ``info`` is its whole error body.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.info: dict[str, Any] = info or {}


class ArtifactLoadError(OCIAppRuntimeError):
    """Raised when a ``.ociapp`` archive is missing, corrupt or cannot be loaded."""


class InstanceStartupError(OCIAppRuntimeError):
    """Raised when a container does not become ready.

    ``exit_code`` is set when the container exited; ``logs`` is the tail of
    its output.
    """

    @property
    def exit_code(self) -> int | None:
        return self.info.get("exit_code") if self.info.get("exited") else None

    @property
    def logs(self) -> str:
        return self.info.get("logs", "")


class InstanceShutdownError(OCIAppRuntimeError):
    """Raised when the runtime cannot be stopped cleanly."""


class RequestTimeoutError(OCIAppRuntimeError):
    """Raised when a request exceeds the request timeout, or the caller's
    ``timeout=``."""


class ResponseProtocolError(OCIAppRuntimeError):
    """Raised when a worker's connection broke or carried malformed data."""


class WorkerCrashError(ResponseProtocolError):
    """Raised when the container serving a request died before answering.

    The request may or may not have taken effect. ``exit_code`` is set when
    the container exited, ``oom_killed`` when it exceeded its memory limit.
    """

    @property
    def exit_code(self) -> int | None:
        return self.info.get("exit_code") if self.info.get("exited") else None

    @property
    def oom_killed(self) -> bool:
        return bool(self.info.get("oom_killed"))

    @property
    def logs(self) -> str:
        return self.info.get("logs", "")


class OverloadedError(OCIAppRuntimeError):
    """Raised when too many requests already wait for a container; retry later."""


class EngineUnavailableError(OCIAppRuntimeError):
    """Raised when the container engine (Docker) cannot be reached."""


class UnauthorizedError(OCIAppRuntimeError):
    """Raised when the daemon refuses the bearer token, or none was given."""


class RequestTooLargeError(OCIAppRuntimeError):
    """Raised when a request or an artifact exceeds the daemon's size limit."""

    @property
    def limit(self) -> int | None:
        return self.info.get("limit")


class RuntimeClosedError(OCIAppRuntimeError):
    """Raised when the runtime is shutting down."""


class DaemonUnavailableError(OCIAppRuntimeError):
    """Raised when the runtime daemon cannot be reached."""


@dataclass(frozen=True, slots=True)
class ErrorPayload:
    """The error an application reported: its type, message and details."""

    error_type: str
    message: str
    details: Any = None


class RemoteExecutionError(OCIAppRuntimeError):
    """Represents a structured application error returned by OCIApp."""

    error: ErrorPayload

    def __init__(self, error: ErrorPayload, **kwargs: Any) -> None:
        self.error = error
        super().__init__(f"{error.error_type}: {error.message}", **kwargs)

    @property
    def error_type(self) -> str:
        return self.error.error_type

    @property
    def message(self) -> str:
        return self.error.message

    @property
    def details(self) -> Any:
        return self.error.details

    def __str__(self) -> str:
        return f"{self.error.error_type}: {self.error.message}"


# The HTTP status of each error code (docs/daemon.md), for errors that
# arrive on the execute channel, which has no status of its own.
STATUS_BY_CODE: dict[str, int] = {
    "app_error": 422,
    "request_timeout": 504,
    "startup_failed": 502,
    "worker_crashed": 502,
    "overloaded": 503,
    "artifact_invalid": 422,
    "artifact_not_found": 404,
    "engine_unavailable": 503,
    "closed": 503,
    "unauthorized": 401,
    "body_too_large": 413,
    "body_timeout": 408,
    "storage_full": 507,
    "bad_request": 400,
    "unsupported_media_type": 415,
    "not_found": 404,
    "method_not_allowed": 405,
    "internal": 500,
}

_BY_CODE: dict[str, type[OCIAppRuntimeError]] = {
    "request_timeout": RequestTimeoutError,
    "startup_failed": InstanceStartupError,
    "worker_crashed": WorkerCrashError,
    "overloaded": OverloadedError,
    "artifact_invalid": ArtifactLoadError,
    "artifact_not_found": ArtifactLoadError,
    "engine_unavailable": EngineUnavailableError,
    "unauthorized": UnauthorizedError,
    "body_too_large": RequestTooLargeError,
    "closed": RuntimeClosedError,
}


def error_from_body(status: int, body: Any) -> OCIAppRuntimeError:
    """Builds the exception for an error response of the daemon.

    ``body`` is the decoded error body; anything that is not one (a proxy's
    page, say) gives a plain ``OCIAppRuntimeError`` naming the status.
    """

    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return OCIAppRuntimeError(
            f"the runtime daemon answered HTTP {status}: {body!r:.200}",
            status=status,
        )
    code = body["code"]
    message = str(body.get("message", ""))
    if code == "app_error":
        payload = ErrorPayload(
            error_type=str(body.get("error_type", "")),
            message=message,
            details=body.get("details"),
        )
        return RemoteExecutionError(payload, code=code, status=status, info=body)
    cls = _BY_CODE.get(code, OCIAppRuntimeError)
    return cls(message, code=code, status=status, info=body)
