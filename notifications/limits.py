"""Per-socket and per-user limits against floods and hoarding."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from .conf import live_settings


class TokenBucket:
    """Allows ``rate`` actions per second on average, and bursts of ``burst``."""

    __slots__ = ("rate", "capacity", "tokens", "updated")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = float(rate)
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False when none is left."""
        if not self.available():
            return False
        self.tokens -= 1
        return True

    def available(self) -> bool:
        """Whether a token is left, without spending it."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens >= 1


class Unlimited(TokenBucket):
    """A bucket that never runs dry."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(0, 0)

    def take(self) -> bool:
        return True

    def available(self) -> bool:
        return True


UNLIMITED = Unlimited()

# The budget of each client action, per socket: (rate per second, burst). An
# action not named here (one added later, such as `retrieve` or `list`) gets
# the "*" budget; `subscribe` gets SUBSCRIBE_RATE and SUBSCRIBE_BURST unless
# ACTION_BUDGETS names it. The setting ACTION_BUDGETS overrides entries one by one.
DEFAULT_ACTION_BUDGETS: dict[str, tuple[float, float]] = {
    # Answered from memory, but every reply is a frame to send.
    "ping": (2.0, 20),
    # Validated in a thread, no query.
    "unsubscribe": (20.0, 50),
    # One query per frame: a client needs it once per socket.
    "authenticate": (0.2, 3),
    # Anything else: assume it reads the database.
    "*": (5.0, 20),
}


def action_budget(action: str) -> tuple[float, float]:
    """The (rate per second, burst) of ``action`` on one socket, from the settings."""
    configured: dict[str, Any] = live_settings.ACTION_BUDGETS or {}
    if action in configured:
        rate, burst = configured[action]
    elif action == "subscribe":
        rate, burst = live_settings.SUBSCRIBE_RATE, live_settings.SUBSCRIBE_BURST
    elif action in DEFAULT_ACTION_BUDGETS:
        rate, burst = DEFAULT_ACTION_BUDGETS[action]
    elif "*" in configured:
        rate, burst = configured["*"]
    else:
        rate, burst = DEFAULT_ACTION_BUDGETS["*"]
    return float(rate), float(burst)


class ActionBudgets:
    """One socket's token bucket per action, made when the action is first used."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, action: str) -> bool:
        """Spend one request of ``action``; False when its budget is spent (answer ``throttled``)."""
        bucket = self.buckets.get(action)
        if bucket is None:
            bucket = self.buckets[action] = TokenBucket(*action_budget(action))
        return bucket.take()


class SocketCount:
    """How many sockets each user holds open in this process."""

    def __init__(self) -> None:
        self._counts: Counter[Any] = Counter()

    def add(self, user_pk: Any, limit: int) -> bool:
        """Count one more socket for ``user_pk``; False (and not counted) past ``limit``."""
        if self._counts[user_pk] >= limit:
            return False
        self._counts[user_pk] += 1
        return True

    def remove(self, user_pk: Any) -> None:
        self._counts[user_pk] -= 1
        if self._counts[user_pk] <= 0:
            del self._counts[user_pk]

    def __getitem__(self, user_pk: Any) -> int:
        return self._counts[user_pk]


sockets_per_user = SocketCount()
