"""Audits run as planned shards: the `audit_shards` table (one row per prediction shard,
explanation block and finaliser, with its job state) and the audit's plan URL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported: a migration must not change when the models do.
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.add_column(sa.Column("plan_url", sa.String(length=2048), nullable=True))
    op.create_table(
        "audit_shards",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("queued_at", TIMESTAMP, nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("heartbeat_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("artifact_url", sa.String(length=2048), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('predict', 'explain', 'finalise')",
            name=op.f("ck_audit_shards_kind_known"),
        ),
        sa.CheckConstraint(
            "status IN ('waiting', 'queued', 'running', 'done', 'failed', 'cancelled')",
            name=op.f("ck_audit_shards_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["audit_id"],
            ["audits.id"],
            name=op.f("fk_audit_shards_audit_id_audits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_shards")),
        sa.UniqueConstraint(
            "audit_id", "kind", "index", name=op.f("uq_audit_shards_audit_id_kind_index")
        ),
    )
    op.create_index(
        "ix_audit_shards_status_heartbeat_at", "audit_shards", ["status", "heartbeat_at"]
    )


def downgrade() -> None:
    op.drop_table("audit_shards")
    with op.batch_alter_table("audits") as batch:
        batch.drop_column("plan_url")
