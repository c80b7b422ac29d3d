"""Stream handlers (the stream capability): one per behaviour the tests
exercise. Each test makes its own instance: they count what they produce."""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from pydantic import BaseModel

from ociapp import Application, request_deadline


class StreamRequest(BaseModel):
    count: int = 0  # -1: until cancelled
    fail_at: int = -1  # raise StreamFailed before item fail_at
    bad_at: int = -1  # yield an item that is not valid at this index
    block_at: int = -1  # wait until cancelled before item block_at
    size: int = 0


class Item(BaseModel):
    i: int
    pad: str = ""


class StreamFailed(Exception):
    pass


class StreamingApplication(Application[StreamRequest, Item]):
    def __init__(self) -> None:
        super().__init__()
        self.produced = 0  # items made by the current or last stream
        self.closed_by: list[str] = []  # what ended each stream early
        self.closed = asyncio.Event()
        self.blocked = asyncio.Event()

    async def execute(self, request: StreamRequest) -> AsyncIterator[Item]:
        self.produced = 0
        index = 0
        try:
            while request.count < 0 or index < request.count:
                if index == request.fail_at:
                    raise StreamFailed(f"failed at {index}")
                if index == request.block_at:
                    self.blocked.set()
                    await asyncio.sleep(3600)
                self.produced += 1
                if index == request.bad_at:
                    yield {"i": "not a number"}  # type: ignore[misc]
                else:
                    yield Item(i=index, pad="x" * request.size)
                index += 1
            if index == request.fail_at:
                raise StreamFailed(f"failed at {index}")
        except (asyncio.CancelledError, GeneratorExit) as exc:
            self.closed_by.append(type(exc).__name__)
            self.closed.set()
            raise


class N(BaseModel):
    n: int


class OneItemApplication(Application[N, N]):
    """Yields its request back: the stream vectors' item is {"n": 1}."""

    async def execute(self, request: N) -> AsyncGenerator[N, None]:
        yield request


class DeadlineStreamApplication(Application[N, N]):
    """Yields the milliseconds its stream has left (-1 without a deadline),
    request.n times, waiting a moment between items."""

    async def execute(self, request: N) -> AsyncIterator[N]:
        for _ in range(request.n):
            deadline = request_deadline()
            if deadline is None:
                yield N(n=-1)
            else:
                yield N(n=int((deadline - asyncio.get_running_loop().time()) * 1000))
            await asyncio.sleep(0)


app = StreamingApplication()
