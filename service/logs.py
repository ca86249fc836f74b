"""Structured logs: one JSON object per line, on stderr."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, any ``extra=`` fields, and the traceback if any."""

    _second: tuple[int, str] = (-1, "")  # the last whole second seen, formatted

    def _time(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds, as ``datetime.isoformat`` writes it; the date and
        time of day are formatted once a second (an access-log line a request: strftime
        each time is a measurable cost)."""
        fraction, whole = math.modf(created)
        micro = round(fraction * 1e6)  # rounded to microseconds first, as datetime does
        second = int(whole) + micro // 1_000_000
        cached = self._second  # read once: another thread may replace it meanwhile
        if cached[0] != second:
            cached = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
            self._second = cached
        return f"{cached[1]}.{micro % 1_000_000 // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:  # e.g. an int beyond 64 bits
            return json.dumps(entry, default=str)


def configure(level: str) -> None:
    """Send the ``service`` loggers to stderr as JSON at the given level (idempotent).

    The JSON lines carry no caller, thread or process name, so the records skip collecting
    them (the logging HOWTO's "Optimization" switches): a stack walk and two lookups on
    every access-log line.
    """
    logging._srcfile = None  # no findCaller(): funcName, lineno are never written
    logging.logThreads = False
    logging.logMultiprocessing = False
    logger = logging.getLogger("service")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False
