"""Sample applications: one per behaviour the tests exercise."""

import asyncio
import datetime
import enum
import threading
import time
import uuid
from decimal import Decimal

from pydantic import BaseModel, field_validator

from ociapp import Application, request_deadline


class EchoRequest(BaseModel):
    value: str


class EchoResponse(BaseModel):
    value: str


class EchoApplication(Application[EchoRequest, EchoResponse]):
    async def execute(self, request: EchoRequest) -> EchoResponse:
        return EchoResponse(value=request.value)


app = EchoApplication()


class StrictRequest(BaseModel):
    value: str

    @field_validator("value")
    @classmethod
    def _not_bad(cls, value: str) -> str:
        if value == "bad":
            raise ValueError("bad value")
        return value


class StrictApplication(Application[StrictRequest, EchoResponse]):
    """Its validator raises ValueError, which pydantic keeps in the error's ctx."""

    async def execute(self, request: StrictRequest) -> EchoResponse:
        return EchoResponse(value=request.value)


strict_app = StrictApplication()


class QuotaExceeded(Exception):
    pass


class Silent(Exception):
    pass


class FailingApplication(Application[EchoRequest, EchoResponse]):
    async def execute(self, request: EchoRequest) -> EchoResponse:
        if request.value == "silent":
            raise Silent()
        if request.value == "quota":
            raise QuotaExceeded("quota exceeded")
        if request.value == "cancel":
            raise asyncio.CancelledError()
        raise RuntimeError("boom")


failing_app = FailingApplication()


class WrongResponseApplication(Application[EchoRequest, EchoResponse]):
    async def execute(self, request: EchoRequest) -> EchoResponse:
        return {"value": 42}  # type: ignore[return-value]


wrong_response_app = WrongResponseApplication()


class DictResponseApplication(Application[EchoRequest, EchoResponse]):
    async def execute(self, request: EchoRequest) -> EchoResponse:
        return {"value": request.value}  # type: ignore[return-value]


dict_response_app = DictResponseApplication()


class Color(enum.Enum):
    RED = "red"


class RichResponse(BaseModel):
    when: datetime.datetime
    day: datetime.date
    ident: uuid.UUID
    amount: Decimal
    color: Color
    tags: set[str]
    raw: bytes
    ratio: float
    nothing: None = None


class RichApplication(Application[EchoRequest, RichResponse]):
    async def execute(self, request: EchoRequest) -> RichResponse:
        return RichResponse(
            when=datetime.datetime(2026, 11, 26, 12, 30, tzinfo=datetime.timezone.utc),
            day=datetime.date(2026, 11, 26),
            ident=uuid.UUID("5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f"),
            amount=Decimal("1.50"),
            color=Color.RED,
            tags={"a"},
            raw=b"\x00\x01",
            ratio=0.5,
        )


rich_app = RichApplication()


class Opaque:
    pass


class OpaqueResponse(BaseModel, arbitrary_types_allowed=True):
    thing: Opaque | str


class OpaqueApplication(Application[EchoRequest, OpaqueResponse]):
    async def execute(self, request: EchoRequest) -> OpaqueResponse:
        if request.value == "opaque":
            return OpaqueResponse(thing=Opaque())
        return OpaqueResponse(thing=request.value)


opaque_app = OpaqueApplication()


class TimedRequest(BaseModel):
    when: datetime.datetime


class TimedApplication(Application[TimedRequest, EchoResponse]):
    async def execute(self, request: TimedRequest) -> EchoResponse:
        return EchoResponse(value=request.when.isoformat())


timed_app = TimedApplication()


class SleepRequest(BaseModel):
    value: str
    seconds: float = 0.0


class SleepyApplication(Application[SleepRequest, EchoResponse]):
    """Async: sleeps as long as asked, then echoes."""

    async def execute(self, request: SleepRequest) -> EchoResponse:
        await asyncio.sleep(request.seconds)
        return EchoResponse(value=request.value)


sleepy_app = SleepyApplication()


