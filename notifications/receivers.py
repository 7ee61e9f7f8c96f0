"""Signal receivers, connected in ``AppConfig.ready()`` for registered models only."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model, user_logged_out
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import m2m_changed, post_delete, post_init, post_save, pre_delete

from . import changes, sessions, touches
from .registry import Registry
from .targets import session_group, token_group, user_group

logger = logging.getLogger("notifications.receivers")

CLOSE_REVOKED = 4001


def connect(registry: Registry) -> None:
    """Connect receivers for every model registered in ``registry`` now."""
    for registration in registry:
        model = registration.model
        pre_delete.connect(_deleting, sender=model, dispatch_uid=f"drf-live-deleting-{registration.label}")
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"drf-live-delete-{registration.label}")
        for field in model._meta.concrete_fields:
            if field.many_to_one and _sets_on_delete(field):
                # SET_NULL and friends update the rows with a bulk UPDATE that sends no signal.
                pre_delete.connect(
                    _nulling(registration, field.name),
                    sender=field.related_model,
                    weak=False,
                    dispatch_uid=f"drf-live-nulling-{registration.label}-{field.name}",
                )
        for name in registration.m2m_fields:
            m2m_changed.connect(
                _m2m_changed,
                sender=_through(registration, name),
                dispatch_uid=f"drf-live-m2m-{registration.label}-{name}",
            )
    _connect_credentials()


def _sets_on_delete(field: Any) -> bool:
    """Whether deleting the related object rewrites this foreign key (SET_NULL, SET_DEFAULT, SET(...))."""
    from django.db import models

    on_delete = field.remote_field.on_delete
    return on_delete in (models.SET_NULL, models.SET_DEFAULT) or hasattr(on_delete, "lazy_sub_objs")


def _nulling(registration: Any, name: str) -> Any:
    """A pre_delete receiver recording the rows whose ``name`` the delete is about to rewrite."""

    def nulling(sender: type, instance: Any, using: str, **kwargs: Any) -> None:
        if name not in registration.get_tracked_fields():
            return
        rows = registration.model._base_manager.using(using).filter(**{name: instance})
        field = registration.model._meta.get_field(name)
        user_valued = name in registration.access_fields and field.related_model is get_user_model()
        for row in rows:
            previous = {name: registration.filter_values(row).get(name)} if name in registration.filter_fields else {}
            changes.record(
                registration,
                registration.wire_id(row),
                "update",
                changed=[name],
                previous=previous,
                current={**registration.filter_values(row), **({name: None} if previous else {})},
                revoked=[instance.pk] if user_valued else [],
                touched=touches.by_save(registration, row, [name], previous=False),
                using=using,
            )

    return nulling


def _deleting(sender: type, instance: Any, using: str, **kwargs: Any) -> None:
    from .registry import site

    registration = site.get_for(sender)
    if registration is not None and registration.touches:
        # Many-to-many rows go before the object's post_delete: read them now.
        instance.__dict__["_drf_live_touched"] = touches.by_delete(registration, instance)


def _deleted(sender: type, instance: Any, using: str, **kwargs: Any) -> None:
    from .registry import site

    registration = site.get_for(sender)
    if registration is None:
        return
    touched = instance.__dict__.pop("_drf_live_touched", None)
    if touched is None:
        touched = touches.by_delete(registration, instance) if registration.touches else []
    changes.record(
        registration,
        registration.wire_id(instance),
        "delete",
        current=registration.filter_values(instance),
        touched=touched,
        using=using,
    )


def _m2m_changed(
    sender: type,
    instance: Any,
    action: str,
    reverse: bool,
    model: type,
    pk_set: set[Any] | None,
    using: str,
    **kwargs: Any,
) -> None:
    from .registry import site

    if action not in {"post_add", "post_remove", "pre_clear", "post_clear"}:
        return
    if action in {"post_add", "post_remove"} and not pk_set:
        # Django sends post_add even when every object was in the set already
        # (it drops them from pk_set first): nothing changed, so nothing is sent.
        return
    registration = site.get_for(model if reverse else type(instance))
    if registration is None:
        return
    names = [name for name in registration.m2m_fields if _through(registration, name) is sender]
    if not names:
        return
    cleared: dict[Any, list[Any]] = instance.__dict__.setdefault("_drf_live_cleared", {})
    if not reverse:
        # project.members.remove(user): the project changed; the users in
        # pk_set (or all of them, for a clear) may have lost access.
        if action == "pre_clear":
            cleared[sender] = list(getattr(instance, names[0]).values_list("pk", flat=True))
            return
        pks = cleared.pop(sender, []) if action == "post_clear" else list(pk_set or ())
        revoked = pks if action != "post_add" and _grants_access(registration, names) else []
        changes.record(
            registration,
            registration.wire_id(instance),
            "update",
            changed=names,
            revoked=revoked,
            touched=[wire for name in names for wire in touches.by_m2m(registration, instance, name, pks)],
            using=using,
        )
        return
    # user.projects.remove(project): the projects in pk_set (or all, for a clear) changed.
    manager = registration.model._default_manager.using(using)
    if action == "pre_clear":
        cleared[sender] = list(manager.filter(**{names[0]: instance}).values_list("pk", flat=True))
        return
    pks = cleared.pop(sender, []) if action == "post_clear" else list(pk_set or ())
    revoked = [instance.pk] if action != "post_add" and _grants_access(registration, names) else []
    for obj in manager.filter(pk__in=pks):
        changes.record(
            registration,
            registration.wire_id(obj),
            "update",
            changed=names,
            revoked=revoked,
            touched=[wire for name in names for wire in touches.by_m2m(registration, obj, name, [instance.pk])],
            using=using,
        )


def _grants_access(registration: Any, names: list[str]) -> bool:
    """Whether these many-to-many fields hold users who see the object because of them."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    return any(
        name in registration.access_fields and registration.model._meta.get_field(name).related_model is user_model
        for name in names
    )


