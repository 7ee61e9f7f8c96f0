"""Exceptions of drf-live: of its Python API, and ``RequestError`` for a request answered with an error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frames import ErrorCode


class AlreadyRegistered(Exception):
    """The model is registered already; unregister it first to replace it."""


class NotRegistered(Exception):
    """The model is not registered for notifications."""


class Unavailable(Exception):
    """The event store or channel layer cannot serve the request right now."""


class RequestError(Exception):
    """A socket request that gets an ``ERROR`` reply with ``code`` (see ``frames.ErrorCode``).

    Custom actions may raise it, as may DRF's own exceptions (``ValidationError``,
    ``PermissionDenied``, ``NotFound``), which become ``invalid``, ``not_allowed``
    and ``not_found``.
    """

    def __init__(self, code: ErrorCode, detail: str | None = None, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.extra = extra
