"""Applications the tests serve, importable by subprocesses (tests/ is on their path)."""
