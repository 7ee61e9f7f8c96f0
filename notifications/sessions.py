"""Session sockets end when Django ends their session: deleted, flushed, expired, or its auth hash changed.

Django re-checks a session cookie on every request: the session must still
exist and hold the user's current session auth hash (``get_session_auth_hash()``,
an HMAC of the password hash, so a password change logs every other session
out). A socket authenticates once, so drf-live closes session sockets (4001)
when what Django would re-check changes:

- the session row is deleted (logout, ``flush()``, ``cycle_key()``, an admin
  deleting sessions, ``clearsessions``): a ``post_delete`` receiver of the
  session model, for the database-backed engines (``db``, ``cached_db``);
- the user's session auth hash changes (a password change): a socket joins a
  key named after the hash it authenticated under, and saving the user with
  another hash closes that key (``receivers._auth_hash_changed``);
- anything else (a cache or file session engine, a signed-cookie session, a
  ``QuerySet.update()``): each session socket re-validates its session every
  ``SESSION_RECHECK_INTERVAL`` seconds, as a request would.
"""

from __future__ import annotations

import hashlib
from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings

from .conf import live_settings

# Where a loaded user keeps its fields as they were read, to compute the hash it had.
LOADED = "_drf_live_loaded"


def auth_hash_key(user_pk: Any, auth_hash: str) -> str:
    """The key of the session sockets of ``user_pk`` authenticated while its session auth hash was ``auth_hash``."""
    digest = hashlib.sha256(f"{user_pk}:{auth_hash}".encode()).hexdigest()[:24]
    return f"{live_settings.PREFIX}.session-hash.{digest}"


def user_key(user: Any) -> str:
    """``auth_hash_key`` for ``user`` as it is now."""
    return auth_hash_key(user.pk, user.get_session_auth_hash())


def remember_loaded(instance: Any) -> None:
    """Keep ``instance``'s attributes as loaded (a shallow copy), to know its former hash when it is saved."""
    if instance.pk is not None and hasattr(instance, "get_session_auth_hash"):
        state = instance.__dict__
        state[LOADED] = {name: value for name, value in state.items() if name != LOADED}


def replaced_key(instance: Any) -> str | None:
    """After a save: the key of the hash ``instance`` had when loaded, if saving changed its hash."""
    loaded = instance.__dict__.get(LOADED)
    if loaded is None or not hasattr(instance, "get_session_auth_hash"):
        return None
    before = instance.__class__.__new__(instance.__class__)
    before.__dict__.update(loaded)
    old, new = before.get_session_auth_hash(), instance.get_session_auth_hash()
    return None if old == new else auth_hash_key(instance.pk, old)


def session_model() -> type | None:
    """The model of the session engine's rows, for engines that keep sessions in the database."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    get_model_class = getattr(store, "get_model_class", None)
    if get_model_class is None:
        return None
    try:
        return get_model_class()
    except (ImportError, LookupError, RuntimeError):  # django.contrib.sessions not installed
        return None


async def still_valid(session_key: str, user: Any) -> bool:
    """Whether the session ``session_key`` still authenticates ``user``, as Django checks it on a request."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    # Loads the session (gone or expired: empty) and the user (inactive: none),
    # and compares the auth hash; a stale session is flushed, as Django does.
    current = await get_user({"session": store})
    return bool(current.is_authenticated) and current.pk == user.pk
