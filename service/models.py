"""ORM models: tenants and their API keys, uploaded datasets, and audits with their job state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Constraint names are part of the schema: migrations refer to them by name, so they must be
# deterministic rather than whatever each database would invent.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on Postgres (indexable, compact); plain JSON text on SQLite for the embedded default.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no timezone type and hands back naive values; storing UTC and re-attaching the
    zone on read keeps comparisons (heartbeat age, cursor pagination) correct everywhere.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONDocument,
        list[str]: JSONDocument,
    }


# The one list of audit states: the ORM column, the API schema and `service.transitions`.
class AuditStatus(StrEnum):
    """An audit's job state: `queued → running → succeeded | failed | cancelled`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Stored as the plain value in a VARCHAR(16) held to the known values by a named CHECK
# constraint (not a native enum type), so adding a status is a one-line migration.
AuditStatusColumn = Enum(
    AuditStatus,
    native_enum=False,
    create_constraint=False,
    length=16,
    values_callable=lambda statuses: [status.value for status in statuses],
    validate_strings=True,
)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


class ApiKey(Base):
    """An API key, stored only as the sha256 of the token (see `service.auth`)."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, so an operator can tell keys apart in a listing.
    display_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None] = mapped_column(doc="None: the key never expires.")
    # Recorded at most once a minute per key (see `service.auth.record_key_use`).
    last_used_at: Mapped[datetime | None]

    tenant: Mapped[Tenant] = relationship(back_populates="api_keys")


class Dataset(Base):
    """An uploaded, validated dataset file stored under the upload folder."""

    __tablename__ = "datasets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(8))
    storage_path: Mapped[str] = mapped_column(String(512), doc="Relative to the upload folder.")
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int]
    fields: Mapped[list[str]]
    label_names: Mapped[list[str]]
    text_field: Mapped[str] = mapped_column(String(200))
    text_pair_field: Mapped[str | None] = mapped_column(String(200))
    label_field: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Audit(Base):
    """One audit request and its job state (`queued → running → succeeded|failed|cancelled`).

    State changes go through the named transitions in `service.transitions`, never through
    direct assignment in routes or the runner.
    """

    __tablename__ = "audits"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{status.value}'" for status in AuditStatus)),
            name="status_known",
        ),
        # Newest-first keyset pagination per tenant.
        Index("ix_audits_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        # The stale-worker sweep scans running audits by heartbeat age.
        Index("ix_audits_status_heartbeat_at", "status", "heartbeat_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[AuditStatus] = mapped_column(AuditStatusColumn, default=AuditStatus.QUEUED)

    request: Mapped[dict[str, Any]] = mapped_column(doc="The request body as validated.")
    request_sha256: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    config: Mapped[dict[str, Any]] = mapped_column(
        doc="The engine's AuditConfig; dataset path relative to `dataset_root`."
    )
    dataset_root: Mapped[str] = mapped_column(String(8), doc='"data" or "uploads".')
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="RESTRICT"), index=True
    )
    callback_url: Mapped[str | None] = mapped_column(String(2048))

    progress_stage: Mapped[str | None] = mapped_column(String(64))
    progress_done: Mapped[int | None]
    progress_total: Mapped[int | None]

    # Result documents can be megabytes (per-instance attributions): only load them on demand.
    result: Mapped[dict[str, Any] | None] = mapped_column(deferred=True)
    gate: Mapped[dict[str, Any] | None]
    passed: Mapped[bool | None]
    # Every row's outcome (Parquet) lives beside the document, in the artifact store.
    rows_url: Mapped[str | None] = mapped_column(String(2048))
    # The engine's plan (trustdiff.plan.AuditPlan, JSON) that its shards run, while it runs.
    plan_url: Mapped[str | None] = mapped_column(String(2048))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    cancel_requested_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]

    # Set when the commit succeeded but the broker refused the job; the sweep re-sends it.
    enqueue_failed_at: Mapped[datetime | None]
    callback_delivered_at: Mapped[datetime | None]
    callback_error: Mapped[str | None] = mapped_column(Text)


class ShardKind(StrEnum):
    """The steps a planned audit runs as tasks: prediction shards (row ranges), explanation
    blocks (groups of instances), then the one finaliser."""

    PREDICT = "predict"
    EXPLAIN = "explain"
    FINALISE = "finalise"


class ShardStatus(StrEnum):
    """A shard's state: `waiting` (its stage has not started) → `queued` → `running` → `done`;
    `failed` ends the audit; `cancelled` when the audit ended before the shard did."""

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _string_enum(enum: type[StrEnum]) -> Enum:
    # A VARCHAR(16) held to the values by a named CHECK constraint, like `AuditStatusColumn`.
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


def _values_in(column: str, enum: type[StrEnum]) -> str:
    return "{} IN ({})".format(column, ", ".join(f"'{member.value}'" for member in enum))


class AuditShard(Base):
    """One step of a planned audit and its job state (see `service.shards`).

    Its output is an artifact at `artifact_url`; `done` of `total` counts rows predicted or
    instances explained, and the audit's progress is their sum over its running stage.
    """

    __tablename__ = "audit_shards"
    __table_args__ = (
        UniqueConstraint("audit_id", "kind", "index"),
        CheckConstraint(_values_in("kind", ShardKind), name="kind_known"),
        CheckConstraint(_values_in("status", ShardStatus), name="status_known"),
        # The sweep scans running shards by heartbeat age and queued ones by send time.
        Index("ix_audit_shards_status_heartbeat_at", "status", "heartbeat_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    audit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"))
    kind: Mapped[ShardKind] = mapped_column(_string_enum(ShardKind))
    index: Mapped[int]
    status: Mapped[ShardStatus] = mapped_column(
        _string_enum(ShardStatus), default=ShardStatus.WAITING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    queued_at: Mapped[datetime | None] = mapped_column(doc="When its task was last sent.")
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    artifact_url: Mapped[str | None] = mapped_column(String(2048))
    error: Mapped[str | None] = mapped_column(Text)
