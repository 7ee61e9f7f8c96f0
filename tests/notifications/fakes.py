"""Stores that fail as a Redis that is down or busy does, for the relay's failure tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from notifications.streams import StoreBusy


class Unreachable:
    """A store whose Redis cannot be reached."""

    def subscribed(self, streams: Iterable[str]) -> set[str]:
        return set(streams)  # not known: counted in, as RedisStreamStore does when a shard is down

    def claim(self, stream: str) -> Any:
        raise ConnectionError("Redis is down")

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        raise ConnectionError("Redis is down")

    def rotate_all(self) -> None:
        raise ConnectionError("Redis is down")


class Busy:
    """A store in which another process holds every stream for longer than a claim may wait."""

    def subscribed(self, streams: Iterable[str]) -> set[str]:
        return set(streams)

    def claim(self, stream: str) -> Any:
        raise StoreBusy(stream)
