"""Log succeeded audits to MLflow when the deployment names a tracking server."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from service.settings import Settings

if TYPE_CHECKING:
    from trustdiff.result import AuditResult

logger = logging.getLogger(__name__)


def log_to_mlflow(audit_id: uuid.UUID, result: AuditResult, settings: Settings) -> str | None:
    """Log the stored result to `TRUSTDIFF_MLFLOW_TRACKING_URI`; the run id, or None.

    Called after the result is stored: the audit has succeeded whatever happens here, so a
    tracking server that is down costs a warning in the log, never the audit.
    """
    try:
        from trustdiff.report import render_report
        from trustdiff.tracking import log_audit

        run_id = log_audit(
            result,
            report_html=render_report(result),
            tracking_uri=settings.mlflow_tracking_uri,
            experiment=settings.mlflow_experiment,
            tags={"trustdiff.audit_id": str(audit_id)},
        )
    except Exception:
        logger.warning("audit %s: MLflow logging failed", audit_id, exc_info=True)
        return None
    logger.info("audit %s: logged to MLflow run %s", audit_id, run_id)
    return run_id
