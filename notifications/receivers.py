"""Signal receivers, connected in ``AppConfig.ready()`` for registered models only."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import user_logged_out
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from . import outbox
from .publisher import publisher
from .registry import Registry
from .targets import session_group, token_group, user_group

logger = logging.getLogger("notifications.receivers")

CLOSE_REVOKED = 4001


def connect(registry: Registry) -> None:
    """Connect receivers for every model registered in ``registry`` now."""
    for registration in registry:
        model = registration.model
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"drf-live-delete-{registration.label}")
        for name in registration.m2m_fields:
            m2m_changed.connect(
                _m2m_changed, sender=_through(registration, name), dispatch_uid=f"drf-live-m2m-{registration.label}-{name}"
            )
    _connect_credentials()


def _deleted(sender: type, instance: Any, using: str, **kwargs: Any) -> None:
    from .registry import site

    registration = site.get_for(sender)
    if registration is not None:
        outbox.record(registration, instance, "delete", [], using=using)


def _m2m_changed(
    sender: type, instance: Any, action: str, reverse: bool, model: type, pk_set: set[Any] | None, using: str, **kwargs: Any
) -> None:
    from .registry import site

    if action not in {"post_add", "post_remove", "pre_clear", "post_clear"}:
        return
    if not reverse:
        if action == "pre_clear":
            return
        registration = site.get_for(type(instance))
        if registration is None:
            return
        names = [name for name in registration.m2m_fields if _through(registration, name) is sender]
        if names:
            outbox.record(registration, instance, "update", names, using=using)
        return
    # Reverse side (user.projects.add(project)): the changed objects are in pk_set.
    registration = site.get_for(model)
    if registration is None:
        return
    names = [name for name in registration.m2m_fields if _through(registration, name) is sender]
    manager = registration.model._default_manager.using(using)
    if action == "pre_clear":
        # The set is about to be emptied: remember which objects it held.
        held = manager.filter(**{f"{names[0]}": instance}).values_list("pk", flat=True) if names else []
        instance.__dict__.setdefault("_drf_live_cleared", {})[sender] = list(held)
        return
    if action == "post_clear":
        pks = instance.__dict__.get("_drf_live_cleared", {}).pop(sender, [])
    else:
        pks = list(pk_set or ())
    for obj in manager.filter(pk__in=pks):
        outbox.record(registration, obj, "update", names, using=using)


def _through(registration: Any, name: str) -> type:
    return registration.model._meta.get_field(name).remote_field.through


# Credentials: a revoked token, a deactivated user or a logout closes the sockets
# that relied on them (close code 4001).

_credentials_connected = False


def _connect_credentials() -> None:
    global _credentials_connected
    if _credentials_connected:
        return
    from django.conf import settings
    from django.apps import apps

    _credentials_connected = True
    user_logged_out.connect(_logged_out, dispatch_uid="drf-live-logout")
    post_save.connect(_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="drf-live-user-saved")
    pre_delete.connect(_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="drf-live-user-deleted")
    if apps.is_installed("rest_framework.authtoken"):
        post_delete.connect(_token_deleted, sender="authtoken.Token", dispatch_uid="drf-live-token-deleted")


def close_group(group: str, code: int = CLOSE_REVOKED) -> None:
    """Close every socket in ``group`` with ``code`` (from sync code, after commit)."""
    message = {"type": "drf_live.close", "code": code}
    publisher.submit(lambda: publisher.send_to_group(group, message))


def _on_commit(group: str) -> None:
    from django.db import transaction

    transaction.on_commit(lambda: close_group(group))


def _user_saved(sender: type, instance: Any, **kwargs: Any) -> None:
    if kwargs.get("signal") is pre_delete or not instance.is_active:
        _on_commit(user_group(instance.pk))


def _token_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    _on_commit(token_group(instance.key))


def _logged_out(sender: type, request: Any, user: Any, **kwargs: Any) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        _on_commit(session_group(session_key))
