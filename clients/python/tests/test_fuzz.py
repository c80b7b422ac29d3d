"""Random and mutated input from the daemon: the execute channel's frame
decoder fails only by breaking the channel with a typed error, never by
raising out of the event loop's callback or by holding more of a stream
than its window."""

import asyncio
import random

import msgpack
from ociapp_runtime._mux import MuxChannel, MuxStream

UPGRADED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ociapp-mux/1\r\nOciapp-Mux-Features: cancel, stream\r\n\r\n"
WINDOW = 4


class Transport(asyncio.Transport):
    """Takes what the channel writes (credits, cancels) and its close."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def frame(msg: object) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def seeds() -> list[bytes]:
    item = msgpack.packb({"i": 1, "pad": "xx"})
    error = msgpack.packb({"code": "app_error", "message": "boom", "error_type": "Boom"})
    return [
        frame({"id": 1, "payload": item}),
        frame({"id": 1, "error": error}),
        frame({"id": 2, "item": item}),
        frame({"id": 2, "end": True}),
        frame({"id": 2, "error": error}),
        frame({"id": 2, "payload": item}),
        frame({"id": 2, "item": item}) * (WINDOW + 1),
        frame({"id": 3, "item": item}),
        frame([1, 2]),
        frame({"id": [1], "payload": item}),
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            b.insert(rng.randint(0, len(b)), rng.randrange(256))
        elif op == 2 and b:
            del b[rng.randrange(len(b))]
        else:
            b += rng.choice(seeds())
    return bytes(b)


async def test_channel_survives_any_bytes() -> None:
    rng = random.Random(20261129)
    all_seeds = seeds()
    broken = answered = 0
    for _ in range(3000):
        channel = MuxChannel(timeout=60)
        transport = Transport()
        channel.connection_made(transport)
        channel.data_received(UPGRADED)
        call = asyncio.get_running_loop().create_future()
        channel._pending[1] = call
        stream = MuxStream(channel, 2, WINDOW)
        channel._streams[2] = stream

        data = mutate(rng, rng.choice(all_seeds)) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 64))
        # Split across reads anywhere, as a socket may deliver it.
        cut = rng.randint(0, len(data))
        channel.data_received(data[:cut])
        channel.data_received(data[cut:])

        items, size = stream.buffered
        assert items <= WINDOW + 1  # the window, or a one-response answer's one item
        if channel._error is not None:
            # A broken channel says why, closes its connection and fails
            # what waited on it.
            assert isinstance(channel._error, (OSError, ValueError, KeyError, TypeError, msgpack.UnpackException))
            assert transport.closed
            assert call.done()
        broken += channel._error is not None
        answered += call.done() and channel._error is None
        channel._fail(ConnectionError("test over"))
        call.exception()  # retrieved, so asyncio does not log it
    # The mutations reached both outcomes.
    assert broken > 100 and answered > 100, (broken, answered)
