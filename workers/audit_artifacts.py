"""Where a planned audit keeps its plan and its shards' outputs while it runs, and their
removal once it has ended (its rows file stays)."""

from __future__ import annotations

import logging
import uuid

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
    runs). A file that cannot be removed costs a warning: it is only disk space."""
    with database.read_transaction() as session:
        audit = session.get(Audit, audit_id)
        if audit is None or audit.status == AuditStatus.RUNNING:
            return
        urls = shards.artifact_urls(session, audit_id)
    store = ArtifactStore.from_settings(settings)
    for url in urls:
        try:
            store.delete(url)
        except OSError:
            logger.warning("audit %s: could not delete %s", audit_id, url, exc_info=True)
