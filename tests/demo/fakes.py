"""Fake package archives with the real layouts, for the demo's asset and build tests."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from demo import assets
from tests.tiny_models import sentiment_rows

ROWS = [
    ("1", 2.27, "The Rock is destined to be the 21st Century's new Conan."),
    ("2", -0.6, "Effective but too tepid biopic"),
    ("3", 0.5, "Exactly on the threshold, so dropped."),
    ("4", -0.5, "Exactly on the negative threshold, so dropped too."),
    ("5", 0.51, "Barely positive: kept.\twith a tab inside the text"),
    ("6", -3.1, "Unwatchable, café-grade dreck."),
    ("7", 0.0, "Neutral, dropped."),
]


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ground_truth(rows: list[tuple[str, float, str]]) -> bytes:
    # The real file is UTF-8 with CRLF line ends and no newline after the last row.
    return "\r\n".join(f"{i}\t{mean}\t{text}" for i, mean, text in rows).encode("utf-8")


def make_vader_sdist(
    path: Path,
    rows: list[tuple[str, float, str]] = ROWS,
    *,
    snippets_name: str = "movieReviewSnippets_GroundTruth.txt",
) -> Path:
    nested = _tar_gz(
        {
            f"hutto_ICWSM_2014/{snippets_name}": _ground_truth(rows),
            "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t1.0\tnot the movie file",
        }
    )
    path.write_bytes(
        _tar_gz(
            {
                "vaderSentiment-3.3.2/setup.py": b"",
                "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": nested,
            }
        )
    )
    return path


def balanced_rows(n_per_label: int) -> list[tuple[str, float, str]]:
    rows = []
    for i in range(n_per_label):
        rows.append((f"p{i}", 2.0, f"good film number {i}"))
        rows.append((f"n{i}", -2.0, f"bad film number {i}"))
    return rows


def tiny_vocabulary_rows(n: int) -> list[tuple[str, float, str]]:
    """Valence rows whose texts use the tiny test BERT's vocabulary (see tests/tiny_models)."""
    return [
        (str(i), 2.0 if row["label"] == "positive" else -2.0, row["text"])
        for i, row in enumerate(sentiment_rows(n, seed=3, label_noise=0.0))
    ]


def no_subprocess(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("pip must not run when the archive is already downloaded")


def install_fake_vader(root: Path, monkeypatch: pytest.MonkeyPatch, rows: Any) -> None:
    """A vadersentiment sdist with `rows` in `root/downloads`, accepted by its hash check."""
    downloads = root / "downloads"
    downloads.mkdir(parents=True)
    sdist = make_vader_sdist(downloads / "vaderSentiment-3.3.2.tar.gz", rows)
    monkeypatch.setattr(assets, "VADER_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    monkeypatch.setattr(assets.subprocess, "run", no_subprocess)
