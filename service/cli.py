"""`trustdiff serve | worker | keys create | migrate`: the service's command-line entry points."""

# Imported by `trustdiff.cli` whenever its parser is built, so nothing heavy at module level:
# each command imports what it needs when it runs.
import argparse


def register_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the service's subcommands to the `trustdiff` parser."""
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
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    worker = subparsers.add_parser("worker", help="run a Celery worker that executes audits")
    worker.add_argument(
        "--pool",
        choices=("prefork", "solo", "threads"),
        default="prefork",
        help="prefork isolates each audit in a child process (default); solo runs in-process",
    )
    worker.add_argument("--concurrency", type=int, default=1, help="audits run at once")
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(func=_worker)

    keys = subparsers.add_parser("keys", help="manage API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser(
        "create", help="create an API key for a tenant and print it (shown only once)"
    )
    create.add_argument("--tenant", required=True, help="tenant name (created when new)")
    create.set_defaults(func=_keys_create)

    migrate = subparsers.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.set_defaults(func=_migrate)


def _prepare_state(*, migrate_embedded: bool) -> None:
    from service.migrations import upgrade_to_head
    from service.settings import get_settings

    settings = get_settings()
    settings.ensure_state_folders()
    # The embedded default has no separate deploy step: its SQLite file is migrated on use.
    if migrate_embedded and settings.is_embedded_database:
        upgrade_to_head(settings.database_url)


def _serve(args: argparse.Namespace) -> int:
    import logging

    from service.serve import serve

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    return serve(
        host=args.host,
        port=args.port,
        start_worker=args.worker,
        migrate=args.migrate,
        log_level=args.log_level,
    )


def _worker(args: argparse.Namespace) -> int:
    import os

    _prepare_state(migrate_embedded=True)
    from workers.celery_app import app, settings

    app.worker_main(
        [
            "worker",
            f"--pool={args.pool}",
            f"--concurrency={args.concurrency}",
            f"--queues={settings.queue}",
            f"--loglevel={args.log_level.upper()}",
            # Unique per process: several workers on one host must not share a node name.
            f"--hostname=trustdiff-{os.getpid()}@%h",
        ]
    )
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    import sys

    _prepare_state(migrate_embedded=True)
    from service.auth import create_api_key
    from service.db import Database
    from service.migrations import current_revision, head_revision
    from service.settings import get_settings

    database = Database(get_settings().database_url)
    try:
        with database.engine.connect() as connection:
            revision = current_revision(connection)
        if revision != head_revision():
            print(
                f"error: the database schema is at revision {revision}, not {head_revision()}; "
                f"run `trustdiff migrate` first",
                file=sys.stderr,
            )
            return 2
        with database.transaction() as session:
            _api_key, token = create_api_key(session, args.tenant)
    finally:
        database.dispose()
    print(token)
    print(f"API key for tenant {args.tenant!r}; it is not shown again.", file=sys.stderr)
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


def main(argv: list[str] | None = None) -> int:
    """`python -m service.cli ...`: the same commands without the engine's CLI around them."""
    parser = argparse.ArgumentParser(prog="trustdiff-service")
    register_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
