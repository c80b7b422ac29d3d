"""Run OCIApp artifacts from Python through the ociapp-runtime daemon."""

from .errors import (
    ArtifactLoadError,
    DaemonUnavailableError,
    EngineUnavailableError,
    ErrorPayload,
    InstanceShutdownError,
    InstanceStartupError,
    OCIAppRuntimeError,
    OverloadedError,
    RemoteExecutionError,
    RequestTimeoutError,
    RequestTooLargeError,
    ResponseProtocolError,
    RuntimeClosedError,
    UnauthorizedError,
    WorkerCrashError,
)
from .runtime import Runtime

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
    "Runtime",
    "RuntimeClosedError",
    "UnauthorizedError",
    "WorkerCrashError",
]
