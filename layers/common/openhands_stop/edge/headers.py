"""ASGI middleware: OpenHands' no-cache headers, and nosniff, on every answer."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_CACHE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"cache-control", b"no-cache, no-store, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
    (b"x-content-type-options", b"nosniff"),
)
"""On every answer, as OpenHands sends its cache headers on every response: a stop's answer
is never stored by a cache, and no answer is sniffed into another content type."""


class NoCacheHeaders:
    """Adds ``NO_CACHE_HEADERS`` to every HTTP answer passing through it: outermost, so the
    key guard's 401 and 503 carry them too (tests/test_http_details.py). Only Starlette's own
    last-resort error handler answers outside it, for an exception the route lets through:
    none does."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_uncached(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *NO_CACHE_HEADERS]
            await send(message)

        await self._app(scope, receive, send_uncached)
