"""The worker's Celery app and its one `WorkerRuntime`, hooked to Celery's process signals."""

from __future__ import annotations

from typing import Any

from celery.signals import celeryd_init, worker_process_init, worker_ready, worker_shutdown

from service.settings import get_settings
from trustdiff.threads import available_cores, configure_cpu_threads
from workers import observability  # noqa: F401  (connects the log format and audit-id signals)
from workers.runtime import WorkerRuntime

runtime = WorkerRuntime(get_settings(), task_modules=["workers.tasks"])
app = runtime.celery_app


@celeryd_init.connect
def _configure_cpu_threads(conf: Any, options: dict[str, Any], **_kwargs: Any) -> None:
    # Before any audit imports torch (pool children fork later and inherit the environment):
    # the worker's cores are shared among the audits it runs at once.
    pool = str(options.get("pool_cls") or conf.worker_pool or "")
    concurrency = 1 if "solo" in pool else options.get("concurrency") or conf.worker_concurrency
    configure_cpu_threads(int(concurrency or available_cores()))


@worker_process_init.connect
def _after_fork(**_kwargs: Any) -> None:
    runtime.after_fork()


@worker_ready.connect
def _start_background(**_kwargs: Any) -> None:
    runtime.start_background()


@worker_shutdown.connect
def _stop_background(**_kwargs: Any) -> None:
    runtime.stop_background()