def _through(registration: Any, name: str) -> type:
    return registration.model._meta.get_field(name).remote_field.through


# Credentials: a revoked token, a deactivated user, a logout, a deleted session or a
# changed session auth hash (password) closes the sockets that relied on them (4001).

_credentials_connected = False


def _connect_credentials() -> None:
    global _credentials_connected
    if _credentials_connected:
        return
    from django.apps import apps
    from django.conf import settings

    _credentials_connected = True
    user_logged_out.connect(_logged_out, dispatch_uid="drf-live-logout")
    post_save.connect(_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="drf-live-user-saved")
    pre_delete.connect(_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="drf-live-user-deleted")
    if apps.is_installed("rest_framework.authtoken"):
        post_delete.connect(_token_deleted, sender="authtoken.Token", dispatch_uid="drf-live-token-deleted")
    # Sessions (notifications/sessions.py): the rows of database-backed engines, and the auth hash.
    session_model = sessions.session_model()
    if session_model is not None:
        post_delete.connect(_session_deleted, sender=session_model, dispatch_uid="drf-live-session-deleted")
    post_init.connect(_user_loaded, sender=settings.AUTH_USER_MODEL, dispatch_uid="drf-live-user-loaded")
    post_save.connect(_auth_hash_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="drf-live-user-auth-hash")


def _close_on_commit(key: str, code: int = CLOSE_REVOKED, using: str | None = None) -> None:
    """Close the sockets attached under ``key`` with ``code`` once the current transaction commits.

    Recorded in the outbox like an event, so that a writer that dies right
    after its commit still closes them (a sweeping process sends it).
    """
    changes.record_control("close", {"to": [key], "code": code}, using=using or DEFAULT_DB_ALIAS)


def _user_saved(sender: type, instance: Any, **kwargs: Any) -> None:
    if kwargs.get("signal") is pre_delete or not instance.is_active:
        _close_on_commit(user_group(instance.pk), using=kwargs.get("using"))


def _token_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    _close_on_commit(token_group(instance.key), using=kwargs.get("using"))


def _logged_out(sender: type, request: Any, user: Any, **kwargs: Any) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        _close_on_commit(session_group(session_key))


def _session_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    _close_on_commit(session_group(instance.session_key))


def _user_loaded(sender: type, instance: Any, **kwargs: Any) -> None:
    sessions.remember_loaded(instance)


def _auth_hash_changed(sender: type, instance: Any, **kwargs: Any) -> None:
    # A password change (set_password() and save()): the sessions authenticated
    # under the former hash are no longer valid, as Django's get_user() finds.
    key = sessions.replaced_key(instance)
    if key is not None:
        _close_on_commit(key)
    sessions.remember_loaded(instance)
