"""The JSON log lines of ``serve`` and the demo's service log, and who may write them.

One JSON object per line. Third-party libraries are held at WARNING, so that
``--log-level debug`` shows our own decisions rather than faker's or httpx's chatter,
and terminal decorations (uvicorn's ``color_message``, ANSI escapes) never reach a line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import IO, Any

import msgspec

__all__ = ["QUIET_LOGGERS", "JsonLogFormatter", "configure_logging"]

# Loggers of libraries that are loaded in the server process (faker and hypothesis come
# with schemathesis in a development environment) and that speak at DEBUG or INFO.
QUIET_LOGGERS = ("faker", "hypothesis", "httpx", "httpcore", "asyncio", "multipart")

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
# Extras that only decorate a terminal: never part of a JSON line.
_TERMINAL_ONLY = frozenset({"color_message"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _plain(getattr(record, "event", None) or record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key != "event" and key not in _TERMINAL_ONLY:
                entry[key] = _plain(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            # A line per decision: msgspec encodes one in a third of json's time.
            return _encode(entry).decode()
        except Exception:  # a lone surrogate, a key msgspec cannot encode: json can
            return json.dumps(entry, default=str)


_encode = msgspec.json.Encoder(enc_hook=str).encode


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def configure_logging(level: str, stream: IO[str] | None = None) -> None:
    """JSON lines on ``stream`` (stderr) at ``level``; third-party loggers at WARNING."""
    # A line per decision: skip what no line of ours shows (the logging HOWTO's
    # "Optimization": the caller's frame, the thread and the process).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
