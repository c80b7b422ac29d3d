"""The payload codec and its error messages."""

import datetime

import msgpack
import pytest

from ociapp import PayloadCodecError, decode_payload, encode_payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "payload is not valid msgpack"),
        (b"\xc1", "payload is not valid msgpack"),
        (b"\x80\x00", "payload is not valid msgpack"),
        (b"\x81\xa1a\xa2\xff\xfe", "payload is not valid msgpack"),  # invalid UTF-8
        (msgpack.packb([1]), "payload must decode to a msgpack map"),
        (msgpack.packb(None), "payload must decode to a msgpack map"),
        (msgpack.packb({1: 2}), "payload keys must be strings"),
        (msgpack.packb({b"k": 2}, use_bin_type=True), "payload keys must be strings"),
        # A map keyed by an array is valid msgpack that Python cannot hash.
        (b"\x81\x91\x01\x02", "payload keys must be strings"),
        (b"\x91\x81\x91\x01\x02", "payload must decode to a msgpack map"),
        (b"\x81\xa1a\x81\x91\x01\x02", "payload is not valid msgpack"),
    ],
)
def test_decode_failures(payload: bytes, message: str) -> None:
    with pytest.raises(PayloadCodecError) as raised:
        decode_payload(payload)
    assert str(raised.value) == message


def test_decode() -> None:
    payload = msgpack.packb({"a": [1, {"b": b"\x00"}], "c": None}, use_bin_type=True)
    assert decode_payload(payload) == {"a": [1, {"b": b"\x00"}], "c": None}


def test_nested_non_string_keys_are_allowed() -> None:
    assert decode_payload(msgpack.packb({"a": {1: "x"}})) == {"a": {1: "x"}}


def test_timestamps_decode_to_aware_datetimes() -> None:
    when = datetime.datetime(2026, 11, 26, tzinfo=datetime.timezone.utc)
    assert decode_payload(msgpack.packb({"t": when}, datetime=True)) == {"t": when}


def test_encode() -> None:
    assert encode_payload({"value": "hi"}) == msgpack.packb({"value": "hi"}, use_bin_type=True)
    assert msgpack.unpackb(encode_payload({"d": datetime.date(2026, 11, 26)})) == {"d": "2026-11-26"}


def test_encode_failure() -> None:
    with pytest.raises(PayloadCodecError, match="payload is not msgpack serializable"):
        encode_payload({"x": object()})
    with pytest.raises(PayloadCodecError, match="payload is not msgpack serializable"):
        encode_payload({"x": 2**70})
