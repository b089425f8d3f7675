"""Where a planned audit keeps its plan and its shards' outputs while it runs, and their
removal once it has ended (its rows file stays)."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select, update

from service import shards
from service.artifacts import ArtifactStore
from service.db import Database
from service.models import Audit, AuditStatus, ShardKind
from service.settings import Settings

logger = logging.getLogger(__name__)

SUFFIXES = {ShardKind.PREDICT: "npz", ShardKind.EXPLAIN: "json"}


def plan_key(audit_id: uuid.UUID) -> str:
    return f"audits/{audit_id}/shards/plan.json"


def shard_key(audit_id: uuid.UUID, kind: ShardKind, index: int) -> str:
    return f"audits/{audit_id}/shards/{kind.value}-{index:05d}.{SUFFIXES[kind]}"


def rows_key(audit_id: uuid.UUID) -> str:
    return f"audits/{audit_id}/rows.parquet"


def delete_shard_artifacts(database: Database, settings: Settings, audit_id: uuid.UUID) -> None:
    """Remove the plan and the shards' outputs of an audit that has ended (none while it
    runs), then forget its plan URL: an audit whose plan URL is set still has them. A file
    that cannot be removed costs a warning: it is only disk space."""
    with database.read_transaction() as session:
        audit = session.get(Audit, audit_id)
        if audit is None or audit.status == AuditStatus.RUNNING or audit.plan_url is None:
            return
        urls = shards.artifact_urls(session, audit_id)
    store = ArtifactStore.from_settings(settings)
    for url in urls:
        try:
            store.delete(url)
        except OSError:
            logger.warning("audit %s: could not delete %s", audit_id, url, exc_info=True)
    with database.transaction() as session:
        session.execute(
            update(Audit)
            .where(Audit.id == audit_id, Audit.status != AuditStatus.RUNNING)
            .values(plan_url=None)
        )


def ended_with_shard_artifacts(database: Database, *, limit: int = 100) -> list[uuid.UUID]:
    """Audits that ended with their plan and shard outputs still stored (e.g. cancelled by
    the gateway while none of their shards ran)."""
    with database.read_transaction() as session:
        return list(
            session.scalars(
                select(Audit.id)
                .where(Audit.status != AuditStatus.RUNNING, Audit.plan_url.is_not(None))
                .limit(limit)
            ).all()
        )
