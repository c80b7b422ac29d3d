"""A CPU-bound test application: one request occupies the interpreter."""

from ociapp import Application
from pydantic import BaseModel


class WorkRequest(BaseModel):
    iterations: int


class WorkResponse(BaseModel):
    result: int


class CPUApplication(Application[WorkRequest, WorkResponse]):
    async def execute(self, request: WorkRequest) -> WorkResponse:
        x = 1
        for i in range(request.iterations):
            x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF
        return WorkResponse(result=x)


app = CPUApplication()
