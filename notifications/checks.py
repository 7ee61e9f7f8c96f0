"""System checks: configuration mistakes found at start-up, not at the first event."""

from __future__ import annotations

from typing import Any

from django.core import checks

from .registry import site


@checks.register("drf_live")
def check_registrations(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from .models import LiveModel

    messages: list[checks.CheckMessage] = []
    for registration in site:
        model = registration.model
        label = model._meta.label
        if not issubclass(model, LiveModel):
            messages.append(
                checks.Error(
                    f"{label} is registered for notifications but does not inherit notifications.models.LiveModel.",
                    hint="Add LiveModel to its bases so that its saves publish events.",
                    obj=model,
                    id="drf_live.E001",
                )
            )
        if registration.get_tracker() is None and registration.tracked_fields is None:
            messages.append(
                checks.Error(
                    f"{label} is registered for notifications but has no FieldTracker.",
                    hint="Declare `tracker = FieldTracker(fields=[...])` with the fields whose change is pushed.",
                    obj=model,
                    id="drf_live.E002",
                )
            )
        for name in registration.m2m_fields:
            try:
                field = model._meta.get_field(name)
            except Exception:
                field = None
            if field is None or not field.many_to_many:
                messages.append(
                    checks.Error(
                        f"{label}: m2m_fields names {name!r}, which is not a many-to-many field.",
                        obj=model,
                        id="drf_live.E003",
                    )
                )
    return messages
