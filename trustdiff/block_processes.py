"""An audit's explanation blocks explained in several processes at once.

Explaining is host-bound: LIME's sampling, shap's Partition tree and tokenization are Python
that holds one core per process under the GIL, while a GPU waits for them (`make bench-gpu`:
one process kept an H200 7 % busy, fourteen kept it 80 % busy). Each block is explained by
`explain_block` with an evaluator of its own, exactly as in one process or on a service
worker, so the blocks, and so the audit, come out the same whichever process explains them:
to the bit where the processes compute with the same intra-op thread count, and within
float32 rounding otherwise (on a CPU, cores ÷ processes threads sum matmuls in another order:
up to 6.9e-8 on the demo's models, with the same verdict).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from trustdiff.errors import AuditCancelledError
from trustdiff.stages import CancelCheck, ProgressCallback

if TYPE_CHECKING:
    from trustdiff.plan import AuditPlan
    from trustdiff.shards import ExplainedBlock, Probabilities

# How often the parent polls cancellation while blocks run.
CANCEL_POLL_S = 0.5


def explain_blocks_in_processes(
    plan: AuditPlan,
    probabilities: Probabilities,
    *,
    processes: int,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> list[ExplainedBlock]:
    """Every block of `plan`, in block order, explained by up to `processes` spawned processes.

    Each process receives the plan and the probabilities once, gets cores ÷ `processes`
    intra-op threads (unless the user set `OMP_NUM_THREADS`), loads the models and the
    dataset once, and then explains whole blocks as they come free. `progress("explain",
    done, total)` counts the instances of finished blocks. `should_cancel` is polled every
    `CANCEL_POLL_S`; once it answers true, blocks not started are dropped, the running ones
    finish, and `AuditCancelledError` is raised. A block's error is raised as it was raised.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    total = sum(len(block) for block in plan.blocks)
    if progress is not None:
        progress("explain", 0, total)
    processes = min(processes, len(plan.blocks))
    if processes == 0:
        return []
    # spawn, not fork: the parent may hold a CUDA context (the prediction shards ran here).
    context = multiprocessing.get_context("spawn")
    results: dict[int, ExplainedBlock] = {}
    with ProcessPoolExecutor(
        processes,
        mp_context=context,
        initializer=_start_process,
        initargs=(plan, probabilities, processes),
    ) as executor:
        futures: dict[Future[ExplainedBlock], int] = {
            executor.submit(_explain, index): index for index in range(len(plan.blocks))
        }
        pending: set[Future[ExplainedBlock]] = set(futures)
        done = 0
        try:
            while pending:
                finished, pending = wait(
                    pending, timeout=CANCEL_POLL_S, return_when=FIRST_COMPLETED
                )
                for future in finished:
                    index = futures[future]
                    results[index] = future.result()
                    done += len(plan.blocks[index])
                    if progress is not None:
                        progress("explain", done, total)
                if pending and should_cancel is not None and should_cancel():
                    raise AuditCancelledError("audit cancelled while explaining instances")
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return [results[index] for index in range(len(plan.blocks))]


_PROCESS: dict[str, Any] = {}


def _start_process(plan: AuditPlan, probabilities: Probabilities, processes: int) -> None:
    from trustdiff.dataset_cache import DatasetCache
    from trustdiff.runner_cache import RunnerCache
    from trustdiff.threads import configure_cpu_threads

    configure_cpu_threads(processes)
    _PROCESS.update(
        plan=plan, probabilities=probabilities, runners=RunnerCache(), datasets=DatasetCache()
    )


def _explain(index: int) -> ExplainedBlock:
    from trustdiff.shards import explain_block

    return explain_block(
        _PROCESS["plan"],
        _PROCESS["probabilities"],
        index,
        runners=_PROCESS["runners"],
        datasets=_PROCESS["datasets"],
    )
