"""Fails to import, as a module with a bug does."""

import this_module_does_not_exist  # noqa: F401
