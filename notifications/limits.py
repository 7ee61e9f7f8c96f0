"""Per-socket and per-user limits against floods and hoarding."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any


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
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


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
