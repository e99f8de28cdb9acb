"""Structured logs: one logfmt line per event that matters.

Callers pass counts, codes and reasons. Room ids and client addresses go through
``Redactor``, which hides them unless the operator turned ``--log-ids`` on. Nothing
here is ever given a key, a message byte or a plaintext.
"""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger("instantroom.relay")


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={stamp}Z", f"level={record.levelname.lower()}", f"event={record.msg}"]
        extra: dict[str, object] = getattr(record, "fields", {})
        for key, value in extra.items():
            text = str(value)
            if not text or any(c in text for c in ' "='):
                text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(f"{key}={text}")
        return " ".join(parts)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def log_event(event: str, level: int = logging.INFO, **fields: object) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


class Redactor:
    """Shows ids and addresses only when the operator asked for them."""

    def __init__(self, show: bool) -> None:
        self.show = show

    def room(self, room_id: bytes) -> str:
        return room_id.hex()[:16] if self.show else "-"

    def address(self, address: str) -> str:
        return address if self.show else "-"
