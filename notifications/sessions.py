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

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.utils.crypto import constant_time_compare

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


def session_user(session: Any) -> Any | None:
    """The user ``session`` authenticates, as Django's ``get_user()`` decides it, or None.

    Like Django: the session names a user and one of ``AUTHENTICATION_BACKENDS``,
    the backend returns the user (an inactive one: none), and the session holds
    the user's session auth hash, computed with ``SECRET_KEY`` or one of
    ``SECRET_KEY_FALLBACKS``. Unlike Django (and channels' ``get_user()``), it
    changes nothing: a socket cannot hand the browser a new cookie, so it must
    not flush a session it finds stale (Django flushes it on the next request)
    nor cycle the key of one made with a fallback secret (which would log the
    browser out; channels' ``get_user()`` flushes it).
    """
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)
    if user is None or not hasattr(user, "get_session_auth_hash"):
        return user
    stored = session.get(HASH_SESSION_KEY)
    if not stored:
        return None
    fallbacks = getattr(user, "get_session_auth_fallback_hash", lambda: ())()
    if any(constant_time_compare(stored, each) for each in (user.get_session_auth_hash(), *fallbacks)):
        return user
    return None


@database_sync_to_async
def still_valid(session_key: str, user: Any) -> bool:
    """Whether the session ``session_key`` still authenticates ``user`` (gone or expired: it does not)."""
    current = session_user(import_module(settings.SESSION_ENGINE).SessionStore(session_key))
    return current is not None and current.pk == user.pk
