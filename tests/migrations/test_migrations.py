"""The Alembic migrations on real Postgres (and the embedded SQLite): upgrade from empty,
downgrade to base, and no difference between the migrated schema and the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from service.db import create_db_engine
from service.migrations import alembic_config, head_revision
from service.models import Base
from tests.postgres import throwaway_database

TABLES = {"tenants", "api_keys", "datasets", "audits", "audit_shards"}


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


@pytest.mark.services
def test_0004_keeps_audits_and_their_shards_go_with_them(empty_postgres: str) -> None:
    """An audit from before 0004 survives it; a shard is unique per (audit, kind, index)
    and is deleted with its audit; downgrading to 0003 drops only the shards."""
    config = alembic_config(empty_postgres)
    engine = create_db_engine(empty_postgres)
    tenant, audit = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    shard = {"audit": audit}
    insert_shard = text(
        "INSERT INTO audit_shards (id, audit_id, kind, index, status, attempts, done, total) "
        "VALUES (gen_random_uuid(), :audit, 'predict', 0, 'queued', 0, 0, 48)"
    )
    try:
        command.upgrade(config, "0003")
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES (:id, 'a', :now)"),
                {"id": tenant, "now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO audits (id, tenant_id, status, request, request_sha256, "
                    "config, dataset_root, attempts, created_at, updated_at) VALUES (:id, "
                    ":tenant, 'running', '{}', '', '{}', 'data', 1, :now, :now)"
                ),
                {"id": audit, "tenant": tenant, "now": now},
            )
        command.upgrade(config, "head")
        with engine.begin() as connection:
            plan_url = connection.execute(
                text("SELECT plan_url FROM audits WHERE id = :id"), {"id": audit}
            ).scalar_one()
            assert plan_url is None
            connection.execute(insert_shard, shard)
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert_shard, shard)
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM audits WHERE id = :id"), {"id": audit})
            remaining = connection.execute(text("SELECT count(*) FROM audit_shards"))
            assert remaining.scalar_one() == 0
        command.downgrade(config, "0003")
        assert tables(engine) == TABLES - {"audit_shards"}
        columns = {column["name"] for column in inspect(engine).get_columns("audits")}
        assert "plan_url" not in columns
    finally:
        engine.dispose()
