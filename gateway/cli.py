"""The `gateway` command: argument parsing and exit codes, nothing else.

Exit codes: 0 after a clean shutdown, 2 for bad arguments or configuration (one line on
stderr naming the problem), 1 when the gateway could not start (port in use, database
unopenable).

`gateway backfill --symbol BTC --days 30 [--interval M1]` stores the closed candles the
database lacks from providers' candle endpoints (see gateway/prices/backfill.py). Exit codes:
0 done, 1 a provider failed and some range is still missing (run it again to resume) or the database
is unusable, 2 bad arguments (an unknown symbol included), 130 interrupted (what was stored
is kept).

`gateway keys create|list|revoke` manage API keys in the same database as `serve` (`--db` or
GATEWAY_DB), also while a server runs on it: SQLite's WAL lets both write, and the server
notices a revocation within `auth_revocation_poll` seconds. `create` prints the key on stdout,
once, and nothing else there (the details go to stderr), so `KEY=$(gateway keys create …)`
works; the key is stored only as a hash and cannot be shown again. Exit codes: 0 done, 2 bad
arguments, 1 no such key or an unusable database.

`gateway schema` prints the GraphQL schema the gateway serves, as SDL, and exits 0. It is
built from the code alone (no database, providers file or environment), so it works in CI and
on a fresh checkout; `schema.graphql` at the repository root is its output, kept current by a
test. Exit codes: 0 printed, 2 bad arguments.

`gateway backup --to DIR [--keep N]` copies the database with SQLite's online backup API (safe
while a server writes) as DIR/gateway-<UTC time>.db; `gateway restore FILE` checks FILE with
`PRAGMA integrity_check` and copies it into the database, refusing (exit 2, one line) while a
gateway runs on it; `gateway doctor [--offline]` checks configuration, keys, the database, one
request per provider and the sentiment model, and prints a table (gateway/ops/). Exit codes:
backup 0/1; restore 0, 2 refused, 1 failed; doctor 0, 1 a critical problem, 2 bad configuration.

`gateway sentiment train` fits the embedded sentiment model's head on
gateway/data/sentiment/train.jsonl and writes gateway/data/sentiment/head.json (the one the
package ships); `gateway sentiment evaluate` scores the held-out set with the configured model
(GATEWAY_SENTIMENT_MODEL, or `--model`) and prints accuracy, per-class precision/recall and
macro-F1 (gateway/news/sentiment_training.py). Exit codes: 0 done, 1 no model could be
loaded, 2 bad arguments or a malformed data file.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from gateway import __version__
from gateway.config import load_providers, settings_from_env
from gateway.config.database import database_overrides
from gateway.errors import ConfigError, GatewayError, UnknownSymbol
from gateway.log import configure_logging
from gateway.vocabulary import INTERVAL_SECONDS

if TYPE_CHECKING:
    from gateway.config import ProvidersFile
    from gateway.storage import KeyRecord

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
        "--db",
        help="SQLite database file, or postgresql://… for history on PostgreSQL "
        "(GATEWAY_DB; default ./data/gateway.db)",
    )
    serve.add_argument(
        "--providers",
        type=Path,
        help="providers file (GATEWAY_PROVIDERS; default ./providers.toml)",
    )
    serve.add_argument(  # README "Running several replicas"
        "--broker", metavar="URL", help="redis://…: be one of several replicas (GATEWAY_BROKER)"
    )
    serve.add_argument(
        "--log-format",
        choices=["auto", "console", "json"],
        help="console on a terminal, JSON otherwise, unless set (GATEWAY_LOG_FORMAT)",
    )
    _add_keys_parser(commands)
    _add_backfill_parser(commands)
    _add_sentiment_parser(commands)
    _add_operations_parsers(commands)
    commands.add_parser(
        "schema",
        help="print the GraphQL schema (SDL) the gateway serves",
        description="Print the served GraphQL schema as SDL on stdout, the same text as "
        "schema.graphql in the repository. Needs no database, providers file or environment.",
    )
    return parser


def _add_operations_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`backup`, `restore` and `doctor` (gateway/ops/)."""
    db_help = "SQLite database file (GATEWAY_DB; default ./data/gateway.db)"
    backup = commands.add_parser(
        "backup",
        help="copy the database now (safe while the server runs)",
        description="Copy the database with SQLite's online backup API into DIR as "
        "gateway-<UTC time>.db. Safe while a server writes to it. Exit codes: 0 done, 1 failed.",
    )
    backup.add_argument("--to", required=True, type=Path, metavar="DIR", help="backup folder")
    backup.add_argument("--keep", type=int, help="then keep only the newest KEEP backups in DIR")
    backup.add_argument("--db", type=Path, help=db_help)
    restore = commands.add_parser(
        "restore",
        help="replace the database with a backup (the server must be stopped)",
        description="Check FILE with PRAGMA integrity_check, then copy it into the database; "
        "what the database held is kept beside it. Refused while a gateway runs on the "
        "database. Exit codes: 0 done, 2 refused (bad file, database in use), 1 failed.",
    )
    restore.add_argument("file", type=Path, metavar="FILE", help="a backup made by `backup`")
    restore.add_argument("--db", type=Path, help=db_help)
    doctor = commands.add_parser(
        "doctor",
        help="check configuration, keys, database, providers and the sentiment model",
        description="Check what the gateway needs and print a table. One request per provider "
        "unless --offline. Exit codes: 0 nothing critical, 1 a critical problem, 2 bad "
        "configuration.",
    )
    doctor.add_argument("--offline", action="store_true", help="send no upstream request")
    doctor.add_argument("--db", type=Path, help=db_help)
    doctor.add_argument(
        "--providers",
        type=Path,
        help="providers file (GATEWAY_PROVIDERS; default ./providers.toml)",
    )


