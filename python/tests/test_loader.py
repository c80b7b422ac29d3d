"""Loading an application from an import path, as strictly as the original."""

import pytest

from apps import sample
from ociapp import Application, ApplicationLoadError, load_application


def test_loads_an_application() -> None:
    app = load_application("apps.sample:app")
    assert isinstance(app, Application)
    assert app.request_model.__name__ == "EchoRequest"


@pytest.mark.parametrize(
    ("import_path", "message"),
    [
        ("apps.sample", "must have the form 'pkg.module:attribute'"),
        (":app", "must have the form"),
        ("apps.sample:", "must have the form"),
        ("apps.missing_module:app", "could not import module 'apps.missing_module'"),
        ("apps.broken_import:app", "could not import module 'apps.broken_import'"),
        ("apps.exits_on_import:app", "could not import module 'apps.exits_on_import'"),
        ("apps.sample:missing", "could not find attribute 'missing' in module 'apps.sample'"),
        ("apps.sample:not_an_app", "must resolve to an Application"),
        ("apps.sample:EchoApplication", "must resolve to an Application"),
        ("apps.sample:missing_response_app", "must annotate its response with a pydantic.BaseModel subtype"),
        ("apps.sample:dict_request_app", "must annotate its request with a pydantic.BaseModel subtype"),
        ("apps.sample:two_parameters_app", "must accept exactly one request parameter"),
    ],
)
def test_load_failures(import_path: str, message: str) -> None:
    with pytest.raises(ApplicationLoadError, match=message):
        load_application(import_path)


def test_import_failure_keeps_its_cause() -> None:
    with pytest.raises(ApplicationLoadError) as raised:
        load_application("apps.broken_import:app")
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


def test_module_is_imported_afresh() -> None:
    first = load_application("apps.sample:app")
    second = load_application("apps.sample:app")
    assert first is not second
    assert sample.app is not None
