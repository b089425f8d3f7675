"""Artifact storage: a local folder by default, any fsspec URL when configured (S3 through
moto's server here), each stored rows file readable a page at a time where it lies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from service.artifacts import ArtifactStore
from trustdiff.rows import RowOutcomes, read_rows_page, write_rows


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    outcomes = RowOutcomes(
        y_true=rng.integers(0, 2, size=40),
        reference_proba=rng.dirichlet(np.ones(2), size=40),
        candidate_proba=rng.dirichlet(np.ones(2), size=40),
        labels=["negative", "positive"],
        row_numbers=list(range(1, 41)),
        texts=[f"row {index}" for index in range(40)],
    )
    path = tmp_path / "rows.parquet"
    write_rows(path, outcomes, row_group_size=16)
    return path


@pytest.fixture
def s3_options() -> Iterator[dict[str, Any]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials).create_bucket(
        Bucket="audits"
    )
    try:
        yield {
            "key": "test",
            "secret": "test",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    finally:
        server.stop()


def test_a_local_store_keeps_the_file_where_it_can_be_served_directly(
    tmp_path: Path, rows_file: Path
) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    url = store.put(rows_file, "audits/a1/rows.parquet")
    local = store.local_path(url)
    assert local == tmp_path / "artifacts" / "audits" / "a1" / "rows.parquet"
    assert local.read_bytes() == rows_file.read_bytes()
    assert store.size(url) == rows_file.stat().st_size


def test_rows_stored_in_s3_are_read_a_page_at_a_time(
    rows_file: Path, s3_options: dict[str, Any]
) -> None:
    store = ArtifactStore("s3://audits/trustdiff", s3_options)
    url = store.put(rows_file, "audits/a1/rows.parquet")
    assert url == "s3://audits/trustdiff/audits/a1/rows.parquet"
    assert store.local_path(url) is None
    assert store.exists(url)
    # Another store (another process, a changed configuration) reads it by its URL.
    reader = ArtifactStore("s3://audits/elsewhere", s3_options)
    with reader.open(url) as handle:
        page = read_rows_page(handle, position=30, limit=5)
    assert [item["index"] for item in page.items] == [30, 31, 32, 33, 34]
    assert page.next_position == 35
    assert reader.size(url) == rows_file.stat().st_size


def test_bytes_are_stored_read_back_and_deleted_by_url(
    tmp_path: Path, s3_options: dict[str, Any]
) -> None:
    for store in (
        ArtifactStore(str(tmp_path / "artifacts")),
        ArtifactStore("s3://audits/trustdiff", s3_options),
    ):
        url = store.put_bytes(b"shard output", "audits/a1/shards/predict-0.npz")
        assert store.read_bytes(url) == b"shard output"
        store.put_bytes(b"again", "audits/a1/shards/predict-0.npz")
        assert store.read_bytes(url) == b"again"
        store.delete(url)
        assert not store.exists(url)
        store.delete(url)  # gone already: nothing to do
