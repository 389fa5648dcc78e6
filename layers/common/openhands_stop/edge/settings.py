"""The function's settings, read only from the environment variables template.yaml sets."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from openhands_stop.edge.observability import DEFAULT_NAMESPACE, SERVICE
from openhands_stop.settings import StackResources


class RouteSettings(StackResources):
    """The stack's resources, the secret, and the few timings the stop depends on."""

    session_key_secret_id: str = Field(alias="SESSION_API_KEY_SECRET_ID", min_length=1)
    # Warm requests use the cached key; a request whose key misses refreshes it (rotation
    # without a restart) at most this often, so wrong keys cannot flood Secrets Manager.
    key_cache_seconds: float = Field(alias="KEY_CACHE_SECONDS", default=300, gt=0)
    key_refresh_min_seconds: float = Field(alias="KEY_REFRESH_MIN_SECONDS", default=15, ge=0)
    # If Secrets Manager fails during a refresh, the last key fetched keeps serving this long.
    key_max_stale_seconds: float = Field(alias="KEY_MAX_STALE_SECONDS", default=900, ge=0)
    # After a rotation, AWSPREVIOUS is still accepted for this long after AWSCURRENT was made.
    previous_key_grace_seconds: float = Field(
        alias="PREVIOUS_KEY_GRACE_SECONDS", default=3600, ge=0
    )
    # A retried stop this soon after the recorded one sends its cancel again.
    cancel_resend_window_seconds: float = Field(
        alias="CANCEL_RESEND_WINDOW_SECONDS", default=120, ge=0
    )
    retry_after_seconds: int = Field(alias="RETRY_AFTER_SECONDS", default=1, ge=1)
    # A confirmed stop (the stack's StopWaitSeconds): a stop of a running conversation
    # answers once its worker recorded the loop's end, or after this long; 0 answers at once.
    stop_wait_seconds: float = Field(
        alias="STOP_WAIT_SECONDS", default=0, ge=0, le=10, allow_inf_nan=False
    )
    # Read once at init, by Powertools' names for them (template.yaml sets both).
    service_name: str = Field(alias="POWERTOOLS_SERVICE_NAME", default=SERVICE, min_length=1)
    metrics_namespace: str = Field(
        alias="POWERTOOLS_METRICS_NAMESPACE", default=DEFAULT_NAMESPACE, min_length=1
    )

    @property
    def cancel_resend_window(self) -> timedelta:
        return timedelta(seconds=self.cancel_resend_window_seconds)
