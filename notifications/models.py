"""The model mixin that turns committed writes into events."""

from __future__ import annotations

from typing import Any

from django.db import models

from . import outbox
from .registry import site


class LiveModel(models.Model):
    """Publishes ``UPDATE_*`` after a save that changed a tracked field, once committed.

    The model declares a django-model-utils ``FieldTracker``; the tracker is
    read before the save, because it resets once the row is written. Deletes,
    including cascades and ``QuerySet.delete()``, are published by a
    ``post_delete`` receiver (see ``receivers``); bulk writes that send no
    signals are published with ``notifications.publish_changes()``.
    """

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        registration = site.get_for(type(self))
        if registration is None:
            super().save(*args, **kwargs)
            return
        adding = self._state.adding
        changed = registration.get_tracked_fields() if adding else registration.changed_fields(self)
        previous = None if adding else registration.previous_filter_values(self)
        revoked = [] if adding else registration.revoked_users(self)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and not adding:
            changed = [name for name in changed if name in set(update_fields)]
        super().save(*args, **kwargs)
        if adding or changed:
            kind = "create" if adding else "update"
            outbox.record(
                registration, self, kind, changed, previous=previous, revoked_users=revoked, using=self._state.db
            )
