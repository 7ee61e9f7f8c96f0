"""What a socket subscribes to (a target), and the one function that names groups."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .conf import live_settings

# channels.layers.BaseChannelLayer's rule for group names.
_VALID = re.compile(r"^[a-zA-Z\d\-_.]+$")
_UNSAFE = re.compile(r"[^a-zA-Z\d\-_]")
MAX_GROUP_NAME = 99


@dataclass(frozen=True)
class Target:
    """One object (``id``) or one filtered collection (``filter``) of a model."""

    model: str
    id: str | None = None
    filter: tuple[tuple[str, str], ...] | None = None

    @classmethod
    def collection(cls, model: str, filter: dict[str, str]) -> Target:
        return cls(model, filter=tuple(sorted(filter.items())))

    @property
    def is_collection(self) -> bool:
        return self.filter is not None

    def meta(self) -> dict[str, Any]:
        """The ``meta`` keys that name this target on the wire."""
        if self.filter is not None:
            return {"model": self.model, "filter": dict(self.filter)}
        return {"model": self.model, "id": self.id}

    @property
    def stream(self) -> str:
        """The name of this target's event stream (seq counter and history)."""
        if self.filter == ():
            name = f"{self.model}.all"  # the unfiltered collection: every object the user may see
        elif self.filter is not None:
            body = ".".join(f"{field}-{_safe(value)}" for field, value in self.filter)
            name = f"{self.model}.c.{body}"
        else:
            name = f"{self.model}.o.{_safe(str(self.id))}"
        return _checked(_bounded(f"{live_settings.PREFIX}.{name}"))


#: The user key of anonymous sockets (``ALLOW_ANONYMOUS``).
ANONYMOUS = "-"


def user_key(user: Any) -> str:
    """How the stream store names a subscriber: the user's primary key, or ``ANONYMOUS``."""
    return str(user.pk) if user is not None and user.is_authenticated else ANONYMOUS


def user_group(user_pk: Any) -> str:
    """Every socket of one user joins this group, so credential changes reach it."""
    return _checked(_bounded(f"{live_settings.PREFIX}.user.{_safe(str(user_pk))}"))


def token_group(key: str) -> str:
    """Every socket authenticated by one API token joins this group."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return _checked(_bounded(f"{live_settings.PREFIX}.token.{digest}"))


def session_group(session_key: str) -> str:
    """Every socket authenticated by one session joins this group (logout closes them)."""
    digest = hashlib.sha256(session_key.encode()).hexdigest()[:24]
    return _checked(_bounded(f"{live_settings.PREFIX}.session.{digest}"))


def _safe(value: str) -> str:
    """``value`` if it is already a valid name part, else a readable but unique stand-in.

    Stand-ins always contain ``_`` and values kept as they are never do, so a
    value cannot spell another value's stand-in and share its group.
    """
    if value and not _UNSAFE.search(value) and "_" not in value and len(value) <= 40:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{_UNSAFE.sub('', value)[:16]}_{digest}"


def _bounded(name: str, reserve: int = 0) -> str:
    """Shorten ``name`` (keeping it unique) so that ``reserve`` more characters still fit."""
    limit = MAX_GROUP_NAME - reserve
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:20]
    return f"{name[: limit - 21]}_{digest}"


def _checked(name: str) -> str:
    if len(name) > MAX_GROUP_NAME or not _VALID.match(name):
        raise ValueError(f"Invalid group name {name!r}: check the DRF_LIVE PREFIX setting.")
    return name
