"""`trustdiff worker`: run a Celery worker that executes audits.

Published in the `trustdiff.commands` entry-point group (pyproject.toml). Loaded whenever the
engine's CLI builds its parser, so nothing heavy at module level.
"""

import argparse
import os

from service.cli import needs_service_extra, prepare_state, run_commands


def register_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `worker` to the `trustdiff` parser."""
    worker = subparsers.add_parser("worker", help="run a Celery worker that executes audits")
    worker.add_argument(
        "--pool",
        choices=("prefork", "solo", "threads"),
        default="prefork",
        help="prefork isolates each audit in a child process (default); solo runs in-process",
    )
    worker.add_argument("--concurrency", type=int, default=1, help="audits run at once")
    worker.add_argument("--log-level", default="info")
    worker.add_argument(
        "--nice",
        type=int,
        choices=range(20),
        default=0,
        metavar="N",
        help="lower this worker's CPU priority by N (0-19), so a gateway on the same machine "
        "keeps answering while audits compute (`trustdiff serve` starts its worker at 10)",
    )
    worker.set_defaults(func=needs_service_extra("worker", _worker))


def _worker(args: argparse.Namespace) -> int:
    if args.nice:
        # Before any thread or pool child exists: all of them inherit it.
        os.nice(args.nice)
    prepare_state(migrate_embedded=True)
    from workers.celery_app import app, runtime

    app.worker_main(
        [
            "worker",
            f"--pool={args.pool}",
            f"--concurrency={args.concurrency}",
            f"--queues={runtime.settings.queue}",
            f"--loglevel={args.log_level.upper()}",
            # Unique per process: several workers on one host must not share a node name.
            f"--hostname=trustdiff-{os.getpid()}@%h",
        ]
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m workers.cli worker ...`: the command without the engine's CLI around it."""
    return run_commands("trustdiff-worker", register_commands, argv)


if __name__ == "__main__":
    raise SystemExit(main())
