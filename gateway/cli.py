"""The `gateway` command: argument parsing and exit codes, nothing else.

Exit codes: 0 after a clean shutdown, 2 for bad arguments or configuration (one line on
stderr naming the problem), 1 when the gateway could not start (port in use, database
unopenable).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from gateway import __version__
from gateway.config import load_providers, settings_from_env
from gateway.errors import ConfigError, GatewayError
from gateway.log import configure_logging

__all__ = ["main"]

EXIT_CONFIG = 2
EXIT_START_FAILED = 1


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="The crypto data hub gateway: one GraphQL API over many free public "
        "crypto data services (prices, history, live subscriptions).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="collect data and serve GraphQL (HTTP, WebSocket, GraphiQL) until SIGINT/SIGTERM",
        description="Run the collectors and serve GraphQL at http://HOST:PORT/graphql. "
        "Each option falls back to its environment variable, then to its default.",
    )
    serve.add_argument("--host", help="interface to listen on (GATEWAY_HOST; default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=_port,
        help="TCP port, 0 for any free one (GATEWAY_PORT or PORT; default 7860)",
    )
    serve.add_argument(
        "--db", type=Path, help="SQLite database file (GATEWAY_DB; default ./data/gateway.db)"
    )
    serve.add_argument(
        "--providers",
        type=Path,
        help="providers file (GATEWAY_PROVIDERS; default ./providers.toml)",
    )
    serve.add_argument(
        "--log-format",
        choices=["auto", "console", "json"],
        help="console on a terminal, JSON otherwise, unless set (GATEWAY_LOG_FORMAT)",
    )
    return parser


def _fail(code: int, message: str) -> int:
    print(f"gateway: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        settings = settings_from_env().with_overrides(
            host=args.host,
            port=args.port,
            db_path=args.db,
            providers_path=args.providers,
            log_format=args.log_format,
        )
        providers = load_providers(settings.providers_path)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    from gateway.secrets import Secrets

    configure_logging(
        settings.log_format,
        settings.log_level,
        secrets=Secrets.from_environment(providers).all_values(),
    )

    from gateway.nursery import run_gateway

    try:
        trio.run(run_gateway, settings, providers)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        cause = _start_failure(exc)
        if isinstance(cause, GatewayError):
            return _fail(EXIT_START_FAILED, str(cause))
        if isinstance(cause, OSError):
            reason = cause.strerror or str(cause)
            return _fail(
                EXIT_START_FAILED, f"cannot listen on {settings.host}:{settings.port}: {reason}"
            )
        raise
    return 0


def _start_failure(exc: BaseException) -> BaseException:
    """The error worth one line to the user, out of Trio's exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _start_failure(inner)
            if isinstance(found, GatewayError | OSError):
                return found
    return exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
