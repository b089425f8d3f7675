"""Tests for the demo's settings file and its validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.settings import load_settings
from trustdiff.errors import ConfigError


def test_packaged_settings_load_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.reference.train_examples >= 1
    assert settings.distilled.layers == (0, 2, 4)

    bad = tmp_path / "bad.yaml"
    bad.write_text("reference:\n  train_exemples: 10\n")
    with pytest.raises(ConfigError, match="train_exemples"):
        load_settings(bad)
