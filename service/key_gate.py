"""ASGI middleware that refuses requests without a usable API key before reading their body."""

from __future__ import annotations

import logging

import anyio
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import INVALID_KEY, MISSING_KEY, authenticate
from service.db import Database
from service.problems import DATABASE_UNAVAILABLE, overloaded_response, problem_response

logger = logging.getLogger(__name__)

# Where the gate leaves the caller's tenant in the request's state.
TENANT_STATE = "tenant"
# Requests that carry no body the routes read: the gate leaves their key to the route.
BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
    here too, at most once a minute, in a short write of its own. The key's tenant goes into
    the request's state, where the routes find it (`get_current_tenant`). Requests without
    a key are refused here whatever their method; a GET's key is checked by its route.
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
            await self._refuse(MISSING_KEY, scope, receive, send)
            return
        if scope["method"] in BODILESS_METHODS:
            # No body to protect: the route checks the key, in the same hand-off to the
            # thread pool as its own reads (see `service.api.deps`).
            await self.app(scope, receive, send)
            return
        try:
            match = await anyio.to_thread.run_sync(authenticate, self.database, token)
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
        if match is None:
            await self._refuse(INVALID_KEY, scope, receive, send)
            return
        # The routes act for this tenant (`get_current_tenant`): the key is not looked up twice.
        scope.setdefault("state", {})[TENANT_STATE] = match.tenant
        await self.app(scope, receive, send)

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
