"""Service test fixtures (real Postgres, Redis and worker); the worker log joins failures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.fixtures import *  # noqa: F403  (the session fixtures, found by name)
from tests.service.fixtures import WORKERS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and "worker" in getattr(item, "fixturenames", ()):
        for worker in WORKERS:
            report.sections.append(("worker log (last 200 lines)", _tail(worker.log())))
    return report


def _tail(text: str, lines: int = 200) -> str:
    return "\n".join(text.splitlines()[-lines:])
