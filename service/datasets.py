"""Dataset uploads: stream to disk under a size limit, fingerprint, validate, record."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path, PurePath
from typing import BinaryIO

from sqlalchemy.orm import Session

from service.auth import TenantRef
from service.models import Dataset
from service.problems import PayloadTooLarge, UnprocessableContent
from service.quotas import refuse_over_quota
from service.settings import Settings
from trustdiff.config import DatasetSpec
from trustdiff.datasets import DatasetFormat, dataset_format, validate_dataset_file

_CHUNK_BYTES = 1 << 20


def _copy_limited(source: BinaryIO, target: BinaryIO, *, limit: int) -> tuple[int, str]:
    """Copy `source` to `target`, refusing more than `limit` bytes; returns (size, sha256)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(_CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the dataset file is larger than the {limit}-byte upload limit",
                extra={"limit_bytes": limit},
            )
        digest.update(chunk)
        target.write(chunk)
    return size, digest.hexdigest()


def display_name(filename: str | None) -> str:
    """The client's file name as a label: its last component, printable, at most 255 chars.

    It is never part of a path on this machine; control characters (NUL included, which
    Postgres text cannot hold) are dropped so that it can be stored and echoed safely.
    """
    name = PurePath((filename or "").replace("\\", "/")).name
    printable = "".join(char for char in name if char.isprintable())[:255].strip()
    return printable or "dataset"


def store_dataset(
    session: Session,
    tenant: TenantRef,
    source: BinaryIO,
    *,
    filename: str,
    spec: DatasetSpec,
    settings: Settings,
) -> Dataset:
    """Store an uploaded file as `<upload dir>/<tenant>/<id>.<format>` once it validates.

    The format comes from `spec.format` or the uploaded file name's suffix. A file that is too
    large or has a bad row is deleted and refused (413, or 422 naming the row).
    """
    label = display_name(filename)
    file_format: DatasetFormat = dataset_format(Path(label), spec)
    dataset_id = uuid.uuid4()
    relative_path = Path(str(tenant.id)) / f"{dataset_id}.{file_format}"
    final_path = settings.upload_dir / relative_path
    final_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(dir=final_path.parent, suffix=".part")
    temporary_path = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as target:
            size, sha256 = _copy_limited(source, target, limit=settings.max_upload_bytes)
        if size == 0:
            raise UnprocessableContent("the uploaded dataset file is empty", code="dataset_invalid")
        summary = validate_dataset_file(
            temporary_path, spec.model_copy(update={"format": file_format})
        )
        refuse_over_quota("the dataset's row count", summary.rows, settings.max_dataset_rows,
                          "max_dataset_rows")  # fmt: skip
        refuse_over_quota("the dataset's column count", len(summary.fields),
                          settings.max_dataset_fields, "max_dataset_fields")  # fmt: skip
        temporary_path.replace(final_path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    dataset = Dataset(
        id=dataset_id,
        tenant_id=tenant.id,
        filename=label,
        format=file_format,
        storage_path=relative_path.as_posix(),
        sha256=sha256,
        size_bytes=size,
        rows=summary.rows,
        fields=list(summary.fields),
        label_names=list(summary.label_names),
        text_field=spec.text_field,
        text_pair_field=spec.text_pair_field,
        label_field=spec.label_field,
    )
    try:
        session.add(dataset)
        session.flush()
    except BaseException:
        final_path.unlink(missing_ok=True)
        raise
    return dataset
