"""Result documents compared across runs: everything but when, where and how fast."""

from __future__ import annotations

import copy
import json
from typing import Any

# Manifest fields that say when, where and how fast a run went, not what it found.
RUN_FIELDS = ("timings", "created_at", "device")


def comparable(document: dict[str, Any] | str) -> dict[str, Any]:
    """`document` (a dict or JSON text) without the manifest's run fields and the twin
    cache's folder: two runs of one audit on any workers give equal values."""
    copied: dict[str, Any] = (
        json.loads(document) if isinstance(document, str) else copy.deepcopy(document)
    )
    manifest = copied["manifest"]
    for name in RUN_FIELDS:
        manifest.pop(name, None)
    if manifest.get("twin_cache"):
        manifest["twin_cache"].pop("location", None)
    return copied
