"""Routes for datasets: multipart upload (size-limited, validated, fingerprinted) and read."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile, status
from pydantic import ValidationError

from service import datasets as dataset_service
from service.api.deps import AppSettings, CurrentDataset, CurrentTenant, DbSession
from service.api.responses import PROBLEMS, problems
from service.models import Dataset
from service.problems import UnprocessableContent
from service.schemas import DatasetOut
from trustdiff.config import DatasetSpec

router = APIRouter(prefix="/datasets", tags=["datasets"])


def dataset_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut.model_validate(dataset, from_attributes=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**PROBLEMS, **problems(408, 413)},
)
def upload_dataset(
    file: Annotated[UploadFile, File(description="JSONL, CSV or TSV (GLUE-style) file.")],
    response: Response,
    tenant: CurrentTenant,
    session: DbSession,
    settings: AppSettings,
    format: Annotated[Literal["jsonl", "csv", "tsv"] | None, Form()] = None,
    text_field: Annotated[str, Form(min_length=1, max_length=200)] = "text",
    text_pair_field: Annotated[str | None, Form(min_length=1, max_length=200)] = None,
    label_field: Annotated[str, Form(min_length=1, max_length=200)] = "label",
) -> DatasetOut:
    """Store a dataset for later audits; every row is validated now (bad rows name their row)."""
    filename = dataset_service.display_name(file.filename)
    try:
        spec = DatasetSpec(
            path=filename,
            format=format,
            text_field=text_field,
            text_pair_field=text_pair_field,
            label_field=label_field,
        )
    except ValidationError as error:
        raise UnprocessableContent(str(error), code="invalid_request") from None
    dataset = dataset_service.store_dataset(
        session,
        tenant,
        file.file,
        filename=filename,
        spec=spec,
        settings=settings,
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return dataset_out(dataset)


@router.get("/{dataset_id}", responses=PROBLEMS)
def get_dataset(dataset: CurrentDataset) -> DatasetOut:
    return dataset_out(dataset)
