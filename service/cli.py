"""`trustdiff serve | keys create|list|revoke | migrate`: the gateway's commands for `trustdiff`.

Published in the `trustdiff.commands` entry-point group (pyproject.toml); the engine's CLI
loads this module whenever it builds its parser, so nothing heavy at module level: each
command imports what it needs when it runs, after checking that the service extra is there.
"""

import argparse
import importlib.util
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from service.db import Database

# What the gateway and the workers import; a missing one means the extra was not installed.
SERVICE_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "celery", "pydantic_settings")
SERVICE_EXTRA_HINT = "pip install 'trustdiff[service]'"
EXIT_ERROR = 2

Command = Callable[[argparse.Namespace], int]


def missing_service_modules() -> list[str]:
    """The service's third-party packages that cannot be imported here."""
    missing = []
    for name in SERVICE_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(name)
    return missing


def needs_service_extra(command_name: str, command: Command) -> Command:
    """`command`, refusing to start with a one-line hint when the service extra is missing."""

    def checked(args: argparse.Namespace) -> int:
        missing = missing_service_modules()
        if missing:
            print(
                f"error: `trustdiff {command_name}` needs the service extra "
                f"(missing: {', '.join(missing)}); install it with: {SERVICE_EXTRA_HINT}",
                file=sys.stderr,
            )
            return EXIT_ERROR
        return command(args)

    return checked


def register_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `serve`, `keys create|list|revoke` and `migrate` to the `trustdiff` parser."""
    _add_serve(subparsers)
    _add_keys(subparsers)
    migrate = subparsers.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.set_defaults(func=needs_service_extra("migrate", _migrate))


def _add_serve(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the HTTP API (and, by default, a worker and the migrations)",
        description="Run the API with uvicorn. With no configuration this is the embedded "
        "default: SQLite and a local broker under the state folder, migrated on start, and a "
        "Celery worker process started and supervised here. DATABASE_URL / BROKER_URL (or the "
        "TRUSTDIFF_ names) switch to Postgres and Redis.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help="do not start a worker (run `trustdiff worker` elsewhere)",
    )
    serve.add_argument(
        "--no-migrate",
        dest="migrate",
        action="store_false",
        help="do not upgrade the database on start (run `trustdiff migrate` once instead)",
    )
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="gateway processes (uvicorn workers) sharing the port; about one per core the "
        "API may use (default 1)",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=needs_service_extra("serve", _serve))


def _add_keys(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    keys = subparsers.add_parser("keys", help="manage API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser(
        "create", help="create an API key for a tenant and print it (shown only once)"
    )
    create.add_argument("--tenant", required=True, help="tenant name (created when new)")
    create.add_argument(
        "--expires-in-days",
        type=float,
        default=None,
        metavar="DAYS",
        help="the key stops working after this many days (default: never)",
    )
    create.set_defaults(func=needs_service_extra("keys create", _keys_create))
    listing = keys_commands.add_parser(
        "list", help="list API keys: prefix, tenant, created, expires, last used, revoked"
    )
    listing.add_argument("--tenant", default=None, help="only this tenant's keys")
    listing.set_defaults(func=needs_service_extra("keys list", _keys_list))
    revoke = keys_commands.add_parser("revoke", help="revoke a key by its listed prefix")
    revoke.add_argument("prefix", help="the key's prefix as `trustdiff keys list` shows it")
    revoke.set_defaults(func=needs_service_extra("keys revoke", _keys_revoke))


def prepare_state(*, migrate_embedded: bool) -> None:
    """Create the state folders; migrate the embedded SQLite database when asked."""
    from service.migrations import upgrade_to_head
    from service.settings import get_settings

    settings = get_settings()
    settings.ensure_state_folders()
    # The embedded default has no separate deploy step: its SQLite file is migrated on use.
    if migrate_embedded and settings.is_embedded_database:
        upgrade_to_head(settings.database_url)


def _serve(args: argparse.Namespace) -> int:
    from service.logs import configure_logging
    from service.serve import serve
    from service.settings import get_settings

    configure_logging(get_settings().log_format, args.log_level)
    return serve(
        host=args.host,
        port=args.port,
        start_worker=args.worker,
        migrate=args.migrate,
        log_level=args.log_level,
        processes=args.processes,
    )


def _migrated_database() -> "Database | None":
    """The service database at the latest schema, or None after saying what to run."""
    prepare_state(migrate_embedded=True)
    from service.db import Database
    from service.migrations import current_revision, head_revision
    from service.settings import get_settings

    database = Database(get_settings().database_url)
    with database.engine.connect() as connection:
        revision = current_revision(connection)
    if revision != head_revision():
        database.dispose()
        print(
            f"error: the database schema is at revision {revision}, not {head_revision()}; "
            f"run `trustdiff migrate` first",
            file=sys.stderr,
        )
        return None
    return database


def _keys_create(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from service.auth import create_api_key
    from service.models import utc_now

    expires_at = None
    if args.expires_in_days is not None:
        if args.expires_in_days <= 0:
            print("error: --expires-in-days must be positive", file=sys.stderr)
            return EXIT_ERROR
        expires_at = utc_now() + timedelta(days=args.expires_in_days)
    database = _migrated_database()
    if database is None:
        return EXIT_ERROR
    try:
        with database.transaction() as session:
            api_key, token = create_api_key(session, args.tenant, expires_at=expires_at)
            prefix = api_key.display_prefix
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        database.dispose()
    print(token)
    until = f", valid until {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    print(
        f"API key {prefix} for tenant {args.tenant!r}{until}; it is not shown again.",
        file=sys.stderr,
    )
    return 0


def _when(moment: "datetime | None") -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else "-"


def _keys_list(args: argparse.Namespace) -> int:
    from service.auth import list_api_keys

    database = _migrated_database()
    if database is None:
        return EXIT_ERROR
    try:
        with database.read_transaction() as session:
            keys = list_api_keys(session, args.tenant)
            rows = [
                (
                    api_key.display_prefix,
                    tenant,
                    _when(api_key.created_at),
                    _when(api_key.expires_at),
                    _when(api_key.last_used_at),
                    _when(api_key.revoked_at),
                )
                for api_key, tenant in keys
            ]
    finally:
        database.dispose()
    header = ("PREFIX", "TENANT", "CREATED", "EXPIRES", "LAST USED", "REVOKED")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from service.auth import revoke_api_key

    database = _migrated_database()
    if database is None:
        return EXIT_ERROR
    try:
        with database.transaction() as session:
            api_key = revoke_api_key(session, args.prefix)
            revoked_at = api_key.revoked_at
    except LookupError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        database.dispose()
    print(f"revoked {args.prefix} (at {_when(revoked_at)} UTC)", file=sys.stderr)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    import logging

    from alembic import command

    from service.migrations import alembic_config
    from service.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    get_settings().ensure_state_folders()
    command.upgrade(alembic_config(get_settings().database_url), args.revision)
    return 0


def run_commands(
    prog: str,
    register: Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None],
    argv: list[str] | None = None,
) -> int:
    """Parse `argv` with only the commands `register` adds, and run the chosen one: a
    package's `trustdiff.commands` without the engine's CLI around them."""
    parser = argparse.ArgumentParser(prog=prog)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m service.cli ...`: the same commands without the engine's CLI around them."""
    return run_commands("trustdiff-service", register_commands, argv)


if __name__ == "__main__":
    raise SystemExit(main())
