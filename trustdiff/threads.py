"""CPU threading for torch: intra-op threads per concurrent audit, passive OpenMP waiting."""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass

# Names of the variables `configure_cpu_threads` set itself, so that a child process (the
# worker `trustdiff serve` starts) can tell them from the user's and recompute its own.
DEFAULTED_ENV = "TRUSTDIFF_THREAD_DEFAULTS"


@dataclass(frozen=True)
class CpuThreads:
    """What `configure_cpu_threads` settled on, and whether the user had chosen it."""

    intra_op_threads: int
    omp_wait_policy: str
    threads_from_user: bool
    wait_policy_from_user: bool


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def configure_cpu_threads(
    concurrency: int = 1, *, environ: MutableMapping[str, str] | None = None
) -> CpuThreads:
    """Give each of `concurrency` audits running at once its share of the cores.

    Call at process start, before torch is imported: OpenMP reads its environment once,
    when torch loads it. Unless the user set them (in `environ`, default `os.environ`):

    - `OMP_NUM_THREADS` = max(1, cores ÷ `concurrency`), so concurrent audits do not
      oversubscribe the cores;
    - `OMP_WAIT_POLICY=PASSIVE`: idle OpenMP threads sleep instead of spinning. Spinning
      threads steal the cores from everything else in the process (tokenization, the
      explainers' Python); on a busy 2-core machine it made forward passes on the main
      thread 2–3× slower than the same passes on a fresh thread.

    If torch is already imported, its intra-op thread count is set directly too (the wait
    policy can then no longer change). Returns the settings in effect.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    env = os.environ if environ is None else environ
    defaulted = set(filter(None, env.get(DEFAULTED_ENV, "").split(",")))
    threads_from_user = "OMP_NUM_THREADS" in env and "OMP_NUM_THREADS" not in defaulted
    wait_policy_from_user = "OMP_WAIT_POLICY" in env and "OMP_WAIT_POLICY" not in defaulted
    if not threads_from_user:
        env["OMP_NUM_THREADS"] = str(max(1, available_cores() // concurrency))
        defaulted.add("OMP_NUM_THREADS")
    if not wait_policy_from_user:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        defaulted.add("OMP_WAIT_POLICY")
    env[DEFAULTED_ENV] = ",".join(sorted(defaulted))
    threads = _positive_int(env["OMP_NUM_THREADS"]) or max(1, available_cores() // concurrency)
    torch = sys.modules.get("torch")
    if torch is not None and environ is None:
        torch.set_num_threads(threads)
    return CpuThreads(
        intra_op_threads=threads,
        omp_wait_policy=env["OMP_WAIT_POLICY"],
        threads_from_user=threads_from_user,
        wait_policy_from_user=wait_policy_from_user,
    )


def _positive_int(value: str) -> int | None:
    try:
        number = int(value.split(",")[0])
    except ValueError:
        return None
    return number if number > 0 else None
