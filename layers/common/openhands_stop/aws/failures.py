"""Turn botocore's many exceptions into the domain's one: transient or not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from openhands_stop.domain.errors import DependencyFailure

TRANSIENT_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TooManyRequestsException",
        "LimitExceededException",
        "TransactionConflictException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "InternalServiceError",
        "InternalServiceErrorException",
        "AWS.SimpleQueueService.RequestThrottled",
        "KMSThrottlingException",
    }
)


MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
"""What SQS answers for a deleted queue (a worker shut down, or its orphan was swept)."""


def is_missing_queue(failure: DependencyFailure) -> bool:
    return failure.dependency == "sqs" and failure.detail in MISSING_QUEUE_CODES


def is_transient(error: ClientError) -> bool:
    """Throttling and server-side faults may pass; bad requests and denials will not."""
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in TRANSIENT_ERROR_CODES or status == 429 or status >= 500


@contextmanager
def dependency_call(dependency: str) -> Iterator[None]:
    """Run one AWS call; re-raise any failure as a DependencyFailure, keeping the cause."""
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "Unknown")
        raise DependencyFailure(dependency, code, transient=is_transient(error)) from error
    except (ConnectionError, HTTPClientError) as error:
        # Timeouts, refused or dropped connections: the network, not the request.
        raise DependencyFailure(dependency, type(error).__name__, transient=True) from error
    except BotoCoreError as error:
        raise DependencyFailure(dependency, type(error).__name__, transient=False) from error
