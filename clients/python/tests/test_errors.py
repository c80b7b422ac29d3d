import pytest
from ociapp_runtime import (
    ArtifactLoadError,
    EngineUnavailableError,
    ErrorPayload,
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
from ociapp_runtime.errors import error_from_body


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("request_timeout", RequestTimeoutError),
        ("startup_failed", InstanceStartupError),
        ("worker_crashed", WorkerCrashError),
        ("overloaded", OverloadedError),
        ("artifact_invalid", ArtifactLoadError),
        ("artifact_not_found", ArtifactLoadError),
        ("engine_unavailable", EngineUnavailableError),
        ("unauthorized", UnauthorizedError),
        ("body_too_large", RequestTooLargeError),
        ("closed", RuntimeClosedError),
        ("bad_request", OCIAppRuntimeError),
        ("a_future_code", OCIAppRuntimeError),
    ],
)
def test_codes_map_to_exceptions(code: str, cls: type) -> None:
    body = {"code": code, "message": "what happened", "limit": 5}
    err = error_from_body(503, body)
    assert type(err) is cls
    assert str(err) == "what happened"
    assert (err.code, err.status, err.info) == (code, 503, body)


def test_app_error_is_the_originals_remote_execution_error() -> None:
    body = {"code": "app_error", "error_type": "Boom", "message": "failed", "details": {"reason": "test"}}
    err = error_from_body(422, body)
    assert isinstance(err, RemoteExecutionError)
    assert err.error == ErrorPayload(error_type="Boom", message="failed", details={"reason": "test"})
    assert (err.error_type, err.message, err.details) == ("Boom", "failed", {"reason": "test"})
    assert str(err) == "Boom: failed"
    # Built as the original built it, too.
    assert str(RemoteExecutionError(ErrorPayload("E", "m"))) == "E: m"


def test_crash_is_a_protocol_error_with_its_exit() -> None:
    err = error_from_body(502, {"code": "worker_crashed", "message": "m", "exited": True, "exit_code": 137, "oom_killed": True, "logs": "l"})
    assert isinstance(err, ResponseProtocolError)
    assert (err.exit_code, err.oom_killed, err.logs) == (137, True, "l")
    startup = error_from_body(502, {"code": "startup_failed", "message": "m"})
    assert startup.exit_code is None and startup.logs == ""
    assert error_from_body(413, {"code": "body_too_large", "message": "m", "limit": 9}).limit == 9


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", {"message": "no code"}, None, ["x"]])
def test_foreign_bodies(body: object) -> None:
    err = error_from_body(502, body)
    assert type(err) is OCIAppRuntimeError
    assert err.status == 502 and err.code is None
    assert "HTTP 502" in str(err)
