"""Shared fixtures: tiny real checkpoints and datasets, built once per test session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_bert, sentiment_rows, write_dataset

ENTRY_POINT_GROUPS = ("trustdiff.commands", "trustdiff.renderers")


def pytest_configure(config: pytest.Config) -> None:
    # Service commands and the result's HTML renderer are found through the installed package
    # metadata; an install made before they were published there cannot run the tests.
    missing = [group for group in ENTRY_POINT_GROUPS if not entry_points(group=group)]
    if missing:
        raise pytest.UsageError(
            f"the installed trustdiff metadata has no {', '.join(missing)} entry points; "
            "reinstall: `.venv/bin/python -m pip install --no-deps -e .` (or `make install`)"
        )


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class TinyAssets:
    """A model root and a data root, laid out as the service expects them."""

    model_root: Path
    data_root: Path

    @property
    def reference(self) -> Path:
        return self.model_root / "reference"

    @property
    def perturbed(self) -> Path:
        return self.model_root / "perturbed"

    @property
    def twin(self) -> Path:
        """The reference's recipe trained again with another seed."""
        return self.model_root / "twin"

    @property
    def other_labels(self) -> Path:
        return self.model_root / "other-labels"

    @property
    def dataset(self) -> Path:
        return self.data_root / "sentiment.jsonl"

    def give_to_tenants(self, base: Path, *tenants: str) -> tuple[Path, Path]:
        """A model root and a data root under `base` where each tenant's folder holds these
        assets (as links): the layout the service expects, `<root>/<tenant>/...`."""
        model_root, data_root = base / "models", base / "data"
        for tenant in tenants:
            for root, assets in ((model_root, self.model_root), (data_root, self.data_root)):
                root.mkdir(parents=True, exist_ok=True)
                link = root / tenant
                if not link.exists():
                    link.symlink_to(assets, target_is_directory=True)
        return model_root, data_root


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> TinyAssets:
    root = tmp_path_factory.mktemp("tiny-assets")
    assets = TinyAssets(model_root=root / "models", data_root=root / "data")
    build_tiny_bert(assets.reference, seed=0)
    build_tiny_bert(assets.perturbed, seed=0, weight_noise=0.05)
    build_tiny_bert(assets.twin, seed=1)
    build_tiny_bert(assets.other_labels, labels=("neg", "neutral", "pos"), seed=0, train_steps=0)
    rows = sentiment_rows(48, seed=7)
    write_dataset(assets.dataset, rows)
    write_dataset(assets.data_root / "sentiment.csv", rows)
    write_dataset(assets.data_root / "sentiment.tsv", rows)
    return assets
