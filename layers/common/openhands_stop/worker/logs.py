"""One JSON object per log line: what log pipelines parse without a grammar.

The worker never holds the session key (it only reads the table and its queue), so no field
here can carry it; message bodies are not logged either, only their ids and sizes.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

logger = logging.getLogger("openhands_stop.worker")


def log(level: int, event: str, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` (rendered as JSON by ``JsonFormatter``)."""
    logger.log(level, event, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=_jsonable)


def configure_json_logging(stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """Send the worker's logs to ``stream`` (stderr by default), one JSON object a line."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _jsonable(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    return str(value)
