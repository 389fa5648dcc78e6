"""The ``X-Session-API-Key`` check: constant-time, cached, refreshed on a miss, fail closed."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import utc_now
from openhands_stop.domain.ports import KeySource

LOG = logging.getLogger(__name__)

CURRENT = "AWSCURRENT"
PREVIOUS = "AWSPREVIOUS"

# Compared against when there is no key at all, so a refused request costs the same work.
_NO_KEY_DIGEST = hashlib.sha256(b"\x00no session key configured\x00").digest()


def _digest(key: str) -> bytes:
    # Hashing first makes every comparison 32 bytes against 32 bytes: no exit on length.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass
class _Keys:
    digests: tuple[bytes, ...]
    current_created_at: datetime | None
    fetched_at: float
    previous_loaded: bool = False
    # Kept apart from ``digests``: it is accepted only while the grace period lasts, even
    # when the cache outlives the grace period.
    previous_digest: bytes | None = None


class SessionKeyVerifier:
    """Decides whether a presented key is the session key.

    Warm requests make no Secrets Manager call. A miss refreshes the key (so a rotated key
    is accepted without a restart), at most once per ``refresh_min_seconds``. During
    ``previous_grace`` after a rotation the previous key is accepted too. With no key
    configured, or none obtainable, nothing is accepted.
    """

    def __init__(
        self,
        source: KeySource,
        *,
        cache_seconds: float,
        refresh_min_seconds: float,
        max_stale_seconds: float,
        previous_grace: timedelta,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._source = source
        self._cache_seconds = cache_seconds
        self._refresh_min_seconds = refresh_min_seconds
        self._max_stale_seconds = max_stale_seconds
        self._previous_grace = previous_grace
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._keys: _Keys | None = None
        self._last_attempt = float("-inf")

    def forget(self) -> None:
        """Drop the cached key (after a SnapStart restore, the snapshot's key may be old)."""
        self._keys = None
        self._last_attempt = float("-inf")

    def verify(self, presented: str | None) -> bool:
        """True when ``presented`` is an accepted key. Raises DependencyFailure only when no
        key has ever been obtained (or the last one is too stale to trust)."""
        if not presented:
            return False
        now = self._monotonic()
        keys = self._keys
        if keys is None or now - keys.fetched_at >= self._cache_seconds:
            keys = self._refresh(now)
        if _matches(presented, self._accepted(keys)):
            return True
        if self._previous_in_grace(keys):
            keys = self._load_previous(keys)
            if _matches(presented, self._accepted(keys)):
                return True
        if now - self._last_attempt >= self._refresh_min_seconds:
            keys = self._refresh(now)
            return _matches(presented, self._accepted(keys))
        return False

    def _refresh(self, now: float) -> _Keys:
        self._last_attempt = now
        try:
            current = self._source.fetch(CURRENT)
        except DependencyFailure:
            cached = self._keys
            if cached is None or now - cached.fetched_at >= self._max_stale_seconds:
                raise
            LOG.warning("session key refresh failed; the cached key keeps serving")
            return cached
        digests = (_digest(current.key),) if current.key else ()
        self._keys = _Keys(digests, current.created_at, fetched_at=now)
        if not digests:
            LOG.error("the session key secret is empty or missing: every request is refused")
        return self._keys

    def _in_grace(self, keys: _Keys) -> bool:
        created = keys.current_created_at
        return created is not None and self._wall_clock() - created <= self._previous_grace

    def _previous_in_grace(self, keys: _Keys) -> bool:
        return not keys.previous_loaded and self._in_grace(keys)

    def _accepted(self, keys: _Keys) -> tuple[bytes, ...]:
        """The current key, and the previous one while the grace period lasts."""
        if keys.previous_digest is not None and self._in_grace(keys):
            return (*keys.digests, keys.previous_digest)
        return keys.digests

    def _load_previous(self, keys: _Keys) -> _Keys:
        keys.previous_loaded = True
        try:
            previous = self._source.fetch(PREVIOUS)
        except DependencyFailure:
            LOG.warning("could not read the previous session key; only the current one is accepted")
            return keys
        if previous.key and keys.digests:
            keys.previous_digest = _digest(previous.key)
        return keys


def _matches(presented: str, digests: tuple[bytes, ...]) -> bool:
    """Compare against every accepted key without stopping at the first match."""
    candidate = _digest(presented)
    matched = False
    for digest in digests or (_NO_KEY_DIGEST,):
        matched |= hmac.compare_digest(candidate, digest)
    return matched and bool(digests)
