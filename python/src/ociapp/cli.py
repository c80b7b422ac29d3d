"""The in-container command: ``ociapp serve`` and ``ociapp schema``."""

import argparse
import asyncio
import json
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from .errors import ApplicationLoadError, ServerLifecycleError
from .loader import load_application
from .protocol import DEFAULT_MAX_FRAME_SIZE, DEFAULT_SOCKET_PATH, MAX_FRAME_LENGTH
from .server import CAPABILITIES, serve_application

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2
EXIT_LOAD_ERROR = 3
EXIT_SERVER_ERROR = 4
EXIT_SCHEMA_ERROR = 5


def build_parser() -> argparse.ArgumentParser:
    """Builds the command-line parser."""

    parser = argparse.ArgumentParser(
        prog="ociapp", description="Serve an OCIApp application inside its container."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve an application on a Unix socket")
    serve.add_argument("--app", required=True, help="import path, pkg.module:attribute")
    serve.add_argument(
        "--socket-path",
        default=DEFAULT_SOCKET_PATH,
        type=Path,
        help=f"where to listen (default {DEFAULT_SOCKET_PATH})",
    )
    serve.add_argument(
        "--max-frame-size",
        default=DEFAULT_MAX_FRAME_SIZE,
        type=_frame_size,
        help=f"largest request frame body in bytes (default {DEFAULT_MAX_FRAME_SIZE})",
    )
    serve.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop when importable (auto), or the one named",
    )
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="stderr log level (default info)",
    )

    schema = commands.add_parser(
        "schema",
        help="print the request and response JSON Schemas of an application, "
        "and the protocol capabilities its server supports",
    )
    schema.add_argument("--app", required=True, help="import path, pkg.module:attribute")
    schema.add_argument("--indent", type=int, default=None, help="indent the JSON output")
    return parser


def _frame_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 < value <= MAX_FRAME_LENGTH:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_FRAME_LENGTH}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns the exit status."""

    args = build_parser().parse_args(argv)
    try:
        app = load_application(args.app)
    except ApplicationLoadError as exc:
        _report_load_error(exc)
        return EXIT_LOAD_ERROR
    if args.command == "schema":
        return _schema(app, args.indent)
    return _serve(app, args)


def _report_load_error(exc: ApplicationLoadError) -> None:
    message = f"ociapp: error: {exc}\n"
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, TypeError):
        message += "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    sys.stderr.write(message)
    sys.stderr.flush()


def _schema(app: Any, indent: int | None) -> int:
    try:
        # A stream handler's response schema is its items'.
        document = {
            "request": app.request_model.model_json_schema(mode="validation"),
            "response": app.response_model.model_json_schema(mode="serialization"),
            "capabilities": list(CAPABILITIES),
        }
        if app.streams:
            document["stream"] = True
    except Exception as exc:
        sys.stderr.write(f"ociapp: error: cannot generate the JSON Schemas of {app!r}: {exc}\n")
        return EXIT_SCHEMA_ERROR
    sys.stdout.write(json.dumps(document, indent=indent, sort_keys=True) + "\n")
    return 0


def _serve(app: Any, args: argparse.Namespace) -> int:
    try:
        loop_factory = _loop_factory(args.loop)
    except ImportError:
        sys.stderr.write("ociapp: error: --loop uvloop given, but uvloop is not installed\n")
        return EXIT_USAGE
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ociapp: %(message)s"))
    logger = logging.getLogger("ociapp")
    logger.addHandler(handler)
    logger.setLevel(args.log_level.upper())
    logger.propagate = False

    def on_ready(server: Any) -> None:
        logger.info("serving %s on %s", args.app, server.socket_path)

    serve = serve_application(
        app,
        args.socket_path,
        max_frame_size=args.max_frame_size,
        stop_signals=(signal.SIGTERM, signal.SIGINT),
        on_ready=on_ready,
    )
    try:
        _run(serve, loop_factory)
    except ServerLifecycleError as exc:
        sys.stderr.write(f"ociapp: error: {exc}\n")
        return EXIT_SERVER_ERROR
    logger.info("stopped")
    return 0


def _run(
    main_coroutine: Coroutine[Any, Any, None],
    factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> None:
    if factory is None:
        asyncio.run(main_coroutine)
        return
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main_coroutine)
        return
    event_loop = factory()
    try:
        asyncio.set_event_loop(event_loop)
        event_loop.run_until_complete(main_coroutine)
        event_loop.run_until_complete(event_loop.shutdown_asyncgens())
        event_loop.run_until_complete(event_loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        event_loop.close()


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Returns uvloop's loop factory, or None for asyncio's own loop.

    Raises ImportError when uvloop is asked for by name but not installed.
    """

    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]
