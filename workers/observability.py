"""The worker's logs: the service's format (TRUSTDIFF_LOG_FORMAT) and the audit id on each line."""

from __future__ import annotations

from contextvars import Token
from typing import Any

from celery.signals import setup_logging, task_postrun, task_prerun

from service.logs import configure_logging, current_audit_id
from service.settings import get_settings

_tokens: dict[str, Token[str | None]] = {}


@setup_logging.connect
def _configure_logging(loglevel: Any = None, **_kwargs: Any) -> None:
    # Connected, this replaces Celery's own logging setup (which would hijack the root logger).
    configure_logging(get_settings().log_format, loglevel or "INFO")


@task_prerun.connect
def _enter_audit(task_id: str, args: Any = None, **_kwargs: Any) -> None:
    # Every trustdiff task takes the audit id as its first argument.
    if args:
        _tokens[task_id] = current_audit_id.set(str(args[0]))


@task_postrun.connect
def _leave_audit(task_id: str, **_kwargs: Any) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        current_audit_id.reset(token)
