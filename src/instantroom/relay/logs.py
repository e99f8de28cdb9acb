"""Structured logs: one logfmt line per event that matters.

Callers pass counts, codes and reasons. Room ids and client addresses go through
``Redactor``, which hides them unless the operator turned ``--log-ids`` on. Nothing
here is ever given a key, a message byte or a plaintext.

Clients can make events happen (rooms that expire each second, connections cut off), so
each event has a budget of lines: past it, its lines are counted instead of written, and
``report_suppressed`` (the relay calls it once a second) writes one line with the count.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter

logger = logging.getLogger("instantroom.relay")
# Lines of one event written at once, and then each second: a flood costs the operator's
# disk a few lines a second, while a relay's own events (start, stop) never come near it.
LOG_BURST = 100
LOG_RATE = 5.0


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


class _Budgets:
    """A token bucket of lines per event, and the lines left out since last reported."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}  # event -> (tokens, when)
        self.suppressed: Counter[str] = Counter()

    def take(self, event: str) -> bool:
        now = time.monotonic()
        tokens, then = self.buckets.get(event, (float(LOG_BURST), now))
        tokens = min(float(LOG_BURST), tokens + (now - then) * LOG_RATE)
        if tokens < 1.0:
            self.buckets[event] = (tokens, now)
            self.suppressed[event] += 1
            return False
        self.buckets[event] = (tokens - 1.0, now)
        return True


_budgets = _Budgets()


def log_event(event: str, level: int = logging.INFO, **fields: object) -> None:
    if logger.isEnabledFor(level) and _budgets.take(event):
        logger.log(level, event, extra={"fields": fields})


def report_suppressed() -> None:
    """Write how many lines of each event were left out since the last call."""
    suppressed, _budgets.suppressed = _budgets.suppressed, Counter()
    for event, count in sorted(suppressed.items()):
        logger.warning("log.suppressed", extra={"fields": {"of": event, "lines": count}})


class Redactor:
    """Shows ids and addresses only when the operator asked for them."""

    def __init__(self, show: bool) -> None:
        self.show = show

    def room(self, room_id: bytes) -> str:
        return room_id.hex()[:16] if self.show else "-"

    def address(self, address: str) -> str:
        return address if self.show else "-"