class BlockingApplication(Application[SleepRequest, EchoResponse]):
    """Plain def: blocks its thread with time.sleep, as blocking code does."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.release = threading.Event()

    def execute(self, request: SleepRequest) -> EchoResponse:
        self.threads.append(threading.get_ident())
        if request.value == "wait":
            # Returns only once the test has seen another response come back.
            if not self.release.wait(timeout=10):
                raise TimeoutError("never released")
        time.sleep(request.seconds)
        return EchoResponse(value=request.value)


blocking_app = BlockingApplication()


class GatedApplication(Application[EchoRequest, EchoResponse]):
    """Each request waits until the test opens the gate for its value."""

    def __init__(self) -> None:
        self.started: dict[str, asyncio.Event] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.cancelled: list[str] = []

    def gate(self, value: str) -> asyncio.Event:
        return self.gates.setdefault(value, asyncio.Event())

    def started_event(self, value: str) -> asyncio.Event:
        return self.started.setdefault(value, asyncio.Event())

    async def execute(self, request: EchoRequest) -> EchoResponse:
        self.started_event(request.value).set()
        try:
            await self.gate(request.value).wait()
        except asyncio.CancelledError:
            self.cancelled.append(request.value)
            raise
        return EchoResponse(value=request.value)


class TaskAwareApplication(Application[EchoRequest, EchoResponse]):
    """Uses APIs that need a current task, as real applications do."""

    async def execute(self, request: EchoRequest) -> EchoResponse:
        assert asyncio.current_task() is not None
        async with asyncio.timeout(5):
            async with asyncio.TaskGroup() as group:
                task = group.create_task(asyncio.sleep(0, request.value))
        return EchoResponse(value=task.result())


task_aware_app = TaskAwareApplication()


class DeadlineApplication(Application[SleepRequest, EchoResponse]):
    """Records, per value, what request_deadline() says at the handler's
    start, the loop time then, and what a task the handler starts sees.

    Values starting with "bounded" sleep under asyncio.timeout_at(deadline);
    others sleep as asked, past any deadline.
    """

    def __init__(self) -> None:
        self.seen: dict[str, tuple[float | None, float, float | None]] = {}

    async def execute(self, request: SleepRequest) -> EchoResponse:
        now = asyncio.get_running_loop().time()
        child = await asyncio.create_task(self._child())
        self.seen[request.value] = (request_deadline(), now, child)
        if request.value.startswith("bounded"):
            async with asyncio.timeout_at(request_deadline()):
                await asyncio.sleep(request.seconds)
        else:
            await asyncio.sleep(request.seconds)
        return EchoResponse(value=request.value)

    async def _child(self) -> float | None:
        return request_deadline()


class SyncDeadlineApplication(Application[EchoRequest, EchoResponse]):
    """Plain def: records what request_deadline() says in its worker thread."""

    def __init__(self) -> None:
        self.seen: dict[str, float | None] = {}

    def execute(self, request: EchoRequest) -> EchoResponse:
        self.seen[request.value] = request_deadline()
        return EchoResponse(value=request.value)


class CancellableApplication(Application[EchoRequest, EchoResponse]):
    """Values starting with "sleep" wait an hour; others echo at once.

    Records which requests saw CancelledError, and finished their cleanup.
    """

    def __init__(self) -> None:
        self.started: dict[str, asyncio.Event] = {}
        self.cancelled: dict[str, asyncio.Event] = {}

    def started_event(self, value: str) -> asyncio.Event:
        return self.started.setdefault(value, asyncio.Event())

    def cancelled_event(self, value: str) -> asyncio.Event:
        return self.cancelled.setdefault(value, asyncio.Event())

    async def execute(self, request: EchoRequest) -> EchoResponse:
        if request.value.startswith("sleep"):
            self.started_event(request.value).set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0)  # cleanup may still await
                self.cancelled_event(request.value).set()
                raise
        return EchoResponse(value=request.value)

not_an_app = object()


class MissingResponseAnnotation(Application[EchoRequest, EchoResponse]):
    async def execute(self, request: EchoRequest):  # type: ignore[no-untyped-def]
        return EchoResponse(value=request.value)


missing_response_app = MissingResponseAnnotation()


class DictRequestAnnotation(Application[EchoRequest, EchoResponse]):
    async def execute(self, request: dict) -> EchoResponse:  # type: ignore[override]
        return EchoResponse(value="x")


dict_request_app = DictRequestAnnotation()


class TwoParameters(Application[EchoRequest, EchoResponse]):
    async def execute(self, request: EchoRequest, extra: int) -> EchoResponse:  # type: ignore[override]
        return EchoResponse(value=request.value)


two_parameters_app = TwoParameters()
