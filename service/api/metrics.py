"""`GET /metrics`: Prometheus text format for the operator's scraper (see `service.metrics`)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import AppSettings
from service.metrics import ServiceMetrics
from service.problems import Unauthorized

router = APIRouter(tags=["operations"])

_bearer = HTTPBearer(auto_error=False)


def require_metrics_token(
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Open unless `TRUSTDIFF_METRICS_TOKEN` is set; then only that token may scrape."""
    if settings.metrics_token is None:
        return
    expected = settings.metrics_token.get_secret_value().encode()
    given = (credentials.credentials if credentials else "").encode()
    if not hmac.compare_digest(given, expected):
        raise Unauthorized("GET /metrics needs the operator's metrics token")


# Not in the OpenAPI spec: it is the operator's endpoint in Prometheus' format, not the API.
@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
def get_metrics(request: Request) -> Response:
    metrics: ServiceMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
