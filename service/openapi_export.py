"""Print the API's OpenAPI document (sorted keys): `python -m service.openapi_export`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from service.app import create_app
from service.settings import Settings


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document, independent of this machine's configuration."""
    # The document depends on no setting; a throwaway home keeps the export from touching
    # (or needing) the real state folder.
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), database_url="sqlite://", broker_url="memory://")
        app = create_app(settings)
        document: dict[str, Any] = app.openapi()
        app.state.database.dispose()
    return document


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
