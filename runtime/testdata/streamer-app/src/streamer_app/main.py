"""Exercises the protocol's stream capability: execute is an async generator.

{"count": N, "size": S} yields N items {"i": i, "pad": "x" * S}, i from 0
(N -1: until cancelled); with "fail_at": K (K >= 0) it raises StreamFailed
("failed at K") once K items are out. {"op": "produced"} yields one item
whose i is how many items the current or last stream made (counted just
before each yield: with a consumer that stops granting credit, at most its
credit plus the one item waiting for credit); {"op": "cancelled"} one whose
i is how many streams were closed or cancelled before their end.
"""

import asyncio
from collections.abc import AsyncIterator

from ociapp import Application
from pydantic import BaseModel


class Request(BaseModel):
    op: str = ""
    count: int = 0
    size: int = 0
    fail_at: int = -1


class Item(BaseModel):
    i: int
    pad: str


class StreamFailed(Exception):
    pass


class StreamerApplication(Application[Request, Item]):
    def __init__(self) -> None:
        super().__init__()
        self.produced = 0
        self.cancelled = 0

    async def execute(self, request: Request) -> AsyncIterator[Item]:
        if request.op == "produced":
            yield Item(i=self.produced, pad="")
            return
        if request.op == "cancelled":
            yield Item(i=self.cancelled, pad="")
            return
        if request.op:
            raise ValueError(f"unknown op {request.op}")
        self.produced = 0
        pad = "x" * request.size
        try:
            index = 0
            while request.count < 0 or index < request.count:
                if index == request.fail_at:
                    break
                self.produced += 1
                yield Item(i=index, pad=pad)
                index += 1
            if index == request.fail_at:
                raise StreamFailed(f"failed at {request.fail_at}")
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


app = StreamerApplication()
