"""The Alembic migrations on real Postgres (and the embedded SQLite): upgrade from empty,
downgrade to base, and no difference between the migrated schema and the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from service.db import create_db_engine
from service.migrations import alembic_config, head_revision
from service.models import Base
from tests.postgres import throwaway_database

TABLES = {"tenants", "api_keys", "datasets", "audits"}


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    with throwaway_database("trustdiff_migrations") as url:
        yield url


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


@pytest.mark.services
def test_postgres_upgrade_from_empty_downgrade_and_no_autogenerate_diff(
    empty_postgres: str,
) -> None:
    config = alembic_config(empty_postgres)
    engine = create_db_engine(empty_postgres)
    try:
        command.upgrade(config, "head")
        assert tables(engine) == TABLES
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head_revision()
        assert schema_differences(engine) == []
        command.downgrade(config, "base")
        assert tables(engine) == set()
        # And back up again: downgrade left nothing behind that blocks a re-run.
        command.upgrade(config, "head")
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_sqlite_embedded_default_migrates_with_no_diff(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trustdiff.sqlite'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    engine = create_db_engine(url)
    try:
        assert tables(engine) == TABLES
        assert schema_differences(engine) == []
        command.downgrade(config, "base")
        assert tables(engine) == set()
    finally:
        engine.dispose()


def test_migration_history_is_linear() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
