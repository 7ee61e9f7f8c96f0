"""The model mixin that records committed writes, and the outbox they are recorded in."""

from __future__ import annotations

from typing import Any

from django.db import models, router, transaction

from .registry import site


class LiveModel(models.Model):
    """Records a change in the outbox when a save changes a tracked field.

    The model declares a django-model-utils ``FieldTracker``; the tracker is
    read before the save, because it resets once the row is written. The row
    and its outbox entry are written in one transaction, so an event is
    published exactly when the write commits. Deletes, including cascades and
    ``QuerySet.delete()``, are recorded by a ``post_delete`` receiver (see
    ``receivers``); bulk writes that send no signals are recorded with
    ``notifications.publish_changes()``.
    """

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        registration = site.get_for(type(self))
        if registration is None:
            super().save(*args, **kwargs)
            return
        from . import changes

        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            before = changes.Before.of(registration, self, kwargs.get("update_fields"), using=using)
            super().save(*args, **kwargs)
            if before.adding or before.changed:
                changes.record_save(registration, self, before, using=using)


class OutboxEntry(models.Model):
    """One change, recorded in the writer's transaction and deleted once published.

    The writing process publishes its own entries right after the commit; any
    entry left behind (the writer died, Redis was down, publishing failed) is
    published by a running server process's sweep. ``txn`` groups the entries
    of one transaction, whose changes to one object are merged into one event.
    """

    txn = models.CharField(max_length=32, db_index=True)
    created = models.FloatField(db_index=True, help_text="time.time() when recorded")
    lease_until = models.FloatField(null=True, blank=True, db_index=True)
    owner = models.CharField(max_length=32, blank=True, default="")
    kind = models.CharField(max_length=16, db_index=True)
    model = models.CharField(max_length=100, blank=True, default="")
    object_id = models.CharField(max_length=100, blank=True, default="")
    data = models.JSONField(default=dict)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="how many times it was claimed")

    class Meta:
        db_table = "drf_live_outbox"
        ordering = ["id"]
        verbose_name = "outbox entry"
        verbose_name_plural = "outbox entries"

    def __str__(self) -> str:
        return f"{self.kind} {self.model} {self.object_id}".strip()
