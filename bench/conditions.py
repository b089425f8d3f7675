"""What every benchmark process fixes before torch is imported: OpenMP and the hub, offline."""

from __future__ import annotations

import os
import sys

# Defaults only: a variable the user (or the Makefile) set is kept.
PROCESS_DEFAULTS = {
    # PASSIVE parks idle OpenMP workers instead of spinning: with spinning, forwards on one
    # thread were measured 2-3x slower than the same forwards on another under load.
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def set_conditions_before_torch() -> bool:
    """Set `PROCESS_DEFAULTS` the environment lacks; whether torch was still unimported.

    OpenMP reads its wait policy once, when torch loads it: call this before anything
    imports torch, and record the answer, since a policy set afterwards has no effect.
    """
    before_torch = "torch" not in sys.modules
    for name, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return before_torch
