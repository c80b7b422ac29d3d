"""An application whose annotations are strings (PEP 563)."""

from __future__ import annotations

from pydantic import BaseModel

from ociapp import Application


class Request(BaseModel):
    value: int


class Response(BaseModel):
    doubled: int


class DoublingApplication(Application[Request, Response]):
    async def execute(self, request: Request) -> Response:
        return Response(doubled=request.value * 2)


app = DoublingApplication()
