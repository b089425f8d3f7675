"""A Postgres database of its own on 127.0.0.1:5432, dropped at the end: for the tests that
need one and for the service scripts (scripts/harness.py)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=root dbname=postgres"


@contextlib.contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A new database `<prefix>_<8 hex digits>`; yields its SQLAlchemy URL and drops it on the
    way out, connections and all. `RuntimeError` saying so when Postgres does not answer."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        raise RuntimeError(
            f"Postgres is not answering on 127.0.0.1:5432 (run `make services`): {error}"
        ) from error
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
