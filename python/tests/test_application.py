"""The Application contract: models from annotations, validate_call semantics."""

import asyncio

import pytest
from pydantic import BaseModel, ValidationError

from apps import future_annotations, sample
from ociapp import Application
from ociapp.application import execute_callable


async def test_execute_validates_a_dict_into_the_request_model() -> None:
    result = await sample.app.execute({"value": "x"})  # type: ignore[arg-type]
    assert result == sample.EchoResponse(value="x")


async def test_execute_rejects_an_invalid_request() -> None:
    with pytest.raises(ValidationError, match="value"):
        await sample.app.execute({"value": 7})  # type: ignore[arg-type]


async def test_execute_validates_the_return_value() -> None:
    with pytest.raises(ValidationError):
        await sample.wrong_response_app.execute({"value": "x"})  # type: ignore[arg-type]
    result = await sample.dict_response_app.execute({"value": "x"})  # type: ignore[arg-type]
    assert result == sample.EchoResponse(value="x")


def test_sync_execute_is_validated_too() -> None:
    app = sample.BlockingApplication()
    assert app.execute({"value": "x"}) == sample.EchoResponse(value="x")  # type: ignore[arg-type]


def test_models_come_from_the_annotations() -> None:
    assert sample.app.request_model is sample.EchoRequest
    assert sample.app.response_model is sample.EchoResponse
    assert sample.rich_app.response_model is sample.RichResponse


def test_string_annotations_are_resolved() -> None:
    app = future_annotations.app
    assert app.request_model is future_annotations.Request
    assert app.response_model is future_annotations.Response


@pytest.mark.parametrize(
    ("app", "message"),
    [
        (sample.missing_response_app, "must annotate its response"),
        (sample.dict_request_app, "must annotate its request"),
        (sample.two_parameters_app, "exactly one request parameter"),
    ],
)
def test_unusable_annotations_are_type_errors(app: Application, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        app.request_model  # noqa: B018
        app.response_model  # noqa: B018


def test_execute_must_be_defined() -> None:
    class Incomplete(Application[sample.EchoRequest, sample.EchoResponse]):
        pass

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


async def test_subclass_of_an_application_inherits_execute() -> None:
    class Louder(sample.EchoApplication):
        pass

    app = Louder()
    assert await app.execute({"value": "x"}) == sample.EchoResponse(value="x")  # type: ignore[arg-type]
    assert execute_callable(app).__func__ is sample.EchoApplication.__dict__["_ociapp_execute"][1]


async def test_execute_callable_skips_only_the_validation_wrapper() -> None:
    function = execute_callable(sample.app)
    request = sample.EchoRequest(value="x")
    assert await function(request) == sample.EchoResponse(value="x")
    with pytest.raises(AttributeError):
        await function({"value": "x"})  # the wrapper is what turns dicts into models


def test_execute_replaced_on_the_instance_is_used_as_is() -> None:
    class Plain(BaseModel):
        value: str

    app = sample.EchoApplication()

    async def replacement(request: Plain) -> Plain:
        return request

    app.execute = replacement  # type: ignore[method-assign]
    assert execute_callable(app) is replacement
    asyncio.run(app.execute(Plain(value="y")))
