"""Waiting for the relay: every committed change published before a test reads what arrived."""

from __future__ import annotations

import asyncio


def flush(timeout: float = 10.0) -> None:
    """Wait until the relay has published every transaction committed so far (from sync code)."""
    from ..relay import relay

    if not relay.flush(timeout):
        raise AssertionError(f"The drf-live relay did not finish within {timeout} s.")


async def published(timeout: float = 10.0) -> None:
    """Wait until the relay has published every transaction committed so far (from async code)."""
    await asyncio.to_thread(flush, timeout)
