"""Bounded logging of what clients cause: a client must not be able to fill the server's log.

uvicorn logs some client mistakes on its ``uvicorn.error`` logger, one record
per occurrence, and one of them with a full traceback: a text frame that is
not valid UTF-8 (``websockets_sansio_impl``: "Invalid UTF-8 sequence received
from client."), which closes the connection with 1007, so a client that opens
a connection per frame writes a traceback per frame. ``AbuseLogFilter`` lets
``LOG_ABUSE_BURST`` records of each such message through per
``LOG_ABUSE_INTERVAL`` seconds, drops their traceback (it shows uvicorn's
``bytes.decode``, nothing of ours), and says in the next line it lets through
how many were left out. Every other record passes untouched.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from .conf import live_settings
from .limits import TokenBucket

# Messages of uvicorn (and of websockets, which logs on uvicorn's logger there)
# that any client can trigger at will.
CLIENT_CAUSED = frozenset(
    {
        "Invalid UTF-8 sequence received from client.",
        "Invalid HTTP request received.",
        "Unsupported upgrade request.",
        "opening handshake failed",
        # A handshake refused with an HTTP status (429: too many unauthenticated sockets,
        # or an address out of its authentication budget): uvicorn's websockets-sansio
        # implementation logs this for every refusal sent as a denial response.
        "ASGI callable returned without completing handshake.",
    }
)

# The ASGI server's logger that carries them.
SERVER_LOGGER = "uvicorn.error"


class AbuseLogFilter(logging.Filter):
    """Rate-limits the records whose message is one of ``messages``, and drops their traceback."""

    def __init__(self, messages: frozenset[str] = CLIENT_CAUSED) -> None:
        super().__init__()
        self.messages = messages
        self.buckets: dict[str, TokenBucket] = {}
        self.suppressed: Counter[str] = Counter()
        self.lock = threading.Lock()  # records may come from any thread

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if not isinstance(message, str) or message not in self.messages:
            return True
        burst = live_settings.LOG_ABUSE_BURST
        if burst is None:
            return True
        # The client's input caused it, not a bug: the traceback adds nothing.
        record.exc_info = record.exc_text = record.stack_info = None
        with self.lock:
            bucket = self.buckets.get(message)
            if bucket is None:
                interval = float(live_settings.LOG_ABUSE_INTERVAL)
                bucket = self.buckets[message] = TokenBucket(float(burst) / interval, burst)
            if not bucket.take():
                self.suppressed[message] += 1
                return False
            left_out = self.suppressed.pop(message, 0)
        if left_out:
            record.msg = f"{record.getMessage()} ({left_out} more like it not logged)"
            record.args = None
        return True


def install() -> None:
    """Put an ``AbuseLogFilter`` on the ASGI server's logger (once per process)."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(existing, AbuseLogFilter) for existing in logger.filters):
        logger.addFilter(AbuseLogFilter())
