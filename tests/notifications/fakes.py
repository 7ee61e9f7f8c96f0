"""Stores that fail as a Redis that is down or busy does, for the relay's failure tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from notifications.streams import Claims, StoreBusy


class Unreachable:
    """A store whose Redis cannot be reached."""

    def claim_all(self, streams: Iterable[str]) -> Claims:
        return Claims({}, frozenset(streams))  # not known: left to claim, as RedisStreamStore does when a shard is down

    def claim(self, stream: str) -> Any:
        raise ConnectionError("Redis is down")

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        raise ConnectionError("Redis is down")

    def rotate_all(self) -> None:
        raise ConnectionError("Redis is down")


class Busy:
    """A store in which another process holds every stream for longer than a claim may wait."""

    def claim_all(self, streams: Iterable[str]) -> Claims:
        return Claims({}, frozenset(streams))  # held elsewhere

    def claim(self, stream: str) -> Any:
        raise StoreBusy(stream)
