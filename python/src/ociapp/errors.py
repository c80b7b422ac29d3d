"""Exceptions and the structured error payload of the OCIApp protocol."""

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ApplicationLoadError",
    "EnvelopeError",
    "ErrorPayload",
    "FrameError",
    "OCIAppError",
    "PayloadCodecError",
    "ProtocolError",
    "ServerLifecycleError",
]


class OCIAppError(Exception):
    """Base class of every OCIApp failure."""


class ProtocolError(OCIAppError):
    """The peer broke the wire protocol; the connection cannot continue."""


class FrameError(ProtocolError):
    """A frame is malformed: zero length, truncated, or over the size limit.

    ``fault`` names the problem: "zero_length", "truncated_header",
    "truncated_body" or "too_large".
    """

    def __init__(self, message: str, *, fault: str | None = None) -> None:
        super().__init__(message)
        self.fault = fault


class EnvelopeError(ProtocolError):
    """A frame body is not a valid request or response envelope."""


class PayloadCodecError(OCIAppError):
    """A payload is not a msgpack map with string keys, or cannot be encoded."""


class ApplicationLoadError(OCIAppError):
    """An application import path does not name a usable Application."""


class ServerLifecycleError(OCIAppError):
    """The server cannot set up or manage its socket."""


class ErrorPayload(BaseModel):
    """The error map a response carries instead of a payload."""

    model_config = ConfigDict(frozen=True)

    error_type: str
    message: str
    details: object | None = None
