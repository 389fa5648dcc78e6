"""The stop contract, free of AWS and HTTP: what a stop means and what it must produce."""

from openhands_stop.domain.close_session import StopResult, close_session
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import (
    CancelMessage,
    ConversationRecord,
    ConversationResponse,
    ConversationStatus,
    StopRequest,
)
from openhands_stop.domain.ports import CancelQueue, ConversationTable, StopTransition

__all__ = [
    "CancelMessage",
    "CancelQueue",
    "ConversationRecord",
    "ConversationResponse",
    "ConversationStatus",
    "ConversationTable",
    "DependencyFailure",
    "StopRequest",
    "StopResult",
    "StopTransition",
    "close_session",
]
