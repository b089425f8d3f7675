"""Per-tenant quotas: how much work one request may ask for, and how much may be in flight."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.auth import TenantRef
from service.models import Audit, AuditStatus
from service.problems import Problem, UnprocessableContent
from service.settings import Settings
from trustdiff.config import AuditConfig

QUOTA_EXCEEDED = "quota_exceeded"


class TooManyAudits(Problem):
    status, code, title = 429, "too_many_audits", "Too many audits"


def refuse_over_quota(what: str, value: int, limit: int, setting: str) -> None:
    if value > limit:
        raise UnprocessableContent(
            f"{what} is {value}, over this service's limit of {limit} "
            f"(TRUSTDIFF_{setting.upper()})",
            code=QUOTA_EXCEEDED,
            extra={"quota": setting, "limit": limit, "requested": value},
        )


def check_work_quotas(config: AuditConfig, settings: Settings) -> None:
    """Refuse (422 `quota_exceeded`) an audit that asks for more work than the quotas allow."""
    explain = config.explain
    explained = explain.instances if explain.methods else 0
    refuse_over_quota(
        "explain.instances", explained, settings.max_explain_instances, "max_explain_instances"
    )
    if "lime" in explain.methods and explained:
        refuse_over_quota(
            "explain.lime_samples", explain.lime_samples, settings.max_lime_samples,
            "max_lime_samples",
        )  # fmt: skip
    if "shap" in explain.methods and explained:
        refuse_over_quota(
            "explain.shap_max_evals", explain.shap_max_evals, settings.max_shap_evals,
            "max_shap_evals",
        )  # fmt: skip
    refuse_over_quota(
        "calibration.n_bootstrap",
        config.calibration.n_bootstrap,
        settings.max_bootstrap_resamples,
        "max_bootstrap_resamples",
    )


def check_concurrent_audits(session: Session, tenant: TenantRef, settings: Settings) -> None:
    """429 when the tenant already has its quota of queued and running audits."""
    in_flight = session.scalar(
        select(func.count())
        .select_from(Audit)
        .where(
            Audit.tenant_id == tenant.id,
            Audit.status.in_([AuditStatus.QUEUED, AuditStatus.RUNNING]),
        )
    )
    if (in_flight or 0) >= settings.max_concurrent_audits:
        raise TooManyAudits(
            f"{in_flight} audits are queued or running, this service's limit per tenant "
            f"(TRUSTDIFF_MAX_CONCURRENT_AUDITS); submit again when one has finished",
            extra={"limit": settings.max_concurrent_audits},
            headers={"Retry-After": "30"},
        )
