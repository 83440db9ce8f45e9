"""watch: the daemon's log, as text lines or one JSON object per line (``--log-format``)."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable
from typing import IO, Any

# Structured fields the daemon passes with ``extra=`` (kept in the JSON object).
FIELDS = ("host", "action", "object", "drift", "pass", "seconds", "revision", "replica")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...fields}``, one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        doc: dict[str, Any] = {
            "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            if key in record.__dict__:
                doc[key] = record.__dict__[key]
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure(stream: IO[str], fmt: str = "text", verbose: bool = False) -> Callable[[], None]:
    """Log the ``reconciler`` loggers to ``stream``; returns what undoes it."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger("reconciler")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return lambda: root.removeHandler(handler)
