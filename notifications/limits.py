"""Per-socket, per-user and per-address limits against floods, hoarding and guessing."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
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
    """How many sockets each user holds open in this process (the in-memory store's ``admit_socket``)."""

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


class Stranger:
    """The place one unauthenticated socket holds in ``Strangers``; ``release()`` gives it back, once."""

    __slots__ = ("owner", "address")

    def __init__(self, owner: Strangers | None, address: str) -> None:
        self.owner = owner
        self.address = address

    def release(self) -> None:
        if self.owner is not None:
            self.owner._remove(self.address)
            self.owner = None


class Strangers:
    """Sockets that have not authenticated, in this process and per client address.

    They cost memory and an event-loop slot and may guess tokens, and nothing
    ties them to an account, so they are capped: ``MAX_UNAUTHENTICATED_SOCKETS``
    in all, ``MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS`` from one address.
    """

    def __init__(self) -> None:
        self.total = 0
        self.per_address: Counter[str] = Counter()

    def admit(self, address: str) -> Stranger | None:
        """A place for one more unauthenticated socket from ``address``, or None past a cap."""
        limit = live_settings.MAX_UNAUTHENTICATED_SOCKETS
        per_address = live_settings.MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS
        if limit is not None and self.total >= int(limit):
            return None
        if per_address is not None and self.per_address[address] >= int(per_address):
            return None
        self.total += 1
        self.per_address[address] += 1
        return Stranger(self, address)

    def _remove(self, address: str) -> None:
        self.total -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]

    def clear(self) -> None:
        self.total = 0
        self.per_address.clear()


strangers = Strangers()


class AddressBuckets:
    """A token bucket per client address, for the ``size`` addresses seen last (bounded memory).

    Forgetting an address gives it a full bucket again; that happens only when
    ``size`` other addresses spent something since, and the socket caps still hold.
    """

    def __init__(self, rate_setting: str, burst_setting: str, size: int = 10000) -> None:
        self.rate_setting = rate_setting
        self.burst_setting = burst_setting
        self.size = size
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _limits(self) -> tuple[float, float]:
        return float(getattr(live_settings, self.rate_setting)), float(getattr(live_settings, self.burst_setting))

    def allows(self, address: str) -> bool:
        """Whether ``address`` has budget left (nothing is spent)."""
        bucket = self.buckets.get(address)
        if bucket is None:
            return self._limits()[1] >= 1
        bucket.rate, bucket.capacity = self._limits()
        return bucket.available()

    def spend(self, address: str) -> None:
        """Spend one from ``address``'s budget (it may go empty: ``allows`` then says no)."""
        rate, burst = self._limits()
        bucket = self.buckets.get(address)
        if bucket is None:
            bucket = self.buckets[address] = TokenBucket(rate, burst)
            if len(self.buckets) > self.size:
                self.buckets.popitem(last=False)
        else:
            bucket.rate, bucket.capacity = rate, burst
            self.buckets.move_to_end(address)
        bucket.take()

    def clear(self) -> None:
        self.buckets.clear()


# Failed authentications (a wrong token in a header or an `authenticate` frame) per client address.
auth_failures = AddressBuckets("AUTH_FAILURE_RATE", "AUTH_FAILURE_BURST")


def reset() -> None:
    """Forget every per-process count and budget (``notifications.testing`` does, between tests)."""
    strangers.clear()
    auth_failures.clear()