def _operations(args: argparse.Namespace) -> int:
    """Run `gateway backup|restore|doctor`; returns the exit code."""
    from gateway.ops.commands import backup_command, restore_command

    try:
        settings = settings_from_env().with_overrides(
            db_path=args.db, providers_path=getattr(args, "providers", None)
        )
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    if args.command in {"backup", "restore"} and settings.db_url and args.db is None:
        return _fail(
            EXIT_CONFIG,
            f"GATEWAY_DB is PostgreSQL: `gateway {args.command}` is for the SQLite file; use "
            "pg_dump / pg_restore (or pass --db FILE)",
        )
    if args.command == "backup":
        if args.keep is not None and args.keep < 1:
            return _fail(EXIT_CONFIG, "--keep must be at least 1")
        return backup_command(settings.db_path, args.to, args.keep)
    if args.command == "restore":
        return restore_command(args.file, settings.db_path)
    from gateway.ops.doctor import doctor_command

    return doctor_command(settings, _load_providers, offline=args.offline)


def _load_providers(path: Path) -> ProvidersFile:
    """providers.toml, also checked against the sources registry: every `collector` names a
    registered source, streams have ws(s):// URLs and everything else http(s)://. (The config
    layer cannot see the registry, so it is handed the names here.)"""
    from gateway.sources.registry import SOURCES

    kinds = {name: entry.stream is not None for name, entry in SOURCES.items()}
    return load_providers(path, sources=kinds)


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 3650:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3650, got {text}")
    return value


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z or +00:00)")
    return moment.astimezone(UTC)


def _add_backfill_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backfill = commands.add_parser(
        "backfill",
        help="fill a symbol's candle history from providers' candle endpoints",
        description="Store the closed candles of the last DAYS days that the database lacks, "
        "asking the market-data providers in pool order and respecting their rate limits. "
        "Resumable (each slice is committed; a rerun skips what is held) and idempotent. "
        "Exit codes: 0 done, 1 a provider failed so some range is still missing (run again to "
        "resume) or the database is unusable, 2 bad arguments.",
    )
    backfill.add_argument("--symbol", required=True, help="asset symbol, e.g. BTC")
    backfill.add_argument(
        "--days", type=_days, default=30.0, help="how far back from --until (default 30)"
    )
    backfill.add_argument(
        "--interval", choices=list(INTERVAL_SECONDS), default="H1", help="candle width (default H1)"
    )
    backfill.add_argument(
        "--until", type=_moment, help="end of the range, ISO 8601 with offset (default now)"
    )
    backfill.add_argument(
        "--status",
        action="store_true",
        help="print the ranges held for the symbol (all symbols with --symbol '*') and exit",
    )
    backfill.add_argument(
        "--db", type=Path, help="SQLite database file (GATEWAY_DB; default ./data/gateway.db)"
    )
    backfill.add_argument(
        "--providers",
        type=Path,
        help="providers file (GATEWAY_PROVIDERS; default ./providers.toml)",
    )


