"""The worker's Celery configuration: per-audit time limits and the broker's visibility
timeout come from settings, nested so a live run is never redelivered."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.jobs import build_celery_app
from service.settings import Settings

pytestmark = pytest.mark.services


def test_time_limits_and_visibility_timeout_are_configured(settings: Settings) -> None:
    from workers.tasks import run_audit

    assert settings.broker_url.startswith("redis://")
    assert run_audit.soft_time_limit == settings.task_soft_time_limit_s
    assert run_audit.time_limit == settings.task_time_limit_s
    app = build_celery_app(settings)
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility == settings.broker_visibility_timeout_s > settings.task_time_limit_s


def test_defaults_nest_and_a_visibility_timeout_below_the_hard_limit_is_refused() -> None:
    defaults = Settings()
    assert (
        defaults.task_soft_time_limit_s
        < defaults.task_time_limit_s
        < defaults.broker_visibility_timeout_s
    )
    with pytest.raises(ValidationError, match="broker_visibility_timeout_s"):
        Settings(task_time_limit_s=600, broker_visibility_timeout_s=300, task_soft_time_limit_s=60)


def test_shard_sizes_default_to_the_engines() -> None:
    from trustdiff.plan import DEFAULT_BLOCK_INSTANCES, DEFAULT_SHARD_ROWS

    fields = Settings.model_fields
    assert fields["shard_rows"].default == DEFAULT_SHARD_ROWS
    assert fields["block_instances"].default == DEFAULT_BLOCK_INSTANCES
