"""The Application base class: one typed execute(request) -> response handler,
or a stream handler, whose execute is an async generator of items."""

import collections.abc
import functools
import inspect
import typing
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, validate_call

__all__ = ["Application", "RequestT", "ResponseT"]

RequestT = TypeVar("RequestT", bound=BaseModel)
ResponseT = TypeVar("ResponseT", bound=BaseModel)

# Where __init_subclass__ records (validated wrapper, function as written) for
# the class that defines execute, so the server can skip the wrapper and run
# the same validation with less overhead.
_EXECUTE_ORIGIN = "_ociapp_execute"


class Application(ABC, Generic[RequestT, ResponseT]):
    """The sandbox-side contract of an OCIApp application.

    Subclass it and define ``execute`` with a pydantic model as its one
    parameter's annotation and as its return annotation. ``execute`` may be
    ``async def`` or plain ``def``; the server runs a plain one in a worker
    thread. Called directly, ``execute`` validates its argument into the
    request model (so a dict works) and its return value as the response
    model, as pydantic's ``validate_call`` does.

    An ``execute`` written as an async generator (``async def`` with
    ``yield``), annotated ``-> AsyncIterator[Item]``, streams: each value it
    yields is validated as Item and sent as one item of the response stream
    (the protocol's stream capability). Called directly, it validates its
    argument and each item it yields.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        execute = cls.__dict__.get("execute")
        if execute is None:
            return
        if inspect.isasyncgenfunction(execute):
            validated = _validate_stream(execute)
        elif typing.get_origin(_type_hints(execute).get("return")) in _STREAM_ORIGINS:
            raise TypeError(
                f"{cls.__qualname__}.execute is annotated to return a stream of items, but is "
                "not an async generator: a stream handler is written with async def and yield"
            )
        else:
            validated = validate_call(validate_return=True)(execute)
        type.__setattr__(cls, "execute", validated)
        type.__setattr__(cls, _EXECUTE_ORIGIN, (validated, execute))

    @property
    def request_model(self) -> type[RequestT]:
        """Returns the pydantic model that requests are validated into."""

        return self._resolve_model("request")  # type: ignore[return-value]

    @property
    def response_model(self) -> type[ResponseT]:
        """Returns the pydantic model that responses are validated as: for a
        stream handler, the model of each item."""

        return self._resolve_model("response")  # type: ignore[return-value]

    @property
    def streams(self) -> bool:
        """Whether execute is a stream handler (an async generator)."""

        return inspect.isasyncgenfunction(execute_callable(self))

    @abstractmethod
    async def execute(self, request: RequestT) -> ResponseT:
        """Handles one validated request."""

    def _resolve_model(self, kind: str) -> type[BaseModel]:
        signature = inspect.signature(self.execute)
        hints = _type_hints(self.execute)
        if kind == "request":
            parameters = list(signature.parameters.values())
            if len(parameters) != 1:
                raise TypeError("Application.execute must accept exactly one request parameter")
            name = parameters[0].name
            annotation = hints.get(name, parameters[0].annotation)
        else:
            annotation = hints.get("return", signature.return_annotation)
            if self.streams:
                return _item_model(annotation)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise TypeError(
                f"Application.execute must annotate its {kind} with a pydantic.BaseModel subtype"
            )
        return annotation


# The return annotations of a stream handler: AsyncIterator[Item] and its kin.
_STREAM_ORIGINS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)


def _item_model(annotation: Any) -> type[BaseModel]:
    """Returns Item of a stream handler's return annotation AsyncIterator[Item]
    (or AsyncIterable[Item], AsyncGenerator[Item, None])."""

    arguments = typing.get_args(annotation)
    item = arguments[0] if typing.get_origin(annotation) in _STREAM_ORIGINS and arguments else None
    if not (isinstance(item, type) and issubclass(item, BaseModel)):
        raise TypeError(
            "Application.execute, an async generator, must annotate its return as "
            "AsyncIterator[Item] with Item a pydantic.BaseModel subtype"
        )
    return item


def _validate_stream(
    execute: Callable[..., AsyncGenerator[Any, None]],
) -> Callable[..., AsyncGenerator[Any, None]]:
    """What validate_call(validate_return=True) does for a function, for an
    async generator: the call validates the arguments, and each item
    yielded is validated as the item model (pydantic validates no async
    iterators itself)."""

    call = validate_call(execute)

    async def validate_items(
        items: AsyncGenerator[Any, None], item_model: type[BaseModel]
    ) -> AsyncGenerator[Any, None]:
        try:
            async for item in items:
                yield item_model.model_validate(item)
        finally:
            await items.aclose()

    @functools.wraps(execute)
    def validated(
        self: "Application[Any, Any]", *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        return validate_items(call(self, *args, **kwargs), self.response_model)

    return validated


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    # Resolves string annotations (from __future__ import annotations); when
    # they cannot be resolved the raw annotations are checked instead, and
    # being strings, they are rejected with the usual message.
    target = inspect.unwrap(getattr(function, "__func__", function))
    try:
        return typing.get_type_hints(target)
    except Exception:
        return {}


def execute_callable(app: Application[Any, Any]) -> Callable[[Any], Any]:
    """Returns app's execute as written, without the validate_call wrapper.

    The server validates the request and the response itself, exactly as the
    wrapper would, so it calls the function the subclass defined. When
    execute was replaced after class creation (on the class or the instance),
    the replacement is returned as it is.
    """

    instance_attributes = getattr(app, "__dict__", {})
    if "execute" not in instance_attributes:
        for klass in type(app).__mro__:
            defined = klass.__dict__.get("execute")
            if defined is None:
                continue
            origin = klass.__dict__.get(_EXECUTE_ORIGIN)
            if origin is not None and origin[0] is defined:
                return origin[1].__get__(app, type(app))  # type: ignore[no-any-return]
            break
    return app.execute
