"""Loads the Application instance that an import path names."""

import importlib
import sys
from typing import Any

from .application import Application
from .errors import ApplicationLoadError

__all__ = ["ApplicationLoadError", "load_application"]


def load_application(import_path: str) -> Application[Any, Any]:
    """Imports ``pkg.module:attribute`` and returns the Application it names.

    Raises ApplicationLoadError when the path is malformed, the module fails
    to import (the import error is the exception's cause), the attribute is
    missing, the object is not an Application, or its execute is not
    annotated with pydantic models.
    """

    module_name, separator, attribute = import_path.partition(":")
    if not separator or not module_name or not attribute:
        raise ApplicationLoadError(
            "application import path must have the form 'pkg.module:attribute' "
            f"and be formatted correctly, got {import_path!r}"
        )

    try:
        importlib.invalidate_caches()
        sys.modules.pop(module_name, None)
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise ApplicationLoadError(f"could not import module '{module_name}'") from exc

    if not hasattr(module, attribute):
        raise ApplicationLoadError(
            f"could not find attribute '{attribute}' in module '{module_name}'"
        )
    app = getattr(module, attribute)
    if not isinstance(app, Application):
        raise ApplicationLoadError(
            f"application import path '{import_path}' must resolve to an Application, "
            f"not {type(app).__name__}"
        )

    try:
        app.request_model  # noqa: B018 - resolving the models is the check
        app.response_model  # noqa: B018
    except TypeError as exc:
        raise ApplicationLoadError(str(exc)) from exc
    return app
