"""Run and inspect the Alembic migrations from code (the CLI, `serve`, readiness, tests)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = REPOSITORY_ROOT / "alembic.ini"


def alembic_config(database_url: str | None = None) -> Config:
    """The project's Alembic config, pointed at `database_url` (else the settings' URL)."""
    config = Config(str(ALEMBIC_INI))
    if database_url is not None:
        # ConfigParser interpolation would read a "%" in a password as a placeholder.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str | None = None) -> None:
    command.upgrade(alembic_config(database_url), "head")


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The database's revision; None when it was never migrated.

    Read with plain SQL: readiness probes call this every few seconds, and Alembic's
    MigrationContext logs on each use.
    """
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
