"""ASGI middleware that refuses requests without a usable API key before reading their body."""

from __future__ import annotations

import logging

import anyio
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import needs_use_recorded, record_key_use, usable_key
from service.db import Database
from service.problems import DATABASE_UNAVAILABLE, overloaded_response, problem_response

logger = logging.getLogger(__name__)


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class ApiKeyGate:
    """401 for requests to `protected_prefixes` without an unrevoked, unexpired key.

    It runs before the route, so an unauthenticated 48 MiB upload is answered (and its
    connection closed) without a byte of the body being read. A key's last use is recorded
    here too, at most once a minute, in a short write of its own. The routes still resolve
    the tenant from the key (`get_current_tenant`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        database: Database,
        protected_prefixes: tuple[str, ...],
        retry_after_s: int,
    ) -> None:
        self.app = app
        self.retry_after_s = retry_after_s
        self.database = database
        self.protected_prefixes = protected_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.protected_prefixes):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None:
            await self._refuse(
                "missing API key: send `Authorization: Bearer <key>`", scope, receive, send
            )
            return
        try:
            accepted = await anyio.to_thread.run_sync(self._accept, token)
        except OperationalError as error:
            # As the routes answer it (see `service.problems`): transient, 503, host unsaid.
            logger.warning("database unavailable: %s", error.orig or error)
            response = overloaded_response(
                "the database is busy or unreachable; retry shortly",
                retry_after_s=self.retry_after_s,
                code=DATABASE_UNAVAILABLE,
            )
            await response(scope, receive, send)
            return
        if not accepted:
            await self._refuse("invalid, revoked or expired API key", scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _accept(self, token: str) -> bool:
        with self.database.read_transaction() as session:
            api_key = usable_key(session, token)
            if api_key is None:
                return False
            key_id, record = api_key.id, needs_use_recorded(api_key)
        if record:
            try:
                with self.database.transaction() as session:
                    record_key_use(session, key_id)
            except Exception:
                # Bookkeeping only: a busy database must not turn a valid key away.
                logger.warning("could not record the use of API key %s", key_id, exc_info=True)
        return True

    @staticmethod
    async def _refuse(detail: str, scope: Scope, receive: Receive, send: Send) -> None:
        # The body was not read: the connection cannot carry another request.
        response = problem_response(
            401,
            title="Unauthorized",
            detail=detail,
            code="unauthorized",
            headers={"WWW-Authenticate": "Bearer", "Connection": "close"},
        )
        await response(scope, receive, send)
