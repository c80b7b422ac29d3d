"""Run OCIApp artifacts from Python through the ociapp-runtime daemon."""

from .engine import DockerAdapter, EngineAdapter, KubernetesAdapter
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
    "DockerAdapter",
    "EngineAdapter",
    "EngineUnavailableError",
    "ErrorPayload",
    "InstanceShutdownError",
    "InstanceStartupError",
    "KubernetesAdapter",
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
