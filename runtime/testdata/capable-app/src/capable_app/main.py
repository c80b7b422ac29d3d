"""Exercises the protocol capabilities, as the Go test app "capable" does.

{"op": "deadline"} answers the milliseconds its handler has (-1 without a
deadline); {"op": "block"} waits until its request is cancelled;
{"op": "cancelled"} answers how many requests were cancelled so far, and
{"op": "cancelled_at"} the Unix time in nanoseconds of the last one.
"""

import asyncio
import time

import ociapp
from ociapp import Application
from pydantic import BaseModel


class Request(BaseModel):
    op: str


class Response(BaseModel):
    n: int


class CapableApplication(Application[Request, Response]):
    def __init__(self) -> None:
        super().__init__()
        self.cancelled = 0
        self.cancelled_at = 0

    async def execute(self, request: Request) -> Response:
        if request.op == "deadline":
            deadline = ociapp.request_deadline()
            if deadline is None:
                return Response(n=-1)
            return Response(n=int((deadline - asyncio.get_running_loop().time()) * 1000))
        if request.op == "block":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled_at = time.time_ns()
                self.cancelled += 1
                raise
            return Response(n=0)
        if request.op == "cancelled":
            return Response(n=self.cancelled)
        if request.op == "cancelled_at":
            return Response(n=self.cancelled_at)
        raise ValueError(f"unknown op {request.op}")


app = CapableApplication()