def _backfill(args: argparse.Namespace) -> int:
    """Run `gateway backfill`; returns the exit code."""
    from gateway.prices.backfill import (
        ProgressBar,
        backfill,
        market_providers,
        nothing_stored_reason,
        open_history,
        window,
    )
    from gateway.providers.upstream_keys import Secrets
    from gateway.storage import CandleStore, Storage
    from gateway.symbols import known_symbols, normalize_symbol
    from gateway.upstream import UpstreamClient

    try:
        settings = settings_from_env().with_overrides(
            db_path=args.db, providers_path=args.providers
        )
        providers = _load_providers(settings.providers_path)
        symbol = None if args.status and args.symbol == "*" else normalize_symbol(args.symbol)
        if symbol is not None and symbol not in known_symbols():
            close = difflib.get_close_matches(symbol, sorted(known_symbols()), n=3)
            raise UnknownSymbol(args.symbol, close)
        secrets = Secrets.from_environment(providers)
    except (ConfigError, GatewayError) as exc:
        return _fail(EXIT_CONFIG, str(exc))
    configure_logging(settings.log_format, "warning", secrets=secrets.all_values())
    interval = INTERVAL_SECONDS[args.interval]
    start, end = window(args.days, args.until)

    async def run() -> int:
        storage = await Storage.open(settings.db_url or settings.db_path, settings)
        try:
            if args.status:
                for r in await CandleStore(storage).series(symbol):
                    print(
                        f"{r.symbol} {r.interval_seconds}s {r.provider}: {_when(r.start)} .. "
                        f"{_when(r.end)}  {r.candles} candles"
                    )
                return 0
            chosen = market_providers(providers, secrets)
            if not chosen:
                return _fail(EXIT_CONFIG, "no enabled, configured MARKET_DATA provider")
            async with UpstreamClient(providers=providers.providers) as client:
                history = await open_history(storage, client, chosen, key_for=secrets.key_for)
                if not history.sources(interval):
                    return _fail(
                        EXIT_CONFIG, f"no configured provider serves {args.interval} candles"
                    )
                bar = ProgressBar(f"{symbol} {args.interval}")
                try:
                    result = await backfill(
                        history, symbol or "", interval, start, end, progress=bar
                    )
                finally:
                    bar.close()
            missing = ", ".join(f"{_when(a)} .. {_when(b)}" for a, b in result.missing[:5])
            print(
                f"{symbol} {args.interval} {_when(start)} .. {_when(end)}: stored "
                f"{result.inserted} candles in {result.requests} requests; "
                f"{result.slices_held} of {result.slices} slices were already held; "
                f"missing: {missing or 'none'}{' …' if len(result.missing) > 5 else ''}"
            )
            for provider, message in result.errors:
                print(f"  {provider} failed: {message}", file=sys.stderr)
            if (reason := nothing_stored_reason(result)) is not None:
                print(f"{symbol} {args.interval}: nothing was stored: {reason}", file=sys.stderr)
            if result.errors and result.missing:
                return _fail(
                    EXIT_START_FAILED, "some ranges are still missing; run again to resume"
                )
            return 0
        finally:
            await storage.aclose()

    try:
        return trio.run(run)
    except KeyboardInterrupt:
        print("\ninterrupted; what was stored is kept: run again to resume", file=sys.stderr)
        return 130
    except GatewayError as exc:
        return _fail(EXIT_START_FAILED, str(exc))


def _schema() -> int:
    """Run `gateway schema`: the SDL on stdout, ending in exactly one newline."""
    # Imported here so the other commands do not pay for building the schema module, and so
    # nothing but the code is read: no settings, no providers file, no database.
    from strawberry.printer import print_schema

    from gateway.schema import build_schema

    sys.stdout.write(print_schema(build_schema()).rstrip("\n") + "\n")
    return 0


def _add_sentiment_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sentiment = commands.add_parser(
        "sentiment",
        help="train or evaluate the sentiment model",
        description="Train the embedded model's head on the labelled headlines, or evaluate a "
        "model on the held-out set (gateway/data/sentiment/README.md).",
    )
    actions = sentiment.add_subparsers(dest="sentiment_command", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="fit the head and write head.json")
    train.add_argument("--train", type=Path, help="labelled JSON lines (default: the shipped set)")
    train.add_argument("--out", type=Path, help="where to write the head (default: shipped)")
    evaluate = actions.add_parser("evaluate", help="score the held-out set and print the figures")
    evaluate.add_argument("--heldout", type=Path, help="labelled JSON lines (default: shipped)")
    evaluate.add_argument(
        "--model", help="embedded, a model id or a directory (default: GATEWAY_SENTIMENT_MODEL)"
    )


def _sentiment(args: argparse.Namespace) -> int:
    """Run `gateway sentiment train|evaluate` (gateway/news/sentiment_training.py)."""
    from gateway.news.sentiment_model import ModelLoadError
    from gateway.news.sentiment_training import run_evaluate, run_train

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        if args.sentiment_command == "train":
            run_train(args.train, args.out, say)
            return 0
        model = args.model or settings_from_env().sentiment_model
        threads = settings_from_env().sentiment_threads
        print(run_evaluate(model, threads, args.heldout))
        return 0
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except (OSError, ValueError) as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except ModelLoadError as exc:
        return _fail(EXIT_START_FAILED, str(exc))


