"""CPU thread defaults: cores per concurrent audit, passive OpenMP waiting, user settings kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trustdiff.threads import DEFAULTED_ENV, available_cores, configure_cpu_threads


def test_defaults_split_the_cores_and_make_openmp_wait_passively() -> None:
    environ: dict[str, str] = {}
    settings = configure_cpu_threads(1, environ=environ)
    assert environ["OMP_NUM_THREADS"] == str(available_cores())
    assert environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert settings.intra_op_threads == available_cores()
    assert not settings.threads_from_user and not settings.wait_policy_from_user
    # A process started from this one (a worker running 4 audits at once) recomputes.
    configure_cpu_threads(4, environ=environ)
    assert environ["OMP_NUM_THREADS"] == str(max(1, available_cores() // 4))


def test_user_settings_are_kept() -> None:
    environ = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    settings = configure_cpu_threads(2, environ=environ)
    assert environ["OMP_NUM_THREADS"] == "3"
    assert environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert settings.intra_op_threads == 3
    assert settings.threads_from_user and settings.wait_policy_from_user
    assert environ[DEFAULTED_ENV] == ""
    with pytest.raises(ValueError, match="concurrency"):
        configure_cpu_threads(0, environ={})


def test_the_cli_sets_them_before_torch_loads() -> None:
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", DEFAULTED_ENV}
    }
    script = (
        "import os, sys\n"
        "from trustdiff.cli import main\n"
        "main(['--version'])\n"
        "assert 'torch' not in sys.modules\n"
        "import torch\n"
        "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True
    )
    assert completed.stdout.split()[-2:] == [str(available_cores()), "PASSIVE"]
