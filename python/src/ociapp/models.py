"""Envelope models of the original SDK's public API.

The server itself decodes envelopes into plain tuples (see protocol.py);
these models serve code that builds or inspects envelopes by hand.
"""

from uuid import UUID

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

__all__ = ["RequestEnvelope", "ResponseEnvelope"]


class RequestEnvelope(BaseModel):
    """A request: its id and the msgpack-encoded request payload."""

    model_config = ConfigDict(frozen=True)

    request_id: UUID
    payload: bytes

    @field_validator("payload", mode="before")
    @classmethod
    def _payload_is_bytes(cls, value: object) -> object:
        if not isinstance(value, bytes):
            raise ValueError("payload must be bytes")
        return value


class ResponseEnvelope(BaseModel):
    """A response: its request's id and either a payload or an error."""

    model_config = ConfigDict(frozen=True)

    request_id: UUID
    payload: bytes | None = None
    error: bytes | None = None

    @field_validator("payload", "error", mode="before")
    @classmethod
    def _bytes_or_none(cls, value: object) -> object:
        if value is not None and not isinstance(value, bytes):
            raise ValueError("payload and error must be bytes or null")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> "ResponseEnvelope":
        if (self.payload is None) == (self.error is None):
            raise ValueError("response envelopes must include exactly one of payload or error")
        return self
