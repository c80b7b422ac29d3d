"""OCIApp's Python SDK: define an Application and serve it inside a container."""

from .application import Application
from .errors import (
    ApplicationLoadError,
    EnvelopeError,
    ErrorPayload,
    FrameError,
    OCIAppError,
    PayloadCodecError,
    ProtocolError,
    ServerLifecycleError,
)
from .loader import load_application
from .models import RequestEnvelope, ResponseEnvelope
from .payloads import decode_payload, encode_payload
from .protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_SOCKET_PATH,
    SOCKET_PATH,
    FrameDecoder,
    decode_error_payload,
    decode_request_envelope,
    decode_response_envelope,
    encode_error_payload,
    encode_request_envelope,
    encode_response_envelope,
    pack_frame,
    read_frame,
    write_frame,
)
from .server import OciAppServer, request_deadline, serve_application

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_SOCKET_PATH",
    "SOCKET_PATH",
    "Application",
    "ApplicationLoadError",
    "EnvelopeError",
    "ErrorPayload",
    "FrameDecoder",
    "FrameError",
    "OCIAppError",
    "OciAppServer",
    "PayloadCodecError",
    "ProtocolError",
    "RequestEnvelope",
    "ResponseEnvelope",
    "ServerLifecycleError",
    "decode_error_payload",
    "decode_payload",
    "decode_request_envelope",
    "decode_response_envelope",
    "encode_error_payload",
    "encode_payload",
    "encode_request_envelope",
    "encode_response_envelope",
    "load_application",
    "pack_frame",
    "read_frame",
    "request_deadline",
    "serve_application",
    "write_frame",
]
