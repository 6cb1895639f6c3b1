"""configure_logging(level, fmt): the one logging set-up of the service and the CLI, as plain text or JSON lines."""

from __future__ import annotations

import datetime
import json
import logging
import sys

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged too.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's extra fields and the
    traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        body = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRS and k not in body)
        if record.exc_info:
            body["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            body["exc_info"] = record.exc_text
        if record.stack_info:
            body["stack_info"] = record.stack_info
        return json.dumps(body, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a test runner or a daemon may swap it)."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter of a log format: "plain" or "json"."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN_FORMAT)


def configure_logging(level: str = "INFO", fmt: str = "plain") -> None:
    """Send the root logger's records at ``level`` and above to stderr in format ``fmt``.

    Calling it again replaces the handler it installed before; handlers installed by others
    (a test runner's, for example) stay.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(make_formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level.upper())
