"""Worker tests call the runner, sweep and callback functions directly on real Postgres."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.db import Database
from service.jobs import build_celery_app
from service.settings import Settings
from tests.service.fixtures import *  # noqa: F403  (the session fixtures, found by name)


@pytest.fixture
def parked_database(parked_settings: Settings, clean_database: Database) -> Iterator[Database]:
    """The test database, sending jobs to a queue no worker reads (so they can be counted)."""
    parked = Database(parked_settings.database_url, build_celery_app(parked_settings))
    yield parked
    parked.dispose()