def _key_name(text: str) -> str:
    if not text.strip() or len(text) > 100 or not text.isprintable():
        raise argparse.ArgumentTypeError("a name is 1 to 100 printable characters")
    return text


def _key_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a key id: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a key id: {text!r}")
    return value


def _add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gateway.vocabulary import ROLES, TIER_NAMES

    keys = commands.add_parser(
        "keys",
        help="create, list and revoke API keys (also while the server runs)",
        description="API keys for the GraphQL API, in the database `serve` uses. A key is "
        "shown once, when it is created; only its hash is stored.",
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    db_help = "SQLite database file (GATEWAY_DB; default ./data/gateway.db)"
    create = actions.add_parser(
        "create",
        help="make a key and print it once",
        description="Make a key and print it on stdout, once (details go to stderr).",
    )
    create.add_argument("--name", required=True, type=_key_name, help="who or what it is for")
    create.add_argument(
        "--role", required=True, choices=ROLES, help="viewer: reads; admin: also mutations"
    )
    create.add_argument(
        "--tier", required=True, choices=TIER_NAMES, help="sets the key's rate and size limits"
    )
    create.add_argument("--db", type=Path, help=db_help)
    listing = actions.add_parser(
        "list", help="list keys (never the keys themselves)", description="List every key."
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--db", type=Path, help=db_help)
    revoke = actions.add_parser(
        "revoke",
        help="revoke a key: its next request fails, its WebSockets close",
        description="Revoke a key by id (see `gateway keys list`). A running server closes "
        "the key's WebSockets within seconds; its next request fails.",
    )
    revoke.add_argument("id", type=_key_id, help="the key's id")
    revoke.add_argument("--db", type=Path, help=db_help)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else "-"


def _keys(args: argparse.Namespace) -> int:
    """Run one `gateway keys` action against the database; returns the exit code."""
    from gateway.storage import KeyStore, Storage

    try:
        settings = settings_from_env().with_overrides(db_path=args.db)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))

    async def run() -> int:
        storage = await Storage.open(settings.db_url or settings.db_path, settings)
        try:
            store = KeyStore(storage)
            if args.keys_command == "create":
                record, key = await store.create(args.name, args.role, args.tier)
                print(
                    f"created key {record.id} {record.name!r} (role {record.role}, tier"
                    f" {record.tier}, prefix {record.display_prefix}). It is shown once, now:"
                    " store it safely.",
                    file=sys.stderr,
                )
                print(key)
                return 0
            if args.keys_command == "list":
                _print_keys(await store.records(), as_json=args.json)
                return 0
            found: KeyRecord | None = await store.revoke(args.id)
            if found is None:
                return _fail(EXIT_START_FAILED, f"no key with id {args.id}")
            print(f"key {found.id} {found.name!r} revoked at {_when(found.revoked_at)}")
            return 0
        finally:
            await storage.aclose()

    try:
        return trio.run(run)
    except GatewayError as exc:
        return _fail(EXIT_START_FAILED, str(exc))


def _print_keys(records: list[KeyRecord], *, as_json: bool) -> None:
    if as_json:
        for r in records:
            fields = {
                "id": r.id,
                "name": r.name,
                "role": r.role,
                "tier": r.tier,
                "prefix": r.display_prefix,
                "createdAt": r.created_at.isoformat(),
                "lastUsedAt": r.last_used_at.isoformat() if r.last_used_at else None,
                "revokedAt": r.revoked_at.isoformat() if r.revoked_at else None,
            }
            print(json.dumps(fields))
        return
    header = ("ID", "NAME", "ROLE", "TIER", "PREFIX", "CREATED", "LAST USED", "REVOKED")
    rows = [header] + [
        (
            str(r.id),
            r.name,
            r.role,
            r.tier,
            r.display_prefix,
            _when(r.created_at),
            _when(r.last_used_at),
            _when(r.revoked_at),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for line in rows:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())


def _fail(code: int, message: str) -> int:
    print(f"gateway: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    if args.command == "keys":
        return _keys(args)
    if args.command == "backfill":
        return _backfill(args)
    if args.command == "schema":
        return _schema()
    if args.command == "sentiment":
        return _sentiment(args)
    if args.command in {"backup", "restore", "doctor"}:
        return _operations(args)
    from gateway.providers.upstream_keys import Secrets

    try:
        settings = settings_from_env(broker=args.broker).with_overrides(
            host=args.host,
            port=args.port,
            **database_overrides(args.db),
            providers_path=args.providers,
            log_format=args.log_format,
        )
        providers = _load_providers(settings.providers_path)
        secrets = Secrets.from_environment(providers)  # reads GATEWAY_ENV_FILE or ./.env
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))

    configure_logging(settings.log_format, settings.log_level, secrets=secrets.all_values())

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
