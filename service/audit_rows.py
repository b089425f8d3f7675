"""An audit's rows file: a page of it as JSON (opaque keyset cursor), or the whole Parquet file."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator

from service.artifacts import ArtifactStore
from service.models import Audit
from service.problems import NotFound, UnprocessableContent
from service.schemas import RowOut, RowsPage
from service.settings import Settings

_CHUNK_BYTES = 1 << 20


def _encode_cursor(position: int) -> str:
    raw = json.dumps({"position": position}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)["position"]
    except (binascii.Error, ValueError, TypeError, KeyError) as error:
        raise _bad_cursor(cursor) from error
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise _bad_cursor(cursor)
    return position


def _bad_cursor(cursor: str) -> UnprocessableContent:
    return UnprocessableContent(
        f"cursor {cursor!r} is not one this API returned", code="invalid_cursor"
    )


def rows_url(audit: Audit) -> str:
    """The stored rows file of a succeeded audit; 404 for audits stored before rows files."""
    if audit.rows_url is None:
        raise NotFound(
            f"audit {audit.id} has no rows file: it was stored before rows files existed, "
            f"and its result document holds every row in `instances`",
            code="rows_not_stored",
        )
    return audit.rows_url


def rows_page(
    settings: Settings, audit: Audit, *, cursor: str | None, limit: int, flipped: bool
) -> RowsPage:
    """Up to `limit` rows from where `cursor` left off (every row, or only flipped ones)."""
    # pyarrow is loaded on the first rows request, not at gateway start.
    from trustdiff.rows import read_rows_page

    url = rows_url(audit)
    position = 0 if cursor is None else _decode_cursor(cursor)
    with ArtifactStore.from_settings(settings).open(url) as handle:
        try:
            page = read_rows_page(handle, position=position, limit=limit, flipped_only=flipped)
        except ValueError as error:
            if cursor is None:
                raise
            raise _bad_cursor(cursor) from error
    return RowsPage(
        items=[RowOut.model_validate(item) for item in page.items],
        next_cursor=None if page.next_position is None else _encode_cursor(page.next_position),
        total_rows=page.total,
    )


def rows_file_chunks(settings: Settings, url: str) -> Iterator[bytes]:
    """The stored file's bytes, a chunk at a time (for stores that are not a local disk)."""
    with ArtifactStore.from_settings(settings).open(url) as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            yield chunk
