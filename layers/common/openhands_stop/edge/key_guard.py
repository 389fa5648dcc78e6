"""ASGI middleware: the X-Session-API-Key check for everything under /api, before routing."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from openhands_stop.constants import SESSION_KEY_HEADER
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.edge.session_key import SessionKeyVerifier

GUARDED_PREFIX = "/api/"
"""Everything under /api needs the key, as under OpenHands' own /api router."""

_HEADER_NAME = SESSION_KEY_HEADER.lower().encode("latin-1")


class SessionKeyGuard:
    """Refuses a request under /api without a valid key, before any route runs.

    Like OpenHands' router-wide dependency, it runs before the path is validated, so an
    unauthenticated caller is refused (401) before learning anything about its path (422:
    tests/test_stop_contract.py).
    As middleware rather than a FastAPI dependency it costs a request no dependency solving
    (docs/performance.md). What it answers is the app's to say: ``refused`` builds the 401,
    ``unavailable`` the answer when no key can be read (the verifier raised
    DependencyFailure: the guard fails closed).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: SessionKeyVerifier,
        refused: Callable[[Scope], Response],
        unavailable: Callable[[Scope, DependencyFailure], Response],
    ) -> None:
        self._app = app
        self._verifier = verifier
        self._refused = refused
        self._unavailable = unavailable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PREFIX):
            await self._app(scope, receive, send)
            return
        try:
            accepted = self._verifier.verify(presented_key(scope))
        except DependencyFailure as failure:  # no key could be read: fail closed, retryably
            await self._unavailable(scope, failure)(scope, receive, send)
            return
        if accepted:
            await self._app(scope, receive, send)
            return
        await self._refused(scope)(scope, receive, send)


def presented_key(scope: Scope) -> str | None:
    """The first X-Session-API-Key header, decoded as Starlette decodes headers (latin-1)."""
    for name, value in scope["headers"]:
        if name == _HEADER_NAME:
            return str(value.decode("latin-1"))
    return None
